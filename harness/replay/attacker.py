"""The hijacked account, driven as a scraping script is: by every route to the data.

It logs in with the phished password, lists the public rooms (and the ministry's
public space), and takes each room, largest first: a room anyone may read is read
without joining it, the others are joined (the space's rooms through the space). Of
each it takes the member list, the whole history in pages of 1,000 (and around
events with `/context`), and every attachment. It searches the messages of every room
it is in, enumerates the user directory name by name, and asks the profile of every
author it has no name for, through every URL prefix in turn. Refused requests are
retried (`retries` passes, a brief back-off, never Retry-After); a logged-out session
logs in again; it stops when the server will not let it back in.

It does not answer a step-up challenge: a script does not stop to re-authenticate.
"""

from __future__ import annotations

import collections
import itertools
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

import attr
import requests

from harness import demo
from harness.homeserver import PASSWORD, Account, Homeserver
from harness.replay.seed import Seeded

LOGGED_OUT = ("M_USER_LOCKED", "M_UNKNOWN_TOKEN")
PREFIXES = ("v3", "r0", "unstable", "api/v1")  # every prefix Synapse serves profiles on
SEARCH_WORDS = ("réunion", "note", "convention", "compte", "formulaire", "merci")


@attr.define
class Haul:
    """What the attacker got, by route, and what it was told."""

    rooms: dict[str, set[str]] = attr.Factory(lambda: collections.defaultdict(set))
    people: dict[str, set[str]] = attr.Factory(lambda: collections.defaultdict(set))
    messages: dict[str, set[str]] = attr.Factory(lambda: collections.defaultdict(set))
    media_files: set[str] = attr.Factory(set)
    me: str = ""  # the account itself, in the member lists it reads
    media_bytes: int = 0
    requests: int = 0
    refusals: collections.Counter[str] = attr.Factory(collections.Counter)
    first_refusal_s: float | None = None
    blocked_s: float | None = None
    duration_s: float = 0.0

    def everyone(self) -> set[str]:
        return set().union(*self.people.values()) - {self.me}

    def every_message(self) -> set[str]:
        return set().union(*self.messages.values())

    def every_room(self) -> set[str]:
        return set().union(*self.rooms.values())

    def as_json(self) -> dict[str, Any]:
        return {
            "rooms": {route: len(rooms) for route, rooms in self.rooms.items()},
            "rooms_reached": len(self.every_room()),
            "people": {route: len(people) for route, people in self.people.items()},
            "people_learned": len(self.everyone()),
            "messages": {route: len(ids) for route, ids in self.messages.items()},
            "messages_read": len(self.every_message()),
            "media_files": len(self.media_files),
            "media_bytes": self.media_bytes,
            "requests": self.requests,
            "refused": sum(self.refusals.values()),
            "refusals": dict(self.refusals),
            "first_refusal_after_s": self.first_refusal_s,
            "blocked_after_s": self.blocked_s,
            "duration_s": self.duration_s,
        }


class Blocked(Exception):
    """The server refuses the account, and refuses to log it in again."""


