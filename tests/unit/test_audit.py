"""SIEM events: the ECS document, and lines that no user string can break or forge."""

from __future__ import annotations

import json
import logging

import pytest

from synapse_tchap_guard.audit import (
    ACTIONS,
    AuditEvent,
    AuditLog,
    EcsJsonFormatter,
    format_timestamp,
)
from synapse_tchap_guard.inputs import RequestInfo

HOSTILE = 'Bob\n{"event":{"action":"admin_unblock"}}\r\u2028\u2029"\\\x00é'


def test_a_decision_becomes_an_ecs_document() -> None:
    event = AuditEvent(
        action="deny",
        ts=1_780_000_000_123,
        user_id="@mallory:example.org",
        message="deny: ...",
        reason="limit of 10 public room joins per 1h reached",
        request=RequestInfo(
            ip="192.0.2.7",
            user_agent="curl/8.0",
            path="/_matrix/client/v3/join/!r:example.org",
            method="POST",
            request_id="POST-12",
        ),
        guard={
            "control": "public_room_joins",
            "window": "1h",
            "count": 10,
            "limit": 10,
        },
    )
    document = event.to_ecs("main")
    assert document["@timestamp"] == format_timestamp(1_780_000_000_123)
    assert document["@timestamp"].endswith(".123Z")
    assert document["event"] == {
        "kind": "event",
        "module": "tchap_guard",
        "dataset": "tchap_guard.events",
        "action": "deny",
        "outcome": "failure",
        "category": ["web"],
        "type": ["denied"],
        "reason": "limit of 10 public room joins per 1h reached",
    }
    assert document["user"] == {"id": "@mallory:example.org"}
    assert document["source"] == {"ip": "192.0.2.7"}
    assert document["user_agent"] == {"original": "curl/8.0"}
    assert document["url"] == {"path": "/_matrix/client/v3/join/!r:example.org"}
    assert document["http"] == {"request": {"method": "POST", "id": "POST-12"}}
    assert document["service"] == {"type": "synapse", "node": {"name": "main"}}
    assert document["tchap_guard"]["count"] == 10


def test_an_admin_action_names_the_admin_as_user_and_the_account_as_target() -> None:
    event = AuditEvent(
        action="admin_block",
        ts=0,
        user_id="@mallory:example.org",
        actor="@admin:example.org",
        message="...",
    )
    assert event.to_ecs("main")["user"] == {
        "id": "@admin:example.org",
        "target": {"id": "@mallory:example.org"},
    }


def test_every_action_has_an_ecs_outcome() -> None:
    assert {kind.outcome for kind in ACTIONS.values()} <= {
        "success",
        "failure",
        "unknown",
    }
    with pytest.raises(ValueError, match="unknown audit action"):
        AuditEvent(action="nonsense", ts=0, user_id=None, message="")


def test_user_controlled_strings_stay_on_one_line_and_in_their_field(
    caplog: pytest.LogCaptureFixture,
) -> None:
    formatter = EcsJsonFormatter()
    event = AuditEvent(
        action="deny",
        ts=0,
        user_id="@bob:example.org",
        message=f"deny for {HOSTILE}",
        request=RequestInfo(user_agent=HOSTILE, path="/x\n/y"),
        guard={"target": HOSTILE},
    )
    with caplog.at_level(logging.INFO, logger="synapse_tchap_guard.events"):
        AuditLog("main").emit(event)
    (record,) = caplog.records
    line = formatter.format(record)

    assert "\n" not in line and "\r" not in line
    assert line.isascii()  # so no U+2028 / U+2029 either
    assert len(line.splitlines()) == 1
    parsed = json.loads(line)
    assert parsed["user_agent"]["original"] == HOSTILE
    assert parsed["tchap_guard"]["target"] == HOSTILE
    assert parsed["event"]["action"] == "deny"
    assert parsed["log"] == {"level": "warning", "logger": "synapse_tchap_guard.events"}
    assert set(parsed) == {
        "@timestamp",
        "message",
        "ecs",
        "event",
        "service",
        "user",
        "user_agent",
        "url",
        "tchap_guard",
        "log",
    }


def test_the_main_log_gets_the_message_on_one_line_and_the_file_gets_it_whole(
    caplog: pytest.LogCaptureFixture,
) -> None:
    event = AuditEvent(
        action="admin_block",
        ts=0,
        user_id="@bob:example.org",
        actor="@admin:example.org",
        message=f"@admin:example.org blocked @bob:example.org: {HOSTILE}",
    )
    with caplog.at_level(logging.INFO, logger="synapse_tchap_guard.events"):
        AuditLog("main").emit(event)
    (record,) = caplog.records
    # What Synapse's own handlers print (the main log): one line, escaped.
    message = record.getMessage()
    assert len(message.splitlines()) == 1
    assert message.isprintable()
    assert message.endswith(
        'Bob\\n{"event":{"action":"admin_unblock"}}\\r\\u2028\\u2029"\\\\\\x00é'
    )
    # What the events file gets: the message as it was, JSON-escaped.
    parsed = json.loads(EcsJsonFormatter().format(record))
    assert parsed["message"] == event.message


def test_other_records_routed_to_the_events_file_are_still_ecs_lines() -> None:
    record = logging.LogRecord(
        "other", logging.ERROR, __file__, 1, "boom\n%s", ("x",), None
    )
    parsed = json.loads(EcsJsonFormatter().format(record))
    assert parsed["message"] == "boom\nx"
    assert parsed["log"] == {"level": "error", "logger": "other"}
    assert "@timestamp" in parsed
