"""The admin API on a real Synapse, with the example config: every endpoint and error."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
import requests

from harness.homeserver import ADMIN_API, Account, Homeserver, wait_until


def account_path(user_id: str, action: str = "") -> str:
    return f"{ADMIN_API}/accounts/{quote(user_id)}" + (f"/{action}" if action else "")


def assert_error(
    response: requests.Response, status: int, errcode: str, words: str = ""
) -> None:
    assert response.status_code == status, response.text
    assert response.json()["errcode"] == errcode
    assert words in response.json()["error"]


def test_only_server_admins_may_call_it(server: Homeserver) -> None:
    user = server.register()
    anonymous = server.anonymous()
    stranger = Account(server, "", "not-a-token", "")
    for path in (
        f"{ADMIN_API}/blocks",
        f"{ADMIN_API}/past_blocks",
        account_path(user.user_id),
    ):
        assert_error(anonymous.get(path), 401, "M_MISSING_TOKEN")
        assert_error(stranger.get(path), 401, "M_UNKNOWN_TOKEN")
        assert_error(user.get(path), 403, "M_FORBIDDEN", "not a server admin")
    for action in ("block", "unblock"):
        path = account_path(user.user_id, action)
        assert_error(anonymous.post(path, {"reason": "x"}), 401, "M_MISSING_TOKEN")
        assert_error(user.post(path, {"reason": "x"}), 403, "M_FORBIDDEN")
    assert user.whoami().status_code == 200  # nobody was blocked


def test_block_refuses_the_account_and_unblock_restores_it(
    server: Homeserver, admin: Account
) -> None:
    user = server.register()
    before = time.time()
    response = admin.post(
        account_path(user.user_id, "block"),
        {"reason": "phishing report", "duration": "2h"},
    )
    assert response.status_code == 200, response.text
    block = response.json()["block"]
    assert response.json()["blocked"] is True
    assert block["user_id"] == user.user_id
    assert block["control"] == "admin"
    assert block["reason"] == "phishing report"
    assert block["blocked_by"] == admin.user_id
    assert block["duration"] == "2h"
    assert abs(block["until_ms"] / 1000 - (before + 7200)) < 5

    # end_sessions is on in the example config: the token goes, login is refused.
    wait_until(user.logged_out, timeout=5)
    assert_error(server.login(user.localpart), 403, "M_USER_LOCKED", "phishing report")
    assert_error(
        admin.post(account_path(user.user_id, "block"), {"reason": "again"}),
        409,
        "M_UNKNOWN",
        "already blocked",
    )

    shown = admin.get(account_path(user.user_id)).json()
    assert shown["blocked"] is True
    assert shown["block"]["id"] == block["id"]

    response = admin.post(
        account_path(user.user_id, "unblock"), {"reason": "verified by phone"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["blocked"] is False
    assert response.json()["block"]["ended_by"] == admin.user_id
    assert response.json()["block"]["end_reason"] == "verified by phone"
    assert server.login(user.localpart).status_code == 200
    assert_error(
        admin.post(account_path(user.user_id, "unblock"), {"reason": "twice"}),
        409,
        "M_UNKNOWN",
        "not blocked",
    )

    (blocked,) = server.events_about(user.user_id, "admin_block")
    assert blocked["user"] == {"id": admin.user_id, "target": {"id": user.user_id}}
    assert blocked["event"]["reason"] == "phishing report"
    (unblocked,) = server.events_about(user.user_id, "admin_unblock")
    assert unblocked["user"] == {"id": admin.user_id, "target": {"id": user.user_id}}
    assert unblocked["tchap_guard"]["counters_reset"] is True


def test_a_block_without_duration_uses_the_configured_one_and_zero_means_forever(
    server: Homeserver, admin: Account
) -> None:
    default, forever = server.register(), server.register()
    block = admin.post(account_path(default.user_id, "block"), {"reason": "r"}).json()[
        "block"
    ]
    assert block["duration"] == "1d"
    block = admin.post(
        account_path(forever.user_id, "block"), {"reason": "r", "duration": 0}
    ).json()["block"]
    assert block["until"] is None and "duration" not in block


def test_the_account_view_shows_block_state_counters_and_what_it_reached(
    server: Homeserver, admin: Account
) -> None:
    owner, user = server.register(), server.register()
    rooms = [owner.create_room() for _ in range(2)]
    for room in rooms:
        assert user.join(room).status_code == 200

    response = admin.get(account_path(user.user_id))
    assert response.status_code == 200, response.text
    view = response.json()
    assert view["user_id"] == user.user_id
    assert view["blocked"] is False and view["block"] is None
    assert view["exempt"] is False
    assert view["counters"]["public_room_joins"] == {
        "limits": [
            {"window": "1h", "window_ms": 3_600_000, "count": 2, "max": 10},
            {"window": "1d", "window_ms": 86_400_000, "count": 2, "max": 30},
        ],
        "block_at": {"window": "1d", "window_ms": 86_400_000, "attempts": 2, "max": 60},
    }
    reached = view["reached"]
    # Each join reached a public room, and showed its members (its owner, so far).
    assert sorted((r["control"], r["target"]) for r in reached) == sorted(
        [("public_room_joins", room) for room in rooms]
        + [("directory", f"members of {room}") for room in rooms]
    )
    assert {r["session"] for r in reached} == {None}
    # Looking at an account is itself in its audit trail.
    assert [e["event"]["action"] for e in view["recent_events"]] == ["admin_view"]
    assert view["block_history"] == []
    assert admin.get(account_path(admin.user_id)).json()["exempt"] is True

    viewed = server.events_about(user.user_id, "admin_view")
    assert viewed and viewed[-1]["user"]["id"] == admin.user_id


def test_the_blocks_list_pages_newest_first(server: Homeserver, admin: Account) -> None:
    users = [server.register() for _ in range(3)]
    for user in users:
        assert admin.post(account_path(user.user_id, "block"), {"reason": "page"}).ok

    first = admin.get(f"{ADMIN_API}/blocks?limit=2").json()
    assert first["total"] >= 3
    assert [b["user_id"] for b in first["blocks"]] == [
        users[2].user_id,
        users[1].user_id,
    ]
    second = admin.get(f"{ADMIN_API}/blocks?limit=2&from={first['next_token']}").json()
    assert second["blocks"][0]["user_id"] == users[0].user_id
    every = admin.get(f"{ADMIN_API}/blocks?limit=1000").json()
    assert "next_token" not in every
    assert len(every["blocks"]) == every["total"]
    assert all(
        {"user_id", "control", "reason", "since", "until", "blocked_by"} <= set(block)
        for block in every["blocks"]
    )


def past_blocks(admin: Account, query: str = "") -> dict[str, Any]:
    response = admin.get(f"{ADMIN_API}/past_blocks?{query}")
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


def test_past_blocks_list_the_ended_ones_last_ended_first_with_filters(
    server: Homeserver, admin: Account
) -> None:
    other_admin = server.register(admin=True)
    start = int(time.time() * 1000)
    lifted, expired, still = server.register(), server.register(), server.register()

    def block(user: Account, duration: str) -> None:
        response = admin.post(
            account_path(user.user_id, "block"),
            {"reason": f"why {user.localpart}", "duration": duration},
        )
        assert response.status_code == 200, response.text

    block(lifted, "1h")
    block(still, "1h")
    assert other_admin.post(
        account_path(lifted.user_id, "unblock"), {"reason": "verified by phone"}
    ).ok
    block(expired, "1s")  # begins after the unblock, and ends by itself
    since = f"since={start}"
    wait_until(lambda: len(past_blocks(admin, since)["blocks"]) == 2, timeout=10)

    page = past_blocks(admin, since)
    assert page["total"] == 2 and "next_token" not in page
    first, second = page["blocks"]
    assert [first["user_id"], second["user_id"]] == [expired.user_id, lifted.user_id]
    assert first["ended_by"] == "expiry" and first["ended_ms"] == first["until_ms"]
    assert first["reason"] == f"why {expired.localpart}"
    assert second["ended_by"] == other_admin.user_id
    assert second["end_reason"] == "verified by phone"
    assert second["blocked_by"] == admin.user_id and second["control"] == "admin"
    assert second["ended_ms"] >= second["since_ms"] >= start

    def users(query: str, since: int = start) -> list[str]:
        page = past_blocks(admin, f"since={since}&{query}")
        return [block["user_id"] for block in page["blocks"]]

    assert users(f"user_id={quote(lifted.user_id)}") == [lifted.user_id]
    assert users(f"user_id={quote(still.user_id)}") == []  # still in force
    assert users("lifted_by=expiry") == [expired.user_id]
    assert users("lifted_by=admin") == [lifted.user_id]
    assert users(f"lifted_by={quote(other_admin.user_id)}") == [lifted.user_id]
    assert users(f"lifted_by={quote(admin.user_id)}") == []
    assert users("control=admin") == [expired.user_id, lifted.user_id]
    assert users("control=public_room_joins") == []
    assert users(f"until={start}", since=start - 1) == []  # both began after
    # In force at some time between `since` and `until`: ended after the one, began
    # before the other.
    unblocked = second["ended_ms"]
    assert users("", since=unblocked - 1) == [expired.user_id, lifted.user_id]
    assert users("", since=unblocked) == [expired.user_id]
    assert users(f"until={unblocked}", since=unblocked - 1) == [lifted.user_id]

    # Each listing is in the audit trail, with what it asked for.
    viewed = [
        event
        for event in server.events()
        if event["event"]["action"] == "admin_view"
        and event["tchap_guard"]["endpoint"] == "past_blocks"
        and event["tchap_guard"].get("filters", {}).get("user_id") == lifted.user_id
    ]
    assert len(viewed) == 1
    assert viewed[0]["user"] == {"id": admin.user_id, "target": {"id": lifted.user_id}}
    assert viewed[0]["tchap_guard"]["filters"] == {
        "user_id": lifted.user_id,
        "since": start,
    }


def test_past_blocks_page_with_a_next_token_only_while_more_remain(
    server: Homeserver, admin: Account
) -> None:
    start = int(time.time() * 1000)
    users = [server.register() for _ in range(5)]
    for user in users:
        assert admin.post(account_path(user.user_id, "block"), {"reason": "r"}).ok
        assert admin.post(account_path(user.user_id, "unblock"), {"reason": "r"}).ok
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        query = f"since={start}&limit=2" + (f"&from={token}" if token else "")
        page = past_blocks(admin, query)
        pages += 1
        assert page["total"] == 5
        seen += [b["user_id"] for b in page["blocks"]]
        token = page.get("next_token")
        if token is None:
            break
    assert seen == [user.user_id for user in reversed(users)]
    assert pages == 3
    assert "next_token" not in past_blocks(admin, f"since={start}&limit=5")


@pytest.mark.parametrize(
    "query",
    [
        "limit=-1",
        "limit=0",
        "limit=1001",
        "from=abc",
        "from=12",
        "from=-1_2",
        "from=1_2_3",
        "from=" + "9" * 30 + "_1",
        "from=%FF",
        "user_id=alice",
        "user_id=%40alice%3Aelsewhere.example",
        "user_id=%40a%00b%3Alocalhost",
        "control=nothing",
        "control=",
        "lifted_by=someone",
        "lifted_by=%40x%3Aelsewhere.example",
        "since=yesterday",
        "since=-5",
        "until=1.5",
        "since=20&until=10",
        "since=10&until=10",
    ],
)
def test_bad_past_blocks_queries_are_400s(
    server: Homeserver, admin: Account, query: str
) -> None:
    response = admin.get(f"{ADMIN_API}/past_blocks?{query}")
    assert_error(response, 400, "M_INVALID_PARAM", query.split("=")[0])
    assert len(response.json()["error"]) < 300


def test_listing_the_blocks_is_itself_an_audit_event(server: Homeserver) -> None:
    # An admin of its own, so that its events are this test's alone.
    admin = server.register(admin=True)
    assert admin.get(f"{ADMIN_API}/blocks?limit=5").status_code == 200

    (viewed,) = wait_until(lambda: server.events_about(admin.user_id, "admin_view"))
    assert viewed["user"] == {"id": admin.user_id}  # no account is the target
    assert viewed["tchap_guard"]["endpoint"] == "blocks"
    assert viewed["message"] == f"{admin.user_id} viewed the blocks in force"
    assert viewed["url"]["path"].endswith("/blocks")
    # Kept in the audit trail too, under no account.
    stored = server.sql(
        "SELECT user_id, document FROM tchap_guard_events WHERE action = 'admin_view'"
    )
    mine = [user_id for user_id, document in stored if admin.user_id in document]
    assert mine == [None]
    # A call refused with a 4xx is not an event.
    assert admin.get(f"{ADMIN_API}/blocks?limit=0").status_code == 400
    assert len(server.events_about(admin.user_id, "admin_view")) == 1


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=abc",
        "limit=100000",
        "limit=%C2%B2",
        "from=abc",
        "from=-3",
        "limit=" + "9" * 5000,
        "from=" + "9" * 5000,
    ],
)
def test_bad_pagination_is_a_400(
    server: Homeserver, admin: Account, query: str
) -> None:
    response = admin.get(f"{ADMIN_API}/blocks?{query}")
    assert_error(response, 400, "M_INVALID_PARAM", query.split("=")[0])
    assert len(response.json()["error"]) < 200  # the value quoted, not echoed whole


def test_bad_user_ids_and_bodies_are_400s_and_unknown_users_404s(
    server: Homeserver, admin: Account
) -> None:
    user = server.register()
    # Decoded once: "%2541" stays "%41" and is not an id of this server.
    assert_error(
        admin.get(f"{ADMIN_API}/accounts/{quote(quote(user.user_id))}"),
        400,
        "M_INVALID_PARAM",
    )
    for raw in ("alice", "@nocolon", "@bad:"):
        assert_error(
            admin.get(f"{ADMIN_API}/accounts/{quote(raw)}"),
            400,
            "M_INVALID_PARAM",
            "user id",
        )
    assert_error(
        admin.get(account_path("@x:elsewhere.org")), 400, "M_INVALID_PARAM", "local"
    )
    assert_error(admin.get(account_path("@nobody:localhost")), 404, "M_NOT_FOUND")
    assert_error(
        admin.post(account_path("@nobody:localhost", "block"), {"reason": "r"}),
        404,
        "M_NOT_FOUND",
    )

    block = account_path(user.user_id, "block")
    assert_error(admin.post(block, {}), 400, "M_MISSING_PARAM", "reason")
    assert_error(admin.post(block, {"reason": "  "}), 400, "M_MISSING_PARAM", "reason")
    assert_error(
        admin.post(block, {"reason": "x" * 1001}), 400, "M_INVALID_PARAM", "1000"
    )
    assert_error(
        admin.post(block, {"reason": "r", "duration": "10000y"}),
        400,
        "M_INVALID_PARAM",
        "too long",
    )
    assert_error(
        admin.get(f"{ADMIN_API}/accounts/%FF"), 400, "M_INVALID_PARAM", "UTF-8"
    )
    assert_error(
        admin.post(block, {"reason": "r", "duration": "soon"}),
        400,
        "M_INVALID_PARAM",
        "duration",
    )
    assert_error(
        admin.request(
            "POST",
            block,
            data=b"{not json",
            headers={"Content-Type": "application/json"},
        ),
        400,
        "M_NOT_JSON",
    )
    assert_error(admin.post(block, ["reason"]), 400, "M_BAD_JSON")
    assert user.whoami().status_code == 200  # none of those blocked anyone


def test_unknown_endpoints_and_methods(server: Homeserver, admin: Account) -> None:
    assert_error(admin.get(f"{ADMIN_API}/nothing"), 404, "M_UNRECOGNIZED")
    assert_error(admin.post(f"{ADMIN_API}/blocks"), 404, "M_UNRECOGNIZED")
    assert_error(admin.put(f"{ADMIN_API}/blocks"), 405, "M_UNRECOGNIZED")


def test_values_no_database_column_holds_are_400s(
    server: Homeserver, admin: Account
) -> None:
    user = server.register()
    block = account_path(user.user_id, "block")
    for reason, words in (
        ("a\x00b", "NUL"),
        ("a\ud800b", "unpaired surrogate"),
    ):
        assert_error(
            admin.post(block, {"reason": reason}), 400, "M_INVALID_PARAM", words
        )
    assert_error(
        admin.post(block, {"reason": "r", "duration": "9" * 5000}),
        400,
        "M_INVALID_PARAM",
        "too long",
    )
    for raw in ("@a\x00b:localhost", "@a\nb:localhost", "@" + "a" * 300 + ":localhost"):
        assert_error(
            admin.get(f"{ADMIN_API}/accounts/{quote(raw)}"),
            400,
            "M_INVALID_PARAM",
            "user id",
        )
    # A reason over several lines is text like any other.
    response = admin.post(block, {"reason": "line one\nline two"})
    assert response.status_code == 200, response.text
    assert response.json()["block"]["reason"] == "line one\nline two"


def test_blocking_a_server_admin_takes_an_explicit_flag_and_never_oneself(
    server: Homeserver, admin: Account
) -> None:
    other_admin = server.register(admin=True)
    assert_error(
        admin.post(account_path(admin.user_id, "block"), {"reason": "oops"}),
        403,
        "M_FORBIDDEN",
        "cannot block yourself",
    )
    assert_error(
        admin.post(
            account_path(admin.user_id, "block"),
            {"reason": "oops", "block_admin": True},
        ),
        403,
        "M_FORBIDDEN",
        "cannot block yourself",
    )
    path = account_path(other_admin.user_id, "block")
    assert_error(
        admin.post(path, {"reason": "compromised"}),
        403,
        "M_FORBIDDEN",
        '"block_admin": true',
    )
    assert_error(
        admin.post(path, {"reason": "compromised", "block_admin": "yes"}),
        400,
        "M_INVALID_PARAM",
        "block_admin",
    )
    assert other_admin.whoami().status_code == 200  # none of those blocked anyone
    response = admin.post(path, {"reason": "compromised", "block_admin": True})
    assert response.status_code == 200, response.text
    locked = other_admin.get(f"{ADMIN_API}/blocks")
    assert locked.status_code == 401  # blocked, the admin API included
    assert admin.post(
        account_path(other_admin.user_id, "unblock"), {"reason": "recovered"}
    ).ok


def test_when_the_tables_cannot_answer_it_is_a_503_with_retry_after(
    server: Homeserver, admin: Account
) -> None:
    user = server.register()
    calls: list[Callable[[], requests.Response]] = [
        lambda: admin.get(f"{ADMIN_API}/blocks"),
        lambda: admin.get(f"{ADMIN_API}/past_blocks"),
        lambda: admin.get(account_path(user.user_id)),
        lambda: admin.post(account_path(user.user_id, "block"), {"reason": "r"}),
        lambda: admin.post(account_path(user.user_id, "unblock"), {"reason": "r"}),
    ]
    tables = ("tchap_guard_blocks", "tchap_guard_counts", "tchap_guard_accounts")
    for table in tables:
        server.sql(f"ALTER TABLE {table} RENAME TO {table}_away")
    try:
        for call in calls:
            response = call()
            assert_error(response, 503, "M_UNKNOWN", "cannot answer right now")
            assert response.headers["Retry-After"] == "5"
    finally:
        for table in tables:
            server.sql(f"ALTER TABLE {table}_away RENAME TO {table}")
    assert [call().status_code for call in calls] == [200] * len(calls)
