"""The README's main command, at a small scale: the June 2026 attack replayed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.homeserver import Homeserver
from harness.replay.cli import main

SMALL = {
    "users": 400,
    "forums": 14,  # more than the 10 public rooms an hour
    "messages": 300,
    "media": 160,  # more than the 120 downloads a minute
    "private-rooms": 4,
    "ordinary-users": 7,  # the first of them, the heavy reader
    # A script that keeps asking after being told: at this size, what it asks again
    # (the same few rooms) reaches the join threshold only after a few more passes.
    "retries": 8,
}


def test_the_attacker_is_held_by_every_route_while_element_users_never_notice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = [f"--{name}={value}" for name, value in SMALL.items()]
    assert main([*flags, "--json", str(tmp_path / "report.json")]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    server = report["server"]
    without, with_ = report["runs"]
    guard = Homeserver.example_guard()

    # Unguarded, one account takes everything by every route, and nothing says so.
    took = without["attacker"]
    within_reach = server["public_rooms"] - server["public_rooms_the_account_was_in"]
    assert took["rooms_reached"] == within_reach
    assert took["rooms"]["read without joining"] > 0
    assert took["rooms"]["joined through the space"] > 0
    assert took["people_learned"] >= 0.95 * (server["people"] - 1)
    assert took["messages_read"] >= server["messages"]
    assert took["media_files"] == server["attachments"]
    assert took["refused"] == 0 and took["blocked_after_s"] is None

    # Guarded: held by each budget of example_homeserver.yaml, whatever the route.
    held = with_["attacker"]
    rooms_an_hour = guard["public_room_joins"]["limits"][0]["max"]
    people = guard["directory"]["free"]["max_profiles"]
    history = guard["message_history"]["limits"][0]["max"]
    assert held["rooms_reached"] <= rooms_an_hour
    assert held["people_learned"] <= people + server["largest_room"]
    assert (
        held["messages_read"] <= history + guard["message_history"]["max_per_request"]
    )
    assert held["media_files"] <= guard["media_downloads"]["limits"][0]["max"]
    assert held["media_bytes"] < took["media_bytes"]
    assert held["refused"] > 0

    # Element users working at the same time never notice the guard.
    for run in (without, with_):
        ordinary = run["ordinary_users"]
        assert ordinary["requests"] > 6 * 200
        assert ordinary["refusals"] == []
        assert ordinary["blocked"] == 0
        # The heavy reader on two devices: refused perhaps, blocked never.
        heavy = run["heavy_reader"]
        assert heavy["requests"] > 50 and not heavy["blocked"], heavy

    actions = [event["event"]["action"] for event in with_["siem_events"]]
    assert {"deny", "block", "login_refused"} <= set(actions)
    assert (
        with_["metrics"][
            'synapse_tchap_guard_blocked_accounts{server_name="localhost"}'
        ]
        == 1
    )
    # The phished password does not lift the directory budget: the step-up wants a
    # code mailed to the owner, who hears of it, and of the block.
    tried = with_["step_up_with_the_password"]
    assert tried["offered"] == ["fr.gouv.tchap.guard.email_code"]
    assert tried["with_password"].startswith("401 M_FORBIDDEN")
    assert tried["code_sent_to"] and not tried["stepped_up"]
    assert tried["with_a_guess"].startswith("401 M_FORBIDDEN")
    received = with_["owner_received"]
    subjects = [mail["subject"] for mail in received["inbox"]]
    assert "Your code to confirm it is you on localhost" in subjects
    assert any("is blocked" in subject for subject in subjects)
    assert any("is blocked" in notice for notice in received["server_notices"])
    assert {"step_up_failed", "step_up_code_sent", "owner_notified"} <= set(actions)

    output = capsys.readouterr().out
    assert "What the SIEM received, with the guard" in output
    assert "The step-up, tried by the attacker with the phished password" in output
    assert "What the owner received, with the guard" in output
