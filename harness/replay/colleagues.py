"""Ordinary users at work, at the same time as the attack: open the client, read their
rooms, join a forum or two, look a colleague up, open a few attachments, reply.
Any refusal they meet is a cost of the guard; the goal is none."""

from __future__ import annotations

import json
import random
from typing import Any
from urllib.parse import quote

import attr
import requests

from harness.homeserver import Homeserver
from harness.replay.seed import Person, Seeded, account_of

SYNC_FILTER = quote(json.dumps({"room": {"timeline": {"limit": 10}}}))


@attr.define
class Day:
    """One ordinary user's requests, and any refused."""

    requests: int = 0
    refused: list[str] = attr.Factory(list)


def day_at_work(server: Homeserver, person: Person, seeded: Seeded, seed: int) -> Day:
    rng = random.Random(seed)
    account = account_of(server, person)
    day = Day()

    def counted(response: requests.Response) -> requests.Response:
        day.requests += 1
        if not response.ok:
            sent = response.request
            path = (sent.path_url or "").split("?")[0]
            day.refused.append(f"{sent.method} {path}: {response.status_code}")
        return response

    counted(account.get(f"/_matrix/client/v3/sync?timeout=0&filter={SYNC_FILTER}"))
    rooms = list(seeded.rooms_of[person.user_id])
    new_forums = [room for room in seeded.forums if room not in rooms]
    for room in rng.sample(new_forums, min(len(new_forums), rng.choice((1, 2)))):
        if counted(account.join(room)).ok:
            rooms.append(room)
    for room in rooms:
        counted(
            account.get(
                f"/_matrix/client/v3/rooms/{quote(room)}/messages?dir=b&limit=30"
            )
        )

    colleague = rng.choice(seeded.people)
    found: list[dict[str, Any]] = []
    for term in (colleague.name.split()[1], colleague.name):  # typed as in a client
        response = counted(
            account.post(
                "/_matrix/client/v3/user_directory/search",
                {"search_term": term, "limit": 10},
            )
        )
        if response.ok:
            found = response.json()["results"] or found
    if found:
        counted(account.get(f"/_matrix/client/v3/profile/{quote(found[0]['user_id'])}"))

    attachments = [mxc for room in rooms for mxc in seeded.attachments.get(room, ())]
    images = [mxc for mxc in attachments if mxc in seeded.images]
    for mxc in rng.sample(images, min(3, len(images))):  # shown in the timeline
        counted(account.thumbnail(mxc, size=96))
    for mxc in rng.sample(attachments, min(2, len(attachments))):  # clicked
        counted(account.download(mxc))

    counted(
        account.put(
            f"/_matrix/client/v3/rooms/{quote(rooms[-1])}/send/m.room.message/reply{seed}",
            {"msgtype": "m.text", "body": "Merci, bien reçu."},
        )
    )
    return day
