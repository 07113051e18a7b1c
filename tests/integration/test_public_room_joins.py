"""Public-room join quotas on a real Synapse: which joins count, and the 429s."""

from __future__ import annotations

import math
import time
from typing import Any
from urllib.parse import quote

import pytest

from harness.homeserver import (
    ADMIN_API,
    Account,
    Homeserver,
    assert_wait,
    counters,
    wait_until,
    window_count,
)

SHORT_S = 5
JOINS = "public_room_joins"
GUARD = {
    "exempt_users": ["@exempt:localhost"],
    "public_room_joins": {
        "limits": [{"window": f"{SHORT_S}s", "max": 2}, {"window": "1h", "max": 4}],
        "block_at": {"window": "1h", "max": 50},
    },
}


@pytest.fixture(scope="module")
def owner(server: Homeserver) -> Account:
    return server.register()


def joins_counted(admin: Account, user: Account) -> int:
    response = admin.get(f"{ADMIN_API}/accounts/{quote(user.user_id)}")
    assert response.status_code == 200, response.text
    limits: list[dict[str, Any]] = response.json()["counters"]["public_room_joins"][
        "limits"
    ]
    return max(int(limit["count"]) for limit in limits)


def displayname_in(viewer: Account, room_id: str, user: Account) -> Any:
    path = f"/_matrix/client/v3/rooms/{quote(room_id)}/state/m.room.member/"
    return viewer.get(path + quote(user.user_id)).json().get("displayname")


def assert_refused(response: Any, expected_wait_ms: float, window_ms: int) -> None:
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["errcode"] == "M_LIMIT_EXCEEDED"
    assert "public rooms reached" in body["error"]
    assert_wait(body["retry_after_ms"], expected_wait_ms, window_ms)
    assert response.headers["Retry-After"] == str(
        math.ceil(body["retry_after_ms"] / 1000)
    )


def test_a_full_short_window_refuses_until_its_oldest_join_leaves(
    server: Homeserver, admin: Account, owner: Account
) -> None:
    rooms = [owner.create_room() for _ in range(3)]
    user = server.register()

    first = time.monotonic()
    assert user.join(rooms[0]).status_code == 200
    assert user.join(rooms[1]).status_code == 200
    refused = user.join(rooms[2])
    elapsed_ms = (time.monotonic() - first) * 1000
    assert_refused(refused, SHORT_S * 1000 - elapsed_ms, SHORT_S * 1000)

    wait_until(lambda: window_count(admin, user, JOINS, 0) < 2, SHORT_S + 5)
    assert user.join(rooms[2]).status_code == 200


def test_a_full_long_window_gives_the_wait_until_the_join_can_pass(
    server: Homeserver, admin: Account, owner: Account
) -> None:
    rooms = [owner.create_room() for _ in range(5)]
    user = server.register()

    first = time.monotonic()
    for room in rooms[:2]:
        assert user.join(room).status_code == 200
    wait_until(lambda: window_count(admin, user, JOINS, 0) == 0, SHORT_S + 5)
    for room in rooms[2:4]:
        assert user.join(room).status_code == 200
    # Both windows are full now: the answer is the longer wait, when the join can pass.
    refused = user.join(rooms[4])
    elapsed_ms = (time.monotonic() - first) * 1000
    assert_refused(refused, 3600 * 1000 - elapsed_ms, 3_600_000)


def test_invited_and_non_public_joins_are_not_counted(
    server: Homeserver, owner: Account, admin: Account
) -> None:
    user = server.register()
    public = [owner.create_room() for _ in range(3)]
    assert user.join(public[0]).status_code == 200
    assert user.join(public[1]).status_code == 200
    assert user.join(public[2]).status_code == 429

    # Invite-only rooms, joined on invitation.
    private = owner.create_room(public=False)
    owner.invite(private, user.user_id)
    assert user.join(private).status_code == 200
    # A public room, but joined on invitation.
    invited_public = owner.create_room()
    owner.invite(invited_public, user.user_id)
    assert user.join(invited_public).status_code == 200
    # A restricted room, open to the members of `private`, joined without invitation.
    restricted = owner.create_room(
        public=False,
        initial_state=[
            {
                "type": "m.room.join_rules",
                "state_key": "",
                "content": {
                    "join_rule": "restricted",
                    "allow": [{"type": "m.room_membership", "room_id": private}],
                },
            }
        ],
    )
    assert user.join(restricted).status_code == 200

    assert joins_counted(admin, user) == 2


def test_rejoins_sent_by_a_profile_change_are_not_counted(
    server: Homeserver, owner: Account, admin: Account
) -> None:
    user = server.register()
    rooms = [owner.create_room() for _ in range(2)]
    for room in rooms:
        assert user.join(room).status_code == 200
    assert joins_counted(admin, user) == 2

    # Changing the display name re-sends a join to every room the user is in...
    assert user.set_displayname("Camille Martin").status_code == 200
    for room in rooms:

        def renamed(room: str = room) -> bool:
            return bool(displayname_in(owner, room, user) == "Camille Martin")

        wait_until(renamed)
    # ... and so does joining a room again.
    assert user.join(rooms[0]).status_code == 200

    assert joins_counted(admin, user) == 2
    assert server.events_about(user.user_id, "deny") == []


def test_a_room_this_server_is_not_in_counts_but_a_join_that_failed_gives_it_back(
    server: Homeserver, admin: Account
) -> None:
    user = server.register()
    # A room this server is not in is judged like a public one; the remote join
    # itself fails here (no federation), so it leaves the limits, but the attempt
    # still counts towards a block.
    response = user.post(
        "/_matrix/client/v3/join/!unknown:remote.invalid?server_name=127.0.0.1:1"
    )
    assert response.status_code != 200
    standing = counters(admin, user, JOINS)
    assert [limit["count"] for limit in standing["limits"]] == [0, 0]
    assert standing["block_at"]["attempts"] == 1
    # Not reached after all: the room is not among what the account reached.
    assert (
        admin.get(f"{ADMIN_API}/accounts/{quote(user.user_id)}").json()["reached"] == []
    )


def test_exempt_users_and_server_admins_are_never_limited(
    server: Homeserver, owner: Account, admin: Account
) -> None:
    exempt = server.register("exempt")
    rooms = [owner.create_room() for _ in range(5)]
    for member in (exempt, admin):
        for room in rooms:
            assert member.join(room).status_code == 200, member.user_id
        assert joins_counted(admin, member) == 0
