"""The supported Synapse versions: the range of setup.cfg's test extra, checked at
start-up; Synapse itself is never a requirement of the module."""

from __future__ import annotations

import configparser
import importlib.metadata
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.version import Version
from prometheus_client import REGISTRY

from synapse_tchap_guard import _synapse_internals as internals
from synapse_tchap_guard._synapse_internals import (
    SUPPORTED_SYNAPSE,
    UnsupportedSynapse,
    check_internals,
    check_version,
)
from synapse_tchap_guard.audit import AuditLog
from tests.unit.guard import SERVER, Guard

SETUP_CFG = Path(__file__).resolve().parents[2] / "setup.cfg"


def requirements(text: str) -> list[Requirement]:
    lines = (line.strip() for line in text.splitlines())
    return [Requirement(line) for line in lines if line and not line.startswith("#")]


def test_synapse_is_tested_over_the_range_checked_at_start_up_and_never_required() -> (
    None
):
    parser = configparser.ConfigParser()
    parser.read(SETUP_CFG)
    installed = requirements(parser["options"]["install_requires"])
    assert "matrix-synapse" not in [r.name for r in installed]
    tested = requirements(parser["options.extras_require"]["test"])
    (synapse,) = [r for r in tested if r.name == "matrix-synapse"]
    assert synapse.specifier == SUPPORTED_SYNAPSE


def test_the_synapse_under_test_is_a_supported_one() -> None:
    assert importlib.metadata.version("matrix-synapse") in SUPPORTED_SYNAPSE


def test_a_synapse_without_an_internal_the_guard_needs_is_refused_by_name() -> None:
    class WithoutHandlers:
        """A ModuleApi whose private handlers moved away in some future Synapse."""

    with pytest.raises(UnsupportedSynapse) as caught:
        check_internals(WithoutHandlers())  # type: ignore[arg-type]
    message = str(caught.value)
    assert "cannot find these Synapse internals" in message
    assert "ModuleApi._device_handler.delete_devices" in message
    assert "ModuleApi._store.get_devices_by_user" in message
    assert "ModuleApi._store.db_pool.runInteraction" in message
    assert "ModuleApi._auth_handler.check_ui_auth" in message
    assert "ModuleApi._auth_handler._get_available_ui_auth_types" in message
    assert "ModuleApi._hs.get_server_notices_manager" in message
    assert "ModuleApi._hs.config.email.email_notif_from" in message
    assert "ModuleApi._hs.config.servernotices.server_notices_mxid" in message
    assert "ModuleApi._hs.config.registration.enable_3pid_changes" in message


def test_an_unsupported_synapse_version_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "1.100.0")
    with pytest.raises(
        UnsupportedSynapse,
        match=r"supports Synapse .*this is 1\.100\.0: upgrade Synapse",
    ):
        check_internals(object())  # type: ignore[arg-type]


def test_a_transaction_without_its_cursor_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class BareTransaction:
        """A LoggingTransaction that no longer keeps its DB-API cursor in `txn`."""

        __slots__ = ("name",)

    monkeypatch.setattr(internals, "LoggingTransaction", BareTransaction)
    with pytest.raises(UnsupportedSynapse, match=r"LoggingTransaction\.txn"):
        check_internals(object())  # type: ignore[arg-type]


def test_an_older_synapse_is_refused_and_a_newer_one_runs_with_a_warning() -> None:
    with pytest.raises(UnsupportedSynapse, match=r"this is 1\.141\.0: upgrade Synapse"):
        check_version(Version("1.141.0"))
    assert check_version(Version("1.142.0")) is None
    assert check_version(Version("1.163.2")) is None
    warning = check_version(Version("1.164.0"))
    assert warning is not None
    assert (
        "Synapse 1.164.0 is newer than the releases this module was tested" in warning
    )


def test_a_newer_synapse_with_every_internal_starts_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A release of Synapse after the tested range: the guard starts on it, and the
    log, the `started` event and the metrics say it is untested."""
    monkeypatch.setattr(internals, "synapse_version", lambda: Version("1.164.0"))
    started: list[Any] = []
    monkeypatch.setattr(
        AuditLog, "emit", lambda self, event: started.append(event), raising=True
    )
    Guard({})
    (event,) = [e for e in started if e.action == "started"]
    assert event.guard["synapse_tested"] is False
    assert any("1.164.0 is newer" in warning for warning in event.guard["warnings"])
    assert "Synapse 1.164.0 is newer than the releases" in caplog.text
    sample = REGISTRY.get_sample_value(
        "synapse_tchap_guard_synapse_info",
        {"server_name": SERVER, "version": "1.164.0", "tested": "false"},
    )
    assert sample == 1
