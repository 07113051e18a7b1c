"""The README's main command, at a small scale: the June 2026 attack replayed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.replay.cli import main

SMALL = {
    "users": 320,  # more than the directory's free budget of 300
    "forums": 12,  # more than the 10 joins an hour
    "messages": 10,
    "media": 13,  # 10 forums hold more than the 120 downloads a minute
    "private-rooms": 4,
    "ordinary-users": 6,
}


def test_the_attacker_is_held_far_below_the_unguarded_run_and_colleagues_never_notice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = [f"--{name}={value}" for name, value in SMALL.items()]
    assert main([*flags, "--json", str(tmp_path / "report.json")]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    without, with_ = report["without_guard"], report["with_guard"]

    # Unguarded, one account takes everything, and nobody refuses it anything.
    took = without["attacker"]
    assert took["rooms_joined"] == 12
    assert took["media_files"] == report["server"]["attachments"] == 12 * 13
    assert took["profiles_enumerated"] == 319
    assert took["refused"] == 0 and took["blocked_after_s"] is None

    # Guarded: held at each limit of example_homeserver.yaml.
    held = with_["attacker"]
    assert held["rooms_joined"] == 10
    assert held["media_files"] <= 120
    assert held["media_bytes"] < took["media_bytes"]
    assert held["profiles_enumerated"] <= 300
    assert held["messages_read"] < took["messages_read"]

    # Colleagues working at the same time never notice the guard.
    for run in (without, with_):
        assert run["ordinary_users"]["requests"] > 6 * 10
        assert run["ordinary_users"]["refusals"] == []

    actions = [event["event"]["action"] for event in with_["siem_events"]]
    assert "deny" in actions
    output = capsys.readouterr().out
    assert "What the SIEM received, with the guard" in output
