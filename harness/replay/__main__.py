"""`python -m harness.replay`: see harness/replay/cli.py."""

import sys

from harness.replay.cli import main

sys.exit(main())
