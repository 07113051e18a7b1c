"""The supported Synapse versions: one pin in setup.cfg, the same checked at start-up."""

from __future__ import annotations

import configparser
import importlib.metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from synapse_tchap_guard._synapse_internals import (
    SUPPORTED_SYNAPSE,
    UnsupportedSynapse,
    check_internals,
)

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


def test_a_synapse_without_an_internal_the_guard_needs_is_refused_by_name() -> None:
    class WithoutHandlers:
        """A ModuleApi whose private handlers moved away in some future Synapse."""

    with pytest.raises(UnsupportedSynapse) as caught:
        check_internals(WithoutHandlers())  # type: ignore[arg-type]
    message = str(caught.value)
    assert "cannot find these Synapse internals" in message
    assert "ModuleApi._device_handler.delete_all_devices_for_user" in message
    assert "ModuleApi._auth_handler.delete_access_tokens_for_user" in message
    assert "ModuleApi._store.db_pool.runInteraction" in message


def test_an_unsupported_synapse_version_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "1.170.0")
    with pytest.raises(
        UnsupportedSynapse, match=r"supports Synapse .*this is 1\.170\.0"
    ):
        check_internals(object())  # type: ignore[arg-type]