class Scraper:
    def __init__(
        self,
        server: Homeserver,
        localpart: str,
        seeded: Seeded,
        search_terms: list[str],
        retries: int,
    ) -> None:
        self._server = server
        self._localpart = localpart
        self._seeded = seeded
        self._terms = search_terms
        self._retries = retries
        self._account: Account | None = None
        self._started = 0.0
        self._prefixes = itertools.cycle(PREFIXES)
        self._already_in: set[str] = set()
        self.haul = Haul(me=seeded.victim.user_id)
        # What the report compares with: the server's public rooms (not the team
        # room the victim is in, which it reads as any member would).
        self._public_rooms = {*seeded.forums, seeded.space, *seeded.space_rooms}

    def run(self) -> Haul:
        self._started = time.monotonic()
        try:
            if not self._log_in():
                raise Blocked
            # The rooms the civil servant was in already are no conquest of the attack.
            joined = self._call("GET", "/_matrix/client/v3/joined_rooms")
            self._already_in = set(joined.json()["joined_rooms"]) if joined else set()
            rooms = self._list_rooms()
            media: list[str] = []
            terms = list(self._terms)
            authors: list[str] = []
            for attempt in range(1 + self._retries):
                if attempt:
                    time.sleep(0.2)  # a scraper's back-off: brief, never Retry-After
                media = [mxc for mxc in media if not self._download(mxc)]
                rooms = [room for room in rooms if not self._take_room(room, media)]
                self._search_messages()
                terms = [term for term in terms if not self._search_people(term)]
                authors = self._unnamed_authors() if not attempt else authors
                authors = [user for user in authors if not self._profile(user)]
                if not (rooms or media or terms or authors):
                    break
        except Blocked:
            self.haul.blocked_s = self._elapsed()
        self.haul.duration_s = self._elapsed()
        return self.haul

    # --- rooms -----------------------------------------------------------------------------

    def _list_rooms(self) -> list[str]:
        """The public room directory, then the space's rooms: largest first."""
        listed: list[tuple[int, str]] = []
        since = ""
        while True:
            page = self._call("GET", f"/_matrix/client/v3/publicRooms?limit=100{since}")
            if page is None:
                break
            body = page.json()
            listed += [
                (room["num_joined_members"], room["room_id"]) for room in body["chunk"]
            ]
            if "next_batch" not in body:
                break
            since = f"&since={quote(body['next_batch'])}"
        rooms = [room for _, room in sorted(listed, reverse=True)]
        space = self._seeded.space
        self._join(space, "joined")  # its rooms are open to its members
        hierarchy = self._call(
            "GET", f"/_matrix/client/v1/rooms/{quote(space)}/hierarchy"
        )
        if hierarchy is not None:
            rooms += [
                room["room_id"]
                for room in hierarchy.json().get("rooms", [])
                if room["room_id"] not in rooms
            ]
        return rooms

    def _take_room(self, room: str, media: list[str]) -> bool:
        """Reach a room, take its members, history and attachments; False to retry."""
        seeded = self._seeded
        if room not in self.haul.every_room():
            if room in seeded.readable:
                route = "read without joining"
            else:
                route = (
                    "joined through the space"
                    if room in seeded.space_rooms
                    else "joined"
                )
                if room in seeded.space_rooms and not self._join(
                    seeded.space, "joined"
                ):
                    return False
                if not self._join(room, route):
                    return False
        members = self._call("GET", f"/_matrix/client/v3/rooms/{quote(room)}/members")
        if members is None:
            return False
        if room in seeded.readable and room not in self._already_in:
            self.haul.rooms["read without joining"].add(room)
        self.haul.people["member lists"].update(
            event["state_key"] for event in members.json().get("chunk", [])
        )
        found = self._read_history(room)
        if found is None:
            return False
        for mxc in found:
            if not self._download(mxc):
                media.append(mxc)
        return True

    def _join(self, room: str, route: str) -> bool:
        if room in self.haul.every_room() or room in self._already_in:
            return True
        if self._call("POST", f"/_matrix/client/v3/join/{quote(room)}") is None:
            return False
        self.haul.rooms[route].add(room)
        return True

    def _read_history(self, room: str) -> list[str] | None:
        """The room's attachments once its whole history is read; None if refused."""
        attachments: list[str] = []
        since = ""
        newest = None
        while True:
            page = self._call(
                "GET",
                f"/_matrix/client/v3/rooms/{quote(room)}/messages?dir=b&limit=1000{since}",
            )
            if page is None:
                return None
            body = page.json()
            newest = newest or next((e["event_id"] for e in body["chunk"]), None)
            attachments += self._messages(body["chunk"], "history (/messages)")
            if not body["chunk"] or "end" not in body:
                break
            since = f"&from={quote(body['end'])}"
        if newest is not None:  # and around its newest event, as wide as it goes
            around = self._call(
                "GET",
                f"/_matrix/client/v3/rooms/{quote(room)}/context/{quote(newest)}?limit=1000",
            )
            if around is not None:
                context = around.json()
                self._messages(
                    context.get("events_before", []) + context.get("events_after", []),
                    "around events (/context)",
                )
        return attachments

    def _messages(self, events: Iterable[dict[str, Any]], route: str) -> list[str]:
        """Note the messages and their authors; the attachments they carry."""
        attachments = []
        public = self._public_rooms
        for event in events:
            if (
                event.get("type") != "m.room.message"
                or event.get("room_id") not in public
            ):
                continue
            self.haul.messages[route].add(event["event_id"])
            self.haul.people["message authors"].add(event["sender"])
            if "url" in event.get("content", {}):
                attachments.append(event["content"]["url"])
        return attachments

    def _search_messages(self) -> None:
        """The server's full-text search, over every room it is in, as wide as it goes."""
        for word in SEARCH_WORDS:
            response = self._call(
                "POST",
                "/_matrix/client/v3/search",
                json={
                    "search_categories": {
                        "room_events": {
                            "search_term": word,
                            "filter": {"limit": 100},
                            "event_context": {"before_limit": 3, "after_limit": 3},
                        }
                    }
                },
            )
            if response is None:
                return
            results = response.json()["search_categories"]["room_events"]["results"]
            for result in results:
                context = result.get("context", {})
                self._messages(
                    [
                        result["result"],
                        *context.get("events_before", []),
                        *context.get("events_after", []),
                    ],
                    "full-text search",
                )

    # --- people ----------------------------------------------------------------------------

    def _search_people(self, term: str) -> bool:
        response = self._call(
            "POST",
            "/_matrix/client/v3/user_directory/search",
            json={"search_term": term, "limit": 1000},  # as many as it is given
        )
        if response is None:
            return False
        self.haul.people["directory"].update(
            user["user_id"] for user in response.json()["results"]
        )
        return True

    def _unnamed_authors(self) -> list[str]:
        """Authors seen in messages, not in any member list: ask who they are."""
        known = self.haul.people["member lists"] | self.haul.people["directory"]
        return sorted(self.haul.people["message authors"] - known)

    def _profile(self, user_id: str) -> bool:
        prefix = next(self._prefixes)  # every prefix in turn
        response = self._call(
            "GET", f"/_matrix/client/{prefix}/profile/{quote(user_id)}"
        )
        if response is None:
            return False
        self.haul.people["profiles"].add(user_id)
        return True

    # --- media -----------------------------------------------------------------------------

    def _download(self, mxc: str) -> bool:
        if mxc in self.haul.media_files:
            return True
        server_name, media_id = mxc.removeprefix("mxc://").split("/", 1)
        response = self._call(
            "GET", f"/_matrix/client/v1/media/download/{server_name}/{media_id}"
        )
        if response is None:
            return False
        self.haul.media_files.add(mxc)
        self.haul.media_bytes += len(response.content)
        return True

    # --- the HTTP, as a script that ignores refusals does it -------------------------------

    def _call(
        self, method: str, path: str, again: bool = True, **kwargs: Any
    ) -> requests.Response | None:
        """The response if served; None if refused (noted); raises `Blocked`."""
        assert self._account is not None
        kwargs.setdefault("json", {} if method == "POST" else None)
        response = self._account.request(method, path, **kwargs)
        self.haul.requests += 1
        if response.ok:
            return response
        errcode = demo.errcode(response)
        self._refused(f"{response.status_code} {errcode}")
        if response.status_code == 401 and errcode in LOGGED_OUT:
            if not self._log_in():
                raise Blocked
            if again:
                return self._call(method, path, again=False, **kwargs)
        return None

    def _log_in(self) -> bool:
        response = self._server.login(self._localpart, PASSWORD)
        self.haul.requests += 1
        if not response.ok:
            self._refused(f"{response.status_code} {demo.errcode(response)} (login)")
            return False
        body = response.json()
        self._account = Account(
            self._server, body["user_id"], body["access_token"], body["device_id"]
        )
        return True

    def _refused(self, what: str) -> None:
        self.haul.refusals[what] += 1
        if self.haul.first_refusal_s is None:
            self.haul.first_refusal_s = self._elapsed()

    def _elapsed(self) -> float:
        return round(time.monotonic() - self._started, 2)
