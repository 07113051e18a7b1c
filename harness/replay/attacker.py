"""The hijacked account, driven as the June 2026 scraping script was: log in with the
phished password, list the public rooms, join them all, page through their history,
download every attachment, enumerate the directory; ignore refusals and retry them,
log in again when logged out; stop when the server will not let it back in, or after
`retries` passes over what was refused.

It does not answer a step-up challenge: a script does not stop to re-authenticate
(with the phished password it could, which the SIEM would show as
`step_up_succeeded`, and which lifts its budget only to `after_step_up`).
"""

from __future__ import annotations

import collections
import time
from typing import Any
from urllib.parse import quote

import attr
import requests

from harness import demo
from harness.homeserver import PASSWORD, Account, Homeserver

LOGGED_OUT = ("M_USER_LOCKED", "M_UNKNOWN_TOKEN")


@attr.define
class Haul:
    """What the attacker got, and what it was told."""

    public_rooms: int = 0
    rooms_joined: set[str] = attr.Factory(set)
    messages: int = 0
    media_files: set[str] = attr.Factory(set)
    media_bytes: int = 0
    people: set[str] = attr.Factory(set)
    requests: int = 0
    refusals: collections.Counter[str] = attr.Factory(collections.Counter)
    first_refusal_s: float | None = None
    blocked_s: float | None = None
    duration_s: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "public_rooms_listed": self.public_rooms,
            "rooms_joined": len(self.rooms_joined),
            "messages_read": self.messages,
            "media_files": len(self.media_files),
            "media_bytes": self.media_bytes,
            "profiles_enumerated": len(self.people),
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
        self, server: Homeserver, localpart: str, search_terms: list[str], retries: int
    ) -> None:
        self._server = server
        self._localpart = localpart
        self._terms = search_terms
        self._retries = retries
        self._account: Account | None = None
        self._started = 0.0
        self.haul = Haul()

    def run(self) -> Haul:
        self._started = time.monotonic()
        try:
            if not self._log_in():
                raise Blocked
            rooms = self._list_public_rooms()
            media: list[str] = []
            terms = list(self._terms)
            for attempt in range(1 + self._retries):
                if attempt:
                    time.sleep(
                        0.2
                    )  # a scraper's back-off: brief, and never Retry-After
                media = [mxc for mxc in media if not self._download(mxc)]
                rooms = [room for room in rooms if not self._scrape_room(room, media)]
                terms = [term for term in terms if not self._search(term)]
                if not (rooms or media or terms):
                    break
        except Blocked:
            self.haul.blocked_s = self._elapsed()
        self.haul.duration_s = self._elapsed()
        return self.haul

    # --- the scraping ----------------------------------------------------------------

    def _list_public_rooms(self) -> list[str]:
        rooms: list[str] = []
        since = ""
        while True:
            page = self._call("GET", f"/_matrix/client/v3/publicRooms?limit=20{since}")
            if page is None:
                break
            body = page.json()
            rooms += [room["room_id"] for room in body["chunk"]]
            if "next_batch" not in body:
                break
            since = f"&since={quote(body['next_batch'])}"
        self.haul.public_rooms = len(rooms)
        return rooms

    def _scrape_room(self, room: str, media: list[str]) -> bool:
        """Join, read the whole history, queue its attachments; False to retry."""
        if room not in self.haul.rooms_joined:
            if self._call("POST", f"/_matrix/client/v3/join/{quote(room)}") is None:
                return False
            self.haul.rooms_joined.add(room)
        found = self._read_history(room)
        if found is None:
            return False
        for mxc in found:
            if not self._download(mxc):
                media.append(mxc)
        return True

    def _read_history(self, room: str) -> list[str] | None:
        """The room's attachments, once its whole history is read; None if refused."""
        attachments: list[str] = []
        messages = 0
        since = ""
        while True:
            page = self._call(
                "GET",
                f"/_matrix/client/v3/rooms/{quote(room)}/messages?dir=b&limit=100{since}",
            )
            if page is None:
                return None
            body = page.json()
            for event in body["chunk"]:
                if event["type"] != "m.room.message":
                    continue
                messages += 1
                if "url" in event["content"]:
                    attachments.append(event["content"]["url"])
            if not body["chunk"] or "end" not in body:
                self.haul.messages += messages  # counted once, however many tries
                return attachments
            since = f"&from={quote(body['end'])}"

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

    def _search(self, term: str) -> bool:
        response = self._call(
            "POST",
            "/_matrix/client/v3/user_directory/search",
            json={"search_term": term, "limit": 50},
        )
        if response is None:
            return False
        self.haul.people.update(user["user_id"] for user in response.json()["results"])
        return True

    # --- the HTTP, as a script that ignores refusals does it -------------------------

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
