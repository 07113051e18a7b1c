"""Every route of the installed Synapse that reveals people, messages, rooms or media
is recognised, under every prefix Synapse serves it on.

The routes are walked from Synapse's own servlets (as the guard walks them); for each
pattern a URL is made under every prefix it accepts, checked against the pattern
itself, and classified. A servlet that a newer Synapse adds fails this test until it
is placed in one of the two tables below.
"""

from __future__ import annotations

import itertools
import re
from urllib.parse import parse_qs

import pytest

from synapse_tchap_guard._synapse_internals import client_routes
from synapse_tchap_guard.routes import ClientRoute, Reach, Routes, _query

# What each servlet's GET reveals: the guard must count it as this.
REVEALS = {
    "ProfileRestServlet": Reach.PROFILE,
    "ProfileFieldRestServlet": Reach.PROFILE,
    "UnstableProfileFieldRestServlet": Reach.PROFILE,
    "RoomMemberListRestServlet": Reach.MEMBERS,
    "JoinedRoomMemberListRestServlet": Reach.MEMBERS,
    "RoomStateRestServlet": Reach.MEMBERS,
    "RoomInitialSyncRestServlet": Reach.MEMBERS,
    "RoomStateEventRestServlet": Reach.STATE_EVENT,
    "RoomMessageListRestServlet": Reach.HISTORY,
    "RoomEventContextServlet": Reach.HISTORY,
    "RelationPaginationServlet": Reach.HISTORY,
    "ThreadsServlet": Reach.HISTORY,
    "RoomEventServlet": Reach.EVENT,
    "EventRestServlet": Reach.EVENT,
    "EventStreamRestServlet": Reach.ROOM_STREAM,
    "InitialSyncRestServlet": Reach.ALL_ROOMS,
    "DownloadResource": Reach.DOWNLOAD,
    "ThumbnailResource": Reach.THUMBNAIL,
}

# Servlets that return something of the kind, counted elsewhere or on purpose not.
ELSEWHERE = {
    "UserDirectorySearchRestServlet": "each result, by check_username_for_spam",
    "SearchRestServlet": "by the search handler, which has its body",
    "SyncRestServlet": "joined rooms only: their members are counted at the join",
    "SlidingSyncRestServlet": "joined rooms only: their members are counted at the join",
    "PublicRoomListRestServlet": "lists rooms anyone may join: reaching them counts",
    "RoomHierarchyRestServlet": "lists a space's rooms: reaching them counts",
    "RoomSummaryRestServlet": "a room's name and size, as the room directory shows",
    "UserMutualRoomsServlet": "the account's own rooms",
    "PresenceStatusRestServlet": "whether someone is online, not who they are",
    "NotificationsServlet": "the account's own notifications",
    "TimestampLookupRestServlet": "an event id, not its content",
    "JoinedRoomsRestServlet": "the account's own rooms",
    "RoomAliasListServlet": "a room's aliases",
    "ClientDirectoryServer": "an alias's room id",
    "ClientDirectoryListServer": "whether a room is listed",
    "MediaConfigResource": "the upload limit",
    "PreviewURLServlet": "a web page's preview",
    "ThreadSubscriptionsPaginationRestServlet": "the account's own subscriptions",
    "ThreadSubscriptionsRestServlet": "the account's own subscription",
    "AppserviceRoomMembershipRestServlet": "application services only",
    "RoomAccountDataServlet": "the account's own data",
    "RoomKeysServlet": "the account's own key backup",
    "RoomKeysVersionServlet": "the account's own key backup",
    "RoomKeysNewVersionServlet": "the account's own key backup",
    "DelayedEventServlet": "the account's own scheduled events",
    "DelayedEventsServlet": "the account's own scheduled events",
    "DehydratedDeviceEventsServlet": "the account's own device's messages",
    "ThirdPartyUserServlet": "users of bridged networks, from application services",
    "UsernameAvailabilityRestServlet": "asked without an account: see docs/operations.md",
}

# Names that say a servlet returns people, messages or rooms: each must be placed.
_SUSPECT = re.compile(
    r"Member|Profile|Message|Context|Event|Relation|Thread|Search|Sync|State|"
    r"Room|Directory|Summary|Hierarchy|Presence|Notification|Download|Thumbnail|"
    r"Media|Mutual|User"
)

_SAMPLES = {
    "room_id": "!room:example.org",
    "user_id": "@person:example.org",
    "event_id": "$event",
    "event_type": "m.room.member",
    "state_key": "@member:example.org",
    "server_name": "example.org",
    "media_id": "abcdef",
    "field_name": "displayname",
    "parent_id": "$parent",
    "relation_type": "m.thread",
}


