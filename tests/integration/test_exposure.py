"""What one account is exposed to, counted through every route, on a real Synapse.

People (directory, profiles, member lists, a room's state), public rooms (joined,
peeked, entered through a public space) and message history (every route that reads
it back), each under every prefix Synapse serves, and only what was served.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from harness.homeserver import Account, Homeserver, counters

ROOMS = 3
PEOPLE = 40
MESSAGES = 200
GUARD = {
    "public_room_joins": {"limits": [{"window": "1h", "max": ROOMS}], "block_at": None},
    "directory": {"free": {"window": "1h", "max_profiles": PEOPLE}, "block_at": None},
    "message_history": {
        "limits": [{"window": "1h", "max": MESSAGES}],
        "block_at": None,
        "max_per_request": 100,
    },
}
WORLD_READABLE = [
    {
        "type": "m.room.history_visibility",
        "state_key": "",
        "content": {"history_visibility": "world_readable"},
    }
]


@pytest.fixture(scope="module")
def crowd(server: Homeserver) -> list[Account]:
    return [server.register() for _ in range(6)]


def forum(owner: Account, members: list[Account], readable: bool = True) -> str:
    """A public room with members, readable by anyone if `readable`."""
    room = owner.create_room(initial_state=WORLD_READABLE if readable else [])
    for member in members:
        assert member.join(room).status_code == 200
    for n in range(3):
        owner.put(
            f"/_matrix/client/v3/rooms/{quote(room)}/send/m.room.message/m{n}",
            {"msgtype": "m.text", "body": f"message {n}"},
        )
    return room


def count(admin: Account, user: Account, control: str) -> int:
    return int(counters(admin, user, control)["limits"][0]["count"])


def test_a_profile_counts_once_whatever_the_prefix_or_field(
    server: Homeserver, admin: Account, crowd: list[Account]
) -> None:
    user = server.register()
    paths = [
        "/_matrix/client/v3/profile/{}",
        "/_matrix/client/r0/profile/{}/displayname",
        "/_matrix/client/unstable/profile/{}/avatar_url",
        "/_matrix/client/api/v1/profile/{}",
    ]
    for path, person in zip(paths, crowd, strict=False):
        response = user.get(path.format(quote(person.user_id)))
        assert response.status_code in (200, 404), response.text
    assert count(admin, user, "directory") == 4
    for path in paths:  # the same person again, by every route: nothing more
        user.get(path.format(quote(crowd[0].user_id)))
    assert user.get(f"/_matrix/client/v3/profile/{quote(user.user_id)}").ok
    assert count(admin, user, "directory") == 4


def test_a_profile_asked_without_an_account_is_refused(
    server: Homeserver, crowd: list[Account]
) -> None:
    anonymous = server.anonymous()
    response = anonymous.get(f"/_matrix/client/v3/profile/{quote(crowd[0].user_id)}")
    assert response.status_code == 401
    assert response.json()["errcode"] == "M_MISSING_TOKEN"


def test_a_join_counts_the_room_and_shows_its_members_once(
    server: Homeserver, admin: Account, crowd: list[Account]
) -> None:
    owner, user = server.register(), server.register()
    room = forum(owner, crowd[:4])  # five members
    assert user.join(room).status_code == 200
    assert count(admin, user, "public_room_joins") == 1
    assert count(admin, user, "directory") == 5
    for route in ("members", "joined_members", "state", "initialSync"):
        assert user.get(f"/_matrix/client/v3/rooms/{quote(room)}/{route}").ok
    assert count(admin, user, "directory") == 5  # paid at the join


def test_reading_a_room_without_joining_it_is_a_room_reached_by_every_route(
    server: Homeserver, admin: Account, crowd: list[Account]
) -> None:
    owner, user = server.register(), server.register()
    room = forum(owner, crowd[:2])  # three members
    event_id = owner.get(
        f"/_matrix/client/v3/rooms/{quote(room)}/messages?dir=b&limit=1"
    ).json()["chunk"][0]["event_id"]
    reads = [
        f"/_matrix/client/v3/rooms/{quote(room)}/messages?dir=b&limit=10",
        f"/_matrix/client/r0/rooms/{quote(room)}/event/{quote(event_id)}",
        f"/_matrix/client/unstable/rooms/{quote(room)}/context/{quote(event_id)}",
        f"/_matrix/client/api/v1/rooms/{quote(room)}/state",
        f"/_matrix/client/v3/rooms/{quote(room)}/members",
        f"/_matrix/client/v3/rooms/{quote(room)}/initialSync?limit=5",
        f"/_matrix/client/v3/events?room_id={quote(room)}&timeout=0",
    ]
    for path in reads:
        response = user.get(path)
        assert response.status_code == 200, (path, response.text)
    standing = counters(admin, user, "public_room_joins")
    assert standing["limits"][0]["count"] == 1  # one room, however many routes
    assert count(admin, user, "directory") == 3  # its members, once
    assert count(admin, user, "message_history") == 10 + 1 + 10 + 5


def test_a_room_that_refuses_to_be_read_gives_the_room_back(
    server: Homeserver, admin: Account, crowd: list[Account]
) -> None:
    owner, user = server.register(), server.register()
    room = forum(owner, crowd[:1], readable=False)
    response = user.get(f"/_matrix/client/v3/rooms/{quote(room)}/messages?limit=10")
    assert response.status_code == 403
    standing = counters(admin, user, "public_room_joins")
    assert standing["limits"][0]["count"] == 0
    assert count(admin, user, "message_history") == 0


def test_rooms_read_without_joining_share_the_limit_of_rooms_joined(
    server: Homeserver, admin: Account, crowd: list[Account]
) -> None:
    owner, user = server.register(), server.register()
    rooms = [forum(owner, []) for _ in range(ROOMS + 1)]
    assert user.join(rooms[0]).status_code == 200
    for room in rooms[1:ROOMS]:
        assert user.get(f"/_matrix/client/v3/rooms/{quote(room)}/messages").ok
    refused = user.get(f"/_matrix/client/v3/rooms/{quote(rooms[ROOMS])}/state")
    assert refused.status_code == 429, refused.text
    assert refused.json()["errcode"] == "M_LIMIT_EXCEEDED"
    assert "public rooms reached" in refused.json()["error"]


def test_restricted_rooms_of_a_public_space_count_like_public_rooms(
    server: Homeserver, admin: Account
) -> None:
    owner, user = server.register(), server.register()
    space = owner.create_room(creation_content={"type": "m.space"})
    restricted = owner.create_room(
        public=False,
        room_version="10",
        initial_state=[
            {
                "type": "m.room.join_rules",
                "state_key": "",
                "content": {
                    "join_rule": "restricted",
                    "allow": [{"type": "m.room_membership", "room_id": space}],
                },
            }
        ],
    )
    assert user.join(space).status_code == 200
    assert user.join(restricted).status_code == 200
    assert count(admin, user, "public_room_joins") == 2


def test_message_history_counts_what_each_route_asks(
    server: Homeserver, admin: Account, crowd: list[Account]
) -> None:
    owner, user = server.register(), server.register()
    room = forum(owner, [user])
    event_id = user.get(
        f"/_matrix/client/v3/rooms/{quote(room)}/messages?dir=b&limit=1"
    ).json()["chunk"][0]["event_id"]
    asked: list[tuple[str, Any, int]] = [
        ("GET", f"/rooms/{quote(room)}/messages?dir=b&limit=50", 50),
        ("GET", f"/rooms/{quote(room)}/context/{quote(event_id)}?limit=20", 20),
        ("GET", f"/rooms/{quote(room)}/event/{quote(event_id)}", 1),
        ("GET", f"/rooms/{quote(room)}/initialSync?limit=7", 7),
        ("POST", "/search", 3 * (1 + 1 + 1)),
    ]
    search = {
        "search_categories": {
            "room_events": {
                "search_term": "message",
                "filter": {"limit": 3},
                "event_context": {"before_limit": 1, "after_limit": 1},
            }
        }
    }
    total = 1  # the first /messages above
    for method, path, messages in asked:
        url = f"/_matrix/client/v3{path}"
        response = user.post(url, search) if method == "POST" else user.get(url)
        assert response.status_code == 200, (path, response.text)
        total += messages
        assert count(admin, user, "message_history") == total, path
    for _ in range(5):  # a live timeline never counts
        assert user.get("/_matrix/client/v3/sync?timeout=0").ok
    assert count(admin, user, "message_history") == total

    # A request larger than may ever pass: a 400 saying the most it may ask, and no
    # wait (waiting would not help).
    too_big = user.get(f"/_matrix/client/v3/rooms/{quote(room)}/context/x?limit=5000")
    assert too_big.status_code == 400, too_big.text
    body = too_big.json()
    assert body["errcode"] == "M_INVALID_PARAM" and "retry_after_ms" not in body
    assert "at most 100 may be read in one request" in body["error"]
    assert "Retry-After" not in too_big.headers
    while count(admin, user, "message_history") < MESSAGES:
        user.get(f"/_matrix/client/v3/rooms/{quote(room)}/messages?limit=100")
    refused = user.get(f"/_matrix/client/v3/rooms/{quote(room)}/messages?limit=1")
    assert refused.status_code == 429
    assert "messages read" in refused.json()["error"]
