"""The supported Synapse versions: one pin in setup.cfg, the same checked at start-up."""

from __future__ import annotations

import configparser
from pathlib import Path

from packaging.requirements import Requirement

from synapse_tchap_guard._synapse_internals import SUPPORTED_SYNAPSE

SETUP_CFG = Path(__file__).resolve().parents[2] / "setup.cfg"


def test_setup_cfg_pins_the_versions_checked_at_start_up() -> None:
    parser = configparser.ConfigParser()
    parser.read(SETUP_CFG)
    requirements = [
        Requirement(line)
        for line in parser["options"]["install_requires"].splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    (synapse,) = [r for r in requirements if r.name == "matrix-synapse"]
    assert synapse.specifier == SUPPORTED_SYNAPSE