def urls(route: ClientRoute) -> list[str]:
    """A URL under each prefix this route's pattern accepts."""
    pattern = route.pattern.pattern
    pattern = re.sub(r"\((?:/?\(\?P<\w+>[^)]*\))\)\?", "", pattern)  # optional parts
    pattern = re.sub(r"\(\?P<(\w+)>([^)]*)\)", _sample, pattern)
    pattern = pattern.removeprefix("^").removesuffix("$").replace("\\", "")
    versions = re.search(r"\(([^()]*\|[^()]*)\)", pattern)
    if versions is None:
        return [pattern]
    return [
        pattern[: versions.start()] + version + pattern[versions.end() :]
        for version in versions[1].split("|")
    ]


def _sample(group: re.Match[str]) -> str:
    """A value for a named group: its literal text if it has one (`displayname`)."""
    name, body = group[1], group[2]
    return body if re.fullmatch(r"[\w.]+", body) else _SAMPLES.get(name, "x")


@pytest.fixture(scope="module")
def walked() -> list[ClientRoute]:
    return client_routes()


def test_every_prefix_of_every_revealing_route_is_recognised(
    walked: list[ClientRoute],
) -> None:
    routes = Routes(walked)
    checked = set()
    for route in walked:
        if route.method != "GET" or route.servlet not in REVEALS:
            continue
        for url in urls(route):
            assert route.pattern.match(url), (route, url)  # the sample is right
            request = routes.match("GET", url)
            assert request is not None, url
            assert request.reach is REVEALS[route.servlet], url
            checked.add((route.servlet, url.split("/")[3]))
    assert {servlet for servlet, _ in checked} == set(REVEALS)
    # api/v1, r0, v3 and unstable for a profile; v1 for media and threads.
    assert {
        prefix for servlet, prefix in checked if servlet == "ProfileRestServlet"
    } == {
        "api",
        "r0",
        "v3",
        "unstable",
    }


def test_every_servlet_that_may_reveal_something_is_placed(
    walked: list[ClientRoute],
) -> None:
    unplaced = {
        route.servlet
        for route in walked
        if route.method == "GET"
        and _SUSPECT.search(route.servlet)
        and route.servlet not in REVEALS
        and route.servlet not in ELSEWHERE
    }
    assert unplaced == set()


def test_what_a_request_asks_is_read_as_synapse_reads_it(
    walked: list[ClientRoute],
) -> None:
    routes = Routes(walked)
    messages = routes.match(
        "GET", "/_matrix/client/v3/rooms/!r%3Ax/messages?dir=b&limit=50"
    )
    assert messages is not None
    assert (messages.room_id, messages.units) == ("!r:x", 50)
    capped = routes.match("GET", "/_matrix/client/r0/rooms/!r:x/messages?limit=99999")
    assert capped is not None and capped.units == 1000  # Synapse's cap
    context = routes.match("GET", "/_matrix/client/v3/rooms/!r:x/context/$e?limit=5000")
    assert context is not None and context.units == 5000  # Synapse has no cap there
    default = routes.match("GET", "/_matrix/client/v3/rooms/!r:x/context/$e")
    assert default is not None and default.units == 10
    peek = routes.match("GET", "/_matrix/client/v3/events?room_id=%21r%3Ax&timeout=1")
    assert peek is not None and peek.room_id == "!r:x"
    member = routes.match(
        "GET", "/_matrix/client/v3/rooms/!r:x/state/m.room.member/%40b%3Ax"
    )
    assert member is not None
    assert (member.reach, member.user_id) == (Reach.STATE_EVENT, "@b:x")
    head = routes.match("HEAD", "/_matrix/client/v1/media/download/x/abc")
    assert head is not None and head.reach is Reach.DOWNLOAD


def test_requests_that_reveal_nothing_are_settled_without_a_pattern(
    walked: list[ClientRoute],
) -> None:
    routes = Routes(walked)
    for method, url in [
        ("GET", "/_matrix/client/v3/sync?timeout=30000"),
        ("PUT", "/_matrix/client/v3/rooms/!r:x/send/m.room.message/1"),
        ("GET", "/_matrix/client/v3/account/whoami"),
        ("POST", "/_matrix/client/v3/rooms/!r:x/messages"),  # not a GET
        ("GET", "/_matrix/federation/v1/version"),
        ("GET", "/health"),
    ]:
        assert routes.match(method, url) is None, url


def test_a_query_is_read_as_parse_qs_reads_it() -> None:
    """The guard's own reading of a query (cheaper than `parse_qs` on every download)
    gives what `parse_qs` gives, first values kept, on every short query made of the
    characters that matter: separators, escapes, `+`, blanks."""
    pieces = ["a", "b", "=", "&", "%41", "%2", "+", ";", ""]
    for parts in itertools.product(pieces, repeat=4):
        raw = "".join(parts)
        expected = {name: values[0] for name, values in parse_qs(raw).items()}
        assert dict(_query(raw)) == expected, raw
