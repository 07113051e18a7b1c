"""Which client requests reveal people, messages or rooms, whatever their URL prefix.

Synapse serves each client endpoint under several prefixes (`r0`, `v3`, `unstable`,
often `api/v1`, and `v1` for newer ones). A guard that knows one prefix of three
protects nothing, so the guard does not keep patterns of its own: it takes the ones
Synapse's own servlets register (`_synapse_internals.client_routes`), and says, for
the servlets that reveal something, what they reveal. A request is matched the way
Synapse routes it, only against those servlets' patterns, after a dictionary lookup
on the path's first segment: most requests are settled by that lookup alone.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import NamedTuple
from urllib.parse import unquote, unquote_plus

import attr


@attr.frozen
class ClientRoute:
    """A route of Synapse's client API, as one of its servlets registers it."""

    method: str
    pattern: re.Pattern[str]
    servlet: str  # the servlet's class name


class Reach(enum.Enum):
    """What a request reveals to the account that sends it."""

    PROFILE = "profile"  # one person's name and avatar
    MEMBERS = "members"  # a room's member list (and, for initialSync, its history)
    STATE_EVENT = "state event"  # one state event of a room (a member's, maybe)
    HISTORY = "history"  # messages of a room, as many as `limit` asks
    EVENT = "event"  # one event
    ROOM_STREAM = "room stream"  # new events of a room (peeking)
    ALL_ROOMS = "all rooms"  # every joined room's recent history (global initialSync)
    DOWNLOAD = "download"
    THUMBNAIL = "thumbnail"


@attr.frozen
class Reveals:
    """What the GET of a servlet reveals, and how much history its `limit` asks."""

    reach: Reach
    default_limit: int = 0
    max_limit: int | None = None  # as Synapse caps it; None: it does not


# By the name of the Synapse servlet that serves the request (the same from 1.142 to
# 1.163). The user directory search is counted result by result, by its own hook;
# `POST /search`, whose size is in its body, by the search handler's.
SERVLETS: Mapping[str, Reveals] = {
    "ProfileRestServlet": Reveals(Reach.PROFILE),
    "ProfileFieldRestServlet": Reveals(Reach.PROFILE),
    "UnstableProfileFieldRestServlet": Reveals(Reach.PROFILE),
    "RoomMemberListRestServlet": Reveals(Reach.MEMBERS),
    "JoinedRoomMemberListRestServlet": Reveals(Reach.MEMBERS),
    "RoomStateRestServlet": Reveals(Reach.MEMBERS),
    "RoomInitialSyncRestServlet": Reveals(Reach.MEMBERS, 10, 1000),
    "RoomStateEventRestServlet": Reveals(Reach.STATE_EVENT),
    "RoomMessageListRestServlet": Reveals(Reach.HISTORY, 10, 1000),
    "RoomEventContextServlet": Reveals(Reach.HISTORY, 10),
    "RelationPaginationServlet": Reveals(Reach.HISTORY, 5, 1000),
    "ThreadsServlet": Reveals(Reach.HISTORY, 5),
    "RoomEventServlet": Reveals(Reach.EVENT),
    "EventRestServlet": Reveals(Reach.EVENT),
    "EventStreamRestServlet": Reveals(Reach.ROOM_STREAM),
    "InitialSyncRestServlet": Reveals(Reach.ALL_ROOMS, 10, 1000),
    "DownloadResource": Reveals(Reach.DOWNLOAD),
    "ThumbnailResource": Reveals(Reach.THUMBNAIL),
}

_CLIENT = "/_matrix/client/"
_NOTHING: Mapping[str, str] = MappingProxyType({})


class Request(NamedTuple):
    """A request that reveals something, as the guard needs to know it (a tuple: it is
    built on every download)."""

    reach: Reach
    servlet: str
    room_id: str | None = None
    user_id: str | None = None  # the person looked up, or the member's state key
    event_type: str | None = None
    units: int = 1  # messages, for history
    query: Mapping[str, str] = _NOTHING
    path_params: Mapping[str, str] = _NOTHING


