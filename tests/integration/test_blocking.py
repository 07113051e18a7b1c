"""Blocking on a real Synapse: what a block does, how long it lasts, how it ends."""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import requests

from harness.homeserver import ADMIN_API, Account, Homeserver, wait_until
from tests.integration.conftest import running_homeserver

BLOCK_AT = 4
EXPIRY_S = 6


def guard(duration: str, end_sessions: bool) -> dict[str, object]:
    return {
        "public_room_joins": {
            "limits": [{"window": "1h", "max": 2}],
            "block_at": {"window": "1h", "max": BLOCK_AT},
        },
        "blocking": {"duration": duration, "end_sessions": end_sessions},
    }


@pytest.fixture(scope="module")
def ending_sessions(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Homeserver]:
    """Blocks end every session and expire after a few seconds."""
    config = guard(f"{EXPIRY_S}s", end_sessions=True)
    with running_homeserver(tmp_path_factory, backend, guard=config) as server:
        yield server


@pytest.fixture(scope="module")
def keeping_sessions(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Homeserver]:
    """Blocks leave sessions alone and last until an admin lifts them."""
    config = guard("0", end_sessions=False)
    with running_homeserver(tmp_path_factory, backend, guard=config) as server:
        yield server


def join_until_blocked(server: Homeserver, user: Account) -> None:
    owner = server.register()
    statuses = []
    for _ in range(BLOCK_AT):
        statuses.append(user.join(owner.create_room()).status_code)
    # Two joins served, one refused by the limit, the fourth attempt blocks.
    assert statuses == [200, 200, 429, 401]
    assert len(server.events_about(user.user_id, "block")) == 1


def assert_locked(response: object) -> None:

    assert isinstance(response, requests.Response)
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["errcode"] == "M_USER_LOCKED"
    assert body["soft_logout"] is True
    assert "blocked by the homeserver's security policy" in body["error"]
    assert "too many public rooms reached" in body["error"]


def ok(response: requests.Response) -> requests.Response | None:
    return response if response.status_code == 200 else None


def assert_login_refused(server: Homeserver, user: Account) -> None:
    response = server.login(user.localpart)
    assert response.status_code == 403, response.text
    assert response.json()["errcode"] == "M_USER_LOCKED"
    assert "blocked by the homeserver's security policy" in response.json()["error"]


def test_crossing_block_at_ends_every_session_and_refuses_login(
    ending_sessions: Homeserver,
) -> None:
    server = ending_sessions
    user = server.register()
    second_device = server.login(user.localpart).json()["access_token"]

    join_until_blocked(server, user)

    # Refused at once, then logged out everywhere a moment later.
    assert user.whoami().status_code == 401
    for token in (user.token, second_device):
        session = Account(server, user.user_id, token, "")
        wait_until(session.logged_out, timeout=5)
    assert_login_refused(server, user)
    ended = server.events_about(user.user_id, "sessions_ended")
    assert len(ended) == 1
    assert len(server.events_about(user.user_id, "login_refused")) == 1


def test_a_block_expires_on_its_own(ending_sessions: Homeserver) -> None:
    server = ending_sessions
    user = server.register()
    join_until_blocked(server, user)
    (block_event,) = server.events_about(user.user_id, "block")
    until_ms = block_event["tchap_guard"]["block"]["until_ms"]
    assert until_ms - block_event["tchap_guard"]["block"]["since_ms"] == EXPIRY_S * 1000

    assert_login_refused(server, user)
    response = wait_until(lambda: ok(server.login(user.localpart)), EXPIRY_S + 10)
    assert time.time() * 1000 >= until_ms
    assert (
        Account(server, user.user_id, response.json()["access_token"], "").whoami().ok
    )
    # The background sweep reports the expiry, once.
    wait_until(lambda: server.events_about(user.user_id, "block_expired"), timeout=15)
    (expired,) = server.events_about(user.user_id, "block_expired")
    assert expired["tchap_guard"]["block"]["ended_by"] == "expiry"


def test_every_request_of_a_blocked_account_is_refused_but_logout(
    keeping_sessions: Homeserver,
) -> None:
    server = keeping_sessions
    user = server.register()
    join_until_blocked(server, user)

    assert_locked(user.whoami())
    assert_locked(user.get("/_matrix/client/v3/sync?timeout=0"))
    assert_locked(user.post("/_matrix/client/v3/createRoom", {}))
    assert_locked(
        user.post("/_matrix/client/v3/user_directory/search", {"search_term": "a"})
    )
    assert_locked(user.get(f"/_matrix/client/v3/profile/{quote(user.user_id)}"))
    assert_login_refused(server, user)
    assert user.post("/_matrix/client/v3/logout").status_code == 200


def test_a_block_survives_a_restart(keeping_sessions: Homeserver) -> None:
    server = keeping_sessions
    admin = server.register(admin=True)
    user = server.register()
    join_until_blocked(server, user)

    server.restart()

    assert_locked(user.whoami())
    assert_login_refused(server, user)
    blocks = admin.get(f"{ADMIN_API}/blocks?limit=1000").json()["blocks"]
    assert user.user_id in [block["user_id"] for block in blocks]


def test_an_admin_unblock_lets_the_account_start_over(
    keeping_sessions: Homeserver,
) -> None:
    server = keeping_sessions
    admin = server.register(admin=True)
    owner = server.register()
    user = server.register()
    join_until_blocked(server, user)
    assert_locked(user.whoami())

    response = admin.post(
        f"{ADMIN_API}/accounts/{quote(user.user_id)}/unblock",
        {"reason": "false positive"},
    )
    assert response.status_code == 200, response.text

    assert user.whoami().status_code == 200
    assert server.login(user.localpart).status_code == 200
    # The counters started over: two joins are served again before the limit.
    statuses = [user.join(owner.create_room()).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
