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

from harness.homeserver import Account, Homeserver
from harness.replay.seed import Person, Seeded

SYNC_FILTER = quote(json.dumps({"room": {"timeline": {"limit": 10}}}))


@attr.define
class Day:
    """One ordinary user's requests, and any refused."""

    requests: int = 0
    refused: list[str] = attr.Factory(list)


def day_at_work(server: Homeserver, person: Person, seeded: Seeded, seed: int) -> Day:
    rng = random.Random(seed)
    account = Account(server, person.user_id, person.token, "")
    day = Day()

    def call(method: str, path: str, body: Any = None) -> requests.Response:
        response = account.request(method, path, json=body)
        day.requests += 1
        if not response.ok:
            day.refused.append(f"{method} {path.split('?')[0]}: {response.status_code}")
        return response

    call("GET", f"/_matrix/client/v3/sync?timeout=0&filter={SYNC_FILTER}")
    rooms = list(seeded.rooms_of[person.user_id])
    new_forums = [room for room in seeded.forums if room not in rooms]
    for room in rng.sample(new_forums, min(len(new_forums), rng.choice((1, 2)))):
        if call("POST", f"/_matrix/client/v3/join/{quote(room)}").ok:
            rooms.append(room)
    for room in rooms:
        call("GET", f"/_matrix/client/v3/rooms/{quote(room)}/messages?dir=b&limit=30")

    colleague = rng.choice(seeded.people)
    found: list[dict[str, Any]] = []
    for term in (colleague.name.split()[1], colleague.name):  # typed as in a client
        response = call(
            "POST",
            "/_matrix/client/v3/user_directory/search",
            {"search_term": term, "limit": 10},
        )
        if response.ok:
            found = response.json()["results"] or found
    if found:
        call("GET", f"/_matrix/client/v3/profile/{quote(found[0]['user_id'])}")

    attachments = [mxc for room in rooms for mxc in seeded.attachments.get(room, ())]
    images = [mxc for mxc in attachments if mxc in seeded.images]
    opened = rng.sample(images, min(3, len(images)))  # shown in the timeline
    opened += rng.sample(attachments, min(2, len(attachments)))  # clicked
    for number, mxc in enumerate(opened):
        server_name, media_id = mxc.removeprefix("mxc://").split("/", 1)
        kind = "thumbnail" if number < 3 and mxc in seeded.images else "download"
        size = "?width=96&height=96&method=scale" if kind == "thumbnail" else ""
        call("GET", f"/_matrix/client/v1/media/{kind}/{server_name}/{media_id}{size}")

    reply = {"msgtype": "m.text", "body": "Merci, bien reçu."}
    txn = f"reply{seed}"
    call(
        "PUT",
        f"/_matrix/client/v3/rooms/{quote(rooms[-1])}/send/m.room.message/{txn}",
        reply,
    )
    return day
