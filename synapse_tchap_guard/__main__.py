"""`python -m synapse_tchap_guard`: the admin command line (`admin_cli`)."""

from synapse_tchap_guard.admin_cli import run

run()
