"""An ordinary user's Element, as it talks to the homeserver.

Element Web (and Desktop, the same code; the mobile apps behave alike on these
points) sends much more than a person clicks: it searches on every keystroke, loads
avatars by the hundred, fills the screen with history, polls a room it previews.
Each method does what Element does for one thing a person does, with the numbers of
element-web and matrix-js-sdk; the source each follows is named beside it.

What the guard must never do to this user is refuse it. A refusal is any answer the
guard gives (429, a step-up 401, a locked account, 503); Synapse's own answers that
Element expects and ignores (a 404 for a profile, the 403 of the admin check) are not.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

import attr
import requests

from harness.homeserver import Account

GUARD_ERRCODES = (
    "M_LIMIT_EXCEEDED",
    "M_USER_LOCKED",
    "org.matrix.msc4363.M_INSUFFICIENT_USER_AUTHENTICATION",
)
# matrix-js-sdk: lazy loading of members is on (element-web src/MatrixClientPeg.ts,
# `lazyLoadMembers`), and the first sync keeps 20 events a room (`initialSyncLimit`).
SYNC_FILTER = {
    "room": {"timeline": {"limit": 20}, "state": {"lazy_load_members": True}}
}
LAZY = quote(json.dumps({"lazy_load_members": True}))


@attr.define
class Usage:
    """What one Element sent, and what the guard answered it."""

    requests: int = 0
    refused: list[str] = attr.Factory(list)
    searches: int = 0
    thumbnails: int = 0
    people_shown: set[str] = attr.Factory(set)


class Element:
    def __init__(
        self, account: Account, rng: random.Random, device_pixel_ratio: int = 2
    ) -> None:
        self.account = account
        self.rng = rng
        self.dpr = device_pixel_ratio
        self.usage = Usage()
        self.since: str | None = None
        self.rooms: dict[str, dict[str, Any]] = {}  # joined room -> its sync state
        self._members_loaded: set[str] = set()

    # --- the HTTP, counted ------------------------------------------------------------

    def call(self, method: str, path: str, body: Any = None) -> requests.Response:
        response = self.account.request(
            method, path, json=body if method in ("POST", "PUT") else None
        )
        self.usage.requests += 1
        if response.status_code in (429, 503) or _errcode(response) in GUARD_ERRCODES:
            self.usage.refused.append(
                f"{method} {path.split('?')[0]}: {response.status_code} {_errcode(response)}"
            )
        return response

    def get(self, path: str) -> requests.Response:
        return self.call("GET", path)

    # --- opening the client ------------------------------------------------------------

    def log_in_and_sync(self) -> None:
        """A fresh login: versions, capabilities, push rules, the filter, the first
        sync (matrix-js-sdk src/client.ts `startClient`, src/sync.ts)."""
        self.get("/_matrix/client/versions")
        self.get("/_matrix/client/v3/capabilities")
        self.get("/_matrix/client/v3/pushrules/")
        user = quote(self.account.user_id)
        filtered = self.call(
            "POST", f"/_matrix/client/v3/user/{user}/filter", SYNC_FILTER
        )
        filter_id = filtered.json().get("filter_id", "") if filtered.ok else ""
        self.sync(filter_id, timeout=0)

    def sync(self, filter_id: str = "", timeout: int = 0) -> None:
        path = f"/_matrix/client/v3/sync?timeout={timeout}"
        if filter_id:
            path += f"&filter={quote(filter_id)}"
        if self.since:
            path += f"&since={quote(self.since)}"
        response = self.get(path)
        if not response.ok:
            return
        body = response.json()
        self.since = body.get("next_batch")
        for room_id, room in body.get("rooms", {}).get("join", {}).items():
            self.rooms[room_id] = room

    def room_list_avatars(self) -> None:
        """The room list shows each room's avatar, 32 px times the screen's pixel
        ratio, cropped (element-web src/components/views/avatars/RoomAvatar.tsx,
        src/customisations/Media.ts `getThumbnailOfSourceHttp`)."""
        for room_id in list(self.rooms):
            avatar = self._state(room_id, "m.room.avatar")
            if avatar.get("url"):
                self.thumbnail(avatar["url"], 32 * self.dpr, "crop")

    # --- reading rooms -----------------------------------------------------------------

    def open_room(self, room_id: str) -> list[dict[str, Any]]:
        """Opening a joined room: its members once a session (element-web
        src/components/structures/RoomView.tsx `loadMembersIfJoined`, matrix-js-sdk
        `Room.loadMembersIfNeeded`), a page of history to fill the screen
        (src/components/structures/TimelinePanel.tsx, PAGINATE_SIZE 50), the
        avatars of the members shown (96 px, src/.../MemberListViewModel.tsx) and of
        the senders (30 px), the pictures as thumbnails (800x600, MImageBody.tsx)."""
        if room_id not in self._members_loaded:
            self._members_loaded.add(room_id)
            at = f"&at={quote(self.since)}" if self.since else ""
            members = self.get(
                f"/_matrix/client/v3/rooms/{quote(room_id)}/members?not_membership=leave{at}"
            )
            if members.ok:
                for member in members.json().get("chunk", [])[:20]:  # those on screen
                    url = member.get("content", {}).get("avatar_url")
                    if url:
                        self.thumbnail(url, 96 * self.dpr, "crop")
        events = self.scroll_up(room_id, pages=1)
        for event in events[:30]:
            content = event.get("content", {})
            if content.get("msgtype") == "m.image" and content.get("url"):
                self.thumbnail(content["url"], 800, "scale", height=600)
        return events

    def scroll_up(self, room_id: str, pages: int) -> list[dict[str, Any]]:
        """Scrolling up: pages of 50, with lazily loaded members (TimelinePanel.tsx;
        matrix-js-sdk `createMessagesRequest`)."""
        events: list[dict[str, Any]] = []
        token = ""
        for _ in range(pages):
            response = self.get(
                f"/_matrix/client/v3/rooms/{quote(room_id)}/messages?dir=b&limit=50"
                f"&filter={LAZY}{token}"
            )
            if not response.ok:
                break
            body = response.json()
            events += body.get("chunk", [])
            if not body.get("end") or not body.get("chunk"):
                break
            token = f"&from={quote(body['end'])}"
        return events

    def fetch_thread_summaries(self, room_id: str) -> int:
        """What matrix-js-sdk fetches on its own for every thread a sync shows
        (`threadSupport`: src/models/thread.ts `fetchRootEvent` and
        `fetchEvents`): the root, then its replies newest first. Returns how many
        threads."""
        timeline = self.rooms.get(room_id, {}).get("timeline", {}).get("events", [])
        roots = {
            event["content"]["m.relates_to"]["event_id"]
            for event in timeline
            if event.get("content", {}).get("m.relates_to", {}).get("rel_type")
            == "m.thread"
        }
        roots |= {
            event["event_id"]
            for event in timeline
            if "m.thread" in event.get("unsigned", {}).get("m.relations", {})
        }
        room = quote(room_id)
        for root in sorted(roots):
            self.get(f"/_matrix/client/v3/rooms/{room}/event/{quote(root)}")
            self.get(
                f"/_matrix/client/v1/rooms/{room}/relations/{quote(root)}"
                "?dir=b&recurse=true&limit=30"
            )
        return len(roots)

    def open_reply(self, room_id: str, event_id: str) -> None:
        """A reply quotes an event not in memory: its context, without a limit
        (element-web src/components/views/elements/ReplyChain.tsx)."""
        self.get(
            f"/_matrix/client/v3/rooms/{quote(room_id)}/context/{quote(event_id)}"
            f"?filter={LAZY}"
        )

    def open_threads(self, room_id: str) -> None:
        """The threads panel (element-web ThreadPanel.tsx; matrix-js-sdk
        `Room.fetchRoomThreadList`): all threads, then the user's."""
        for include in ("all", "participated"):
            self.get(
                f"/_matrix/client/v1/rooms/{quote(room_id)}/threads"
                f"?include={include}&limit=30"
            )

    def search_messages(self, room_id: str, term: str) -> None:
        """Searching a room's messages (element-web src/Searching.ts)."""
        self.call(
            "POST",
            "/_matrix/client/v3/search",
            {
                "search_categories": {
                    "room_events": {
                        "search_term": term,
                        "filter": {"limit": 10, "rooms": [room_id]},
                        "order_by": "recent",
                        "event_context": {
                            "before_limit": 1,
                            "after_limit": 1,
                            "include_profile": True,
                        },
                    }
                }
            },
        )

    # --- finding people and rooms ------------------------------------------------------

    def spotlight(self, name: str) -> None:
        """Ctrl+K, People: a search of 50 on every keystroke, 100 ms debounce
        (element-web src/components/views/dialogs/spotlight/SpotlightDialog.tsx,
        src/hooks/useUserDirectory.ts, SECTION_LIMIT 50)."""
        for term in self._typed(name):
            self._search(term, 50)

    def invite_dialog(self, name: str) -> None:
        """Invite or start a chat: a search on every keystroke, no limit (the
        server's 10), 150 ms debounce; an address typed whole is also looked up
        (element-web src/components/views/dialogs/InviteDialog.tsx)."""
        for term in self._typed(name):
            self._search(term, None)
            if term.startswith("@") and ":" in term:
                self.get(f"/_matrix/client/v3/profile/{quote(term)}")

    def explore(self, term: str) -> list[str]:
        """Explore rooms: one filtered search of 50 on every keystroke, one page
        (element-web src/hooks/usePublicRoomDirectory.ts); the rooms found."""
        self.get("/_matrix/client/v3/thirdparty/protocols")
        found: list[str] = []
        for typed in self._typed(term):
            response = self.call(
                "POST",
                "/_matrix/client/v3/publicRooms",
                {"limit": 50, "filter": {"generic_search_term": typed}},
            )
            if response.ok:
                found = [room["room_id"] for room in response.json().get("chunk", [])]
        return found

    def preview(self, room_id: str, polls: int = 2) -> None:
        """Opening a room not joined, from Explore: a peek (matrix-js-sdk
        `peekInRoom`): its initial sync of 20, then the room's event stream."""
        self.get(f"/_matrix/client/v3/rooms/{quote(room_id)}/initialSync?limit=20")
        for _ in range(polls):
            self.get(f"/_matrix/client/v3/events?room_id={quote(room_id)}&timeout=0")

    def join(self, room_id: str) -> bool:
        return self.call("POST", f"/_matrix/client/v3/join/{quote(room_id)}", {}).ok

    def user_info(self, user_id: str) -> None:
        """A person's panel: the admin check (403 for everyone else, ignored), their
        devices (element-web src/components/views/right_panel/UserInfo.tsx)."""
        self.get(f"/_synapse/admin/v1/users/{quote(self.account.user_id)}/admin")
        self.call(
            "POST", "/_matrix/client/v3/keys/query", {"device_keys": {user_id: []}}
        )

    def send(self, room_id: str, text: str) -> None:
        txn = f"el{time.monotonic_ns()}"
        self.call(
            "PUT",
            f"/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.message/{txn}",
            {"msgtype": "m.text", "body": text},
        )

    # --- details -------------------------------------------------------------------------

    def thumbnail(self, mxc: str, size: int, method: str, height: int = 0) -> None:
        """An authenticated thumbnail (matrix-js-sdk `getHttpUriForMxc`,
        `useAuthentication`)."""
        server_name, _, media_id = mxc.removeprefix("mxc://").partition("/")
        self.usage.thumbnails += 1
        self.get(
            f"/_matrix/client/v1/media/thumbnail/{server_name}/{media_id}"
            f"?width={size}&height={height or size}&method={method}"
        )

    def _search(self, term: str, limit: int | None) -> None:
        body: dict[str, Any] = {"search_term": term}
        if limit is not None:
            body["limit"] = limit
        self.usage.searches += 1
        response = self.call("POST", "/_matrix/client/v3/user_directory/search", body)
        if response.ok:
            self.usage.people_shown.update(
                result["user_id"] for result in response.json().get("results", [])
            )

    def _typed(self, text: str) -> Iterable[str]:
        """What the search box holds after each keystroke of someone typing at
        100-250 ms a key: slower than the debounce, so every keystroke searches."""
        for end in range(1, len(text) + 1):
            time.sleep(self.rng.uniform(0.1, 0.25))
            yield text[:end]

    def _state(self, room_id: str, event_type: str) -> dict[str, Any]:
        room = self.rooms.get(room_id, {})
        for event in room.get("state", {}).get("events", []):
            if event.get("type") == event_type:
                content: dict[str, Any] = event.get("content", {})
                return content
        return {}


def _errcode(response: requests.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("errcode") if isinstance(body, dict) else None
