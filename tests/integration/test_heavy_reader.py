"""A heavy reader on a second device is refused, never blocked, for what her client
fetches on its own; a script that goes on reading after being told is blocked.

The June 2026 regression: a communications officer caught up on many rooms until
`message_history` refused her, then logged in on a second device; during its
initial sync, matrix-js-sdk's own thread fetches (`/event/{root}` and
`/relations/{root}?dir=b&recurse=true` for every thread it sees) were refused room
after room, and `block_at` blocked her account for a day.
"""

from __future__ import annotations

from urllib.parse import quote

from harness.homeserver import Account, Homeserver

ROOMS = 6
GUARD = {
    "public_room_joins": {"limits": [{"window": "1h", "max": 20}], "block_at": None},
    "message_history": {
        "limits": [{"window": "1h", "max": 100}],
        "block_at": {"window": "1h", "max": 3},
    },
}


def threaded_room(owner: Account) -> tuple[str, str]:
    """A public room with a thread: its root and one reply."""
    room = owner.create_room()
    path = f"/_matrix/client/v3/rooms/{quote(room)}/send/m.room.message"
    root = owner.put(f"{path}/root", {"msgtype": "m.text", "body": "root"})
    assert root.status_code == 200, root.text
    root_id = root.json()["event_id"]
    reply = {
        "msgtype": "m.text",
        "body": "reply",
        "m.relates_to": {"rel_type": "m.thread", "event_id": root_id},
    }
    assert owner.put(f"{path}/reply", reply).status_code == 200
    return room, root_id


def test_a_second_devices_own_fetches_are_refused_but_never_block(
    server: Homeserver,
) -> None:
    owner, reader = server.register(), server.register()
    rooms = [threaded_room(owner) for _ in range(ROOMS)]
    for room, _ in rooms:
        assert reader.join(room).status_code == 200
    # Catching up on the first room until the hour's history is used up.
    first = f"/_matrix/client/v3/rooms/{quote(rooms[0][0])}/messages?dir=b&limit=50"
    assert [reader.get(first).status_code for _ in range(2)] == [200, 200]
    assert reader.get(first).status_code == 429

    login = server.login(reader.localpart)
    assert login.status_code == 200, login.text
    second = Account(
        server, reader.user_id, login.json()["access_token"], login.json()["device_id"]
    )
    assert second.get("/_matrix/client/v3/sync?timeout=0").status_code == 200
    for room, root in rooms:  # what the SDK fetches for each thread, on its own
        base = f"/_matrix/client/v3/rooms/{quote(room)}"
        event = second.get(f"{base}/event/{quote(root)}")
        relations = second.get(
            f"/_matrix/client/v1/rooms/{quote(room)}/relations/{quote(root)}"
            "?dir=b&recurse=true&limit=30"
        )
        assert (event.status_code, relations.status_code) == (429, 429)
        assert "retry_after_ms" in relations.json()
    # Refused with a time to come back, and never blocked: both devices still work.
    assert second.get("/_matrix/client/v3/sync?timeout=0").status_code == 200
    assert reader.get("/_matrix/client/v3/account/whoami").status_code == 200

    # The same reads asked for by a script, room after room, after being told.
    codes = []
    for room, _ in rooms[:4]:
        url = f"/_matrix/client/v3/rooms/{quote(room)}/messages?dir=b&limit=30"
        codes.append(second.get(url).status_code)
    assert codes[:2] == [429, 429] and codes[2] != 429, codes
    assert reader.get("/_matrix/client/v3/account/whoami").status_code in (401, 403)
