"""Ordinary users at work, at the same time as the attack: a compressed day of Element.

Each opens Element afresh, reads their rooms, looks colleagues up as Element does it
(every keystroke a search), explores the forums, previews one and joins one or two,
scrolls back, opens threads and replies, searches messages, and writes. Whatever the
guard refuses them is a cost of the guard; the goal is none. And one heavy reader,
on two devices, who may be refused but must never be blocked.
"""

from __future__ import annotations

import random
from urllib.parse import quote

import attr

from harness.element import Element, Usage
from harness.homeserver import Account, Homeserver
from harness.replay.seed import FORUM_TOPICS, Person, Seeded, account_of


@attr.define
class Day:
    """One ordinary user's day, as Element counted it."""

    user_id: str
    usage: Usage

    @property
    def requests(self) -> int:
        return self.usage.requests

    @property
    def refused(self) -> list[str]:
        return self.usage.refused


def day_at_work(server: Homeserver, person: Person, seeded: Seeded, seed: int) -> Day:
    rng = random.Random(seed)
    element = Element(
        account_of(server, person), rng, device_pixel_ratio=rng.choice((1, 2, 2, 3))
    )
    element.log_in_and_sync()
    element.room_list_avatars()

    rooms = list(seeded.rooms_of[person.user_id])
    for room in rooms:
        element.open_room(room)

    names = [other.name for other in rng.sample(seeded.people, 24)]
    for name in names[:4]:  # looking colleagues up
        element.spotlight(name)
    for name in names[4:14]:  # inviting people to a meeting room
        element.invite_dialog(name)

    # A minute in Explore: a forum or two found, one previewed, one or two joined.
    topic = rng.choice(FORUM_TOPICS)
    found = [
        room for room in element.explore(topic.split()[0].lower()) if room not in rooms
    ]
    if found:
        element.preview(found[0])
    for room in found[: rng.choice((1, 2))]:
        if element.join(room):
            rooms.append(room)
            element.open_room(room)

    for room in rng.sample(rooms, min(2, len(rooms))):  # catching up
        events = element.scroll_up(room, pages=3)
        replies = [e["event_id"] for e in events if e.get("type") == "m.room.message"]
        for event_id in replies[:2]:
            element.open_reply(room, event_id)
    element.open_threads(rooms[0])
    element.search_messages(rooms[0], "réunion")
    for other in rng.sample(seeded.people, 3):
        element.user_info(other.user_id)

    for name in names[14:]:  # later that day
        element.spotlight(name)
    for room in rooms[-2:]:
        element.send(room, "Merci, bien reçu.")
    return Day(person.user_id, element.usage)


def heavy_reader(
    server: Homeserver, person: Person, helper: Person, seeded: Seeded, seed: int
) -> Day:
    """A communications officer catching up: every room she is in, ten pages of 50
    back, then a second device logged in within the hour, whose Element syncs and
    fetches every thread it sees on its own (the threads started that morning by a
    colleague, `helper`), then opens each room. She may meet `message_history`'s
    limit; what her client fetched on its own must never block her."""
    rng = random.Random(seed)
    rooms = list(seeded.rooms_of[person.user_id])
    colleague = account_of(server, helper)
    for room in rooms:
        _start_thread(colleague, room)
    first = Element(account_of(server, person), rng)
    first.log_in_and_sync()
    for room in rooms:
        first.scroll_up(room, pages=10)
    login = server.login(person.localpart)
    if not login.ok:
        first.usage.refused.append(f"login: {login.status_code} {login.text[:80]}")
        return Day(person.user_id, first.usage)
    body = login.json()
    device = Account(server, person.user_id, body["access_token"], body["device_id"])
    second = Element(device, rng)
    second.usage = first.usage  # one user, two devices: one count
    second.log_in_and_sync()
    for room in rooms:
        second.fetch_thread_summaries(room)
        second.open_room(room)
    return Day(person.user_id, first.usage)


def _start_thread(author: Account, room: str) -> None:
    """A message and two replies in its thread."""
    base = f"/_matrix/client/v3/rooms/{quote(room)}/send/m.room.message"
    root = author.put(
        f"{base}/heavy-root", {"msgtype": "m.text", "body": "Point du jour"}
    )
    if not root.ok:
        return
    for n in range(2):
        author.put(
            f"{base}/heavy-reply{n}",
            {
                "msgtype": "m.text",
                "body": "Vu, merci.",
                "m.relates_to": {
                    "rel_type": "m.thread",
                    "event_id": root.json()["event_id"],
                },
            },
        )
