"""The events file a SIEM tails, parsed back from a real Synapse and checked field by field."""

from __future__ import annotations

import json
import re
from typing import Any

from harness.homeserver import Account, Homeserver, wait_until

GUARD = {
    "public_room_joins": {
        "limits": [{"window": "1h", "max": 1}],
        "block_at": {"window": "1h", "max": 3},
    },
    "blocking": {"duration": "2h", "end_sessions": True},
}
# Quotes, backslashes, a fake JSON field, U+2028 and non-ASCII, all in a user agent.
HOSTILE_AGENT = (
    'Scraper/1.0 "},"event":{"action":"admin_unblock"},"x":{"y":"\\ \u2028 é'
)
# Synapse reads the header as ASCII, replacing every other byte with U+FFFD.
AGENT_AS_SEEN = HOSTILE_AGENT.encode("utf-8").decode("ascii", errors="replace")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def hostile_join(user: Account, room_id: str) -> Any:
    return user.request(
        "POST",
        f"/_matrix/client/v3/join/{room_id}",
        json={},
        headers={"User-Agent": HOSTILE_AGENT.encode("utf-8")},
    )


def check_common(event: dict[str, Any], action: str, outcome: str) -> None:
    assert TIMESTAMP.match(event["@timestamp"]), event["@timestamp"]
    assert event["ecs"] == {"version": "8.11.0"}
    assert event["event"]["action"] == action
    assert event["event"]["outcome"] == outcome
    assert event["event"]["module"] == "tchap_guard"
    assert event["event"]["dataset"] == "tchap_guard.events"
    assert event["log"]["logger"] == "synapse_tchap_guard.events"
    assert event["service"] == {"type": "synapse", "node": {"name": "main"}}
    assert isinstance(event["message"], str) and event["message"]


def test_a_throttled_then_blocked_scraper_as_the_siem_sees_it(
    server: Homeserver,
) -> None:
    owner, user = server.register(), server.register()
    rooms = [owner.create_room() for _ in range(3)]
    assert [hostile_join(user, room).status_code for room in rooms] == [200, 429, 401]
    assert server.login(user.localpart).status_code == 403
    wait_until(lambda: server.events_about(user.user_id, "sessions_ended"), timeout=5)

    deny, block, ended, refused = (
        server.events_about(user.user_id, action)
        for action in ("deny", "block", "sessions_ended", "login_refused")
    )
    (deny_event,) = deny
    check_common(deny_event, "deny", "failure")
    assert deny_event["event"]["category"] == ["web"]
    assert deny_event["event"]["type"] == ["denied"]
    assert (
        deny_event["event"]["reason"]
        == "limit of 1 public rooms reached per 1h reached"
    )
    assert deny_event["user"] == {"id": user.user_id}
    assert deny_event["source"] == {"ip": "127.0.0.1"}
    assert deny_event["user_agent"] == {"original": AGENT_AS_SEEN}
    assert deny_event["url"] == {"path": f"/_matrix/client/v3/join/{rooms[1]}"}
    assert deny_event["http"]["request"]["method"] == "POST"
    assert deny_event["http"]["request"]["id"].startswith("POST-")
    guard = deny_event["tchap_guard"]
    assert guard["control"] == "public_room_joins"
    assert guard["mode"] == "enforce"
    assert guard["decision"] == "deny"
    assert (guard["window"], guard["window_ms"]) == ("1h", 3_600_000)
    assert (guard["measure"], guard["count"], guard["limit"]) == ("attempts", 1, 1)
    assert 3_590_000 < guard["retry_after_ms"] <= 3_660_000  # a bucket: 1/60 more
    assert guard["target"] == rooms[1]

    (block_event,) = block
    check_common(block_event, "block", "failure")
    assert block_event["event"]["category"] == ["iam", "session"]
    assert (
        block_event["event"]["reason"]
        == "too many public rooms reached: 3 attempts in 1h"
    )
    assert block_event["user_agent"] == {"original": AGENT_AS_SEEN}
    guard = block_event["tchap_guard"]
    assert (guard["decision"], guard["count"], guard["limit"]) == ("block", 3, 3)
    assert guard["target"] == rooms[2]
    assert guard["block"]["user_id"] == user.user_id
    assert guard["block"]["control"] == "public_room_joins"
    assert guard["block"]["blocked_by"] == "tchap_guard"
    assert guard["block"]["duration"] == "2h"
    assert TIMESTAMP.match(guard["block"]["until"])

    (ended_event,) = ended
    check_common(ended_event, "sessions_ended", "success")
    assert ended_event["tchap_guard"]["block"]["id"] == guard["block"]["id"]

    (refused_event,) = refused
    check_common(refused_event, "login_refused", "failure")
    assert refused_event["event"]["category"] == ["authentication"]
    assert refused_event["url"] == {"path": "/_matrix/client/v3/login"}
    assert refused_event["tchap_guard"]["block"]["id"] == guard["block"]["id"]


def test_every_line_of_the_file_is_one_ecs_object(server: Homeserver) -> None:
    lines = list(server.lines())
    assert lines
    for line in lines:
        assert line.isascii()
        event = json.loads(line)
        assert {"@timestamp", "message", "ecs", "event", "log", "service"} <= set(event)
        assert event["event"]["action"] != "admin_unblock"  # nothing forged
    (started,) = [
        e for e in map(json.loads, lines) if e["event"]["action"] == "started"
    ]
    check_common(started, "started", "success")
    assert started["tchap_guard"]["config"]["public_room_joins"]["block_at"] == {
        "window": "1h",
        "max": 3,
    }