class Routes:
    def __init__(self, routes: Sequence[ClientRoute]) -> None:
        self._by_segment: dict[tuple[str, str], list[tuple[ClientRoute, Reveals]]] = {}
        for route in routes:
            reveals = SERVLETS.get(route.servlet)
            if reveals is None or route.method != "GET":
                continue
            key = (route.method, _first_segment(route.pattern.pattern))
            self._by_segment.setdefault(key, []).append((route, reveals))

    def servlets(self) -> set[str]:
        return {
            route.servlet for routes in self._by_segment.values() for route, _ in routes
        }

    def match(self, method: str, url: str) -> Request | None:
        """What this request reveals, if anything (None for most requests)."""
        if method == "HEAD":
            method = "GET"
        path, _, query = url.partition("?")
        if method != "GET" or not path.startswith(_CLIENT):
            return None
        rest = path[len(_CLIENT) :]  # after the version: api/v1, or one segment
        rest = rest[7:] if rest.startswith("api/v1/") else rest.partition("/")[2]
        candidates = self._by_segment.get((method, rest.partition("/")[0]))
        if not candidates:
            return None
        for route, reveals in candidates:
            match = route.pattern.match(path)
            if match is not None:
                groups = {k: _unquote(v) for k, v in match.groupdict().items() if v}
                return _request(route.servlet, reveals, groups, query)
        return None


def _request(
    servlet: str, reveals: Reveals, groups: Mapping[str, str], raw_query: str
) -> Request:
    query = _query(raw_query)
    units = 1
    if reveals.default_limit:
        units = _limit(query.get("limit"), reveals)
    room_id = groups.get("room_id") or (
        query.get("room_id") if reveals.reach is Reach.ROOM_STREAM else None
    )
    return Request(
        reach=reveals.reach,
        servlet=servlet,
        room_id=room_id,
        user_id=groups.get("user_id") or groups.get("state_key"),
        event_type=groups.get("event_type"),
        units=units,
        query=query,
        path_params=groups,
    )


def _query(raw: str) -> Mapping[str, str]:
    """A query string's parameters, the first value of each, as `parse_qs` reads them
    (blank values and pairs without `=` left out), without its cost on every download."""
    if not raw:
        return _NOTHING
    query: dict[str, str] = {}
    for pair in raw.split("&"):
        name, equals, value = pair.partition("=")
        if equals and value:
            query.setdefault(_unquote(name, plus=True), _unquote(value, plus=True))
    return query


def _unquote(text: str, plus: bool = False) -> str:
    """Percent-decoded (and `+` as a space, in a query), as Synapse decodes it."""
    if "%" in text or (plus and "+" in text):
        return unquote_plus(text) if plus else unquote(text)
    return text


def _limit(raw: str | None, reveals: Reveals) -> int:
    """The history a request asks for, as Synapse reads its `limit`."""
    try:
        limit = int(raw) if raw is not None else reveals.default_limit
    except ValueError:
        limit = reveals.default_limit  # Synapse answers 400: it will not count
    limit = max(limit, 0)
    if reveals.max_limit is not None:
        limit = min(limit, reveals.max_limit)
    return limit


def _first_segment(pattern: str) -> str:
    """The first path segment after the version, in a Synapse client pattern:
    `^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/...` gives `rooms`."""
    rest = pattern.removeprefix("^").removeprefix(_CLIENT)
    if rest.startswith("("):  # the versions
        rest = rest[rest.index(")") + 1 :].removeprefix("/")
    else:  # one version, written out
        rest = rest.partition("/")[2]
    segment = []
    escaped = False
    for char in rest:
        if escaped:
            segment.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char in "/($?[":
            break
        else:
            segment.append(char)
    return "".join(segment)
