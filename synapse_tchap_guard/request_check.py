"""The check Synapse runs while authenticating every request of a regular account.

Synapse calls the account-validity hook `is_user_expired` from `get_user_by_req`, on
every process, for every authenticated request but logout. It is the one place to
refuse a blocked account's every request, and to see, before Synapse serves them,
the requests that have no hook of their own: those that reveal people, messages,
rooms or media (`routes`). It must cost next to nothing: a lookup in this process's
copy of the blocks in force, and a dictionary lookup that settles most requests.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from synapse.logging.context import ContextRequest

from synapse_tchap_guard import _synapse_internals as internals
from synapse_tchap_guard import responses
from synapse_tchap_guard.block_registry import BlockRegistry
from synapse_tchap_guard.context import GuardContext
from synapse_tchap_guard.readiness import Readiness
from synapse_tchap_guard.routes import Reach, Request, Routes

# What the gates do with a request that reveals something (see `gates`): each
# counts it, or raises the client's error.
FetchesMedia = Callable[[str, ContextRequest, Request], Awaitable[None]]
ReadsRoom = Callable[[str, ContextRequest, str], Awaitable[bool]]  # True: a peek
# (user, request, room or None, messages, route, fetched by the client on its own)
ReadsHistory = Callable[
    [str, ContextRequest, str | None, int, str, bool], Awaitable[None]
]
LooksUp = Callable[[str, ContextRequest, str], Awaitable[None]]  # a person


class RequestCheck:
    def __init__(
        self,
        context: GuardContext,
        registry: BlockRegistry,
        loaded: Readiness,
        routes: Routes,
        fetch_media: FetchesMedia,
        read_room: ReadsRoom,
        read_history: ReadsHistory,
        look_up: LooksUp | None,
    ) -> None:
        self._context = context
        self._registry = registry
        self._loaded = loaded  # the blocks in force were read once
        self._routes = routes
        self._fetch_media = fetch_media
        self._read_room = read_room
        self._read_history = read_history
        self._look_up = look_up  # None: people are not counted

    async def is_user_expired(self, user_id: str) -> bool | None:
        """Refuse a blocked account's requests; None lets other modules decide."""
        request = internals.current_request()
        if self._loaded.ready or await self._loaded.wait():
            block = None
            if user_id in self._registry:
                block = self._registry.in_force(user_id, self._context.now())
        else:
            # The blocks could not be loaded, so none is known (the log says why).
            # Counted requests still follow `on_error`; the rest goes on: a broken
            # guard must not take the whole homeserver down.
            block = None
        if not internals.authenticating(request):
            # Pushers and account-status lookups: a blocked account is not served.
            return True if block is not None else None
        if block is not None:
            raise responses.account_blocked(block)
        route = self._routes.match(request.method, request.url)
        if route is not None:
            await self._count(user_id, request, route)
        return None

    async def _count(
        self, user_id: str, request: ContextRequest, route: Request
    ) -> None:
        """Count what the request reveals, in every control concerned (raises)."""
        reach = route.reach
        if reach in (Reach.DOWNLOAD, Reach.THUMBNAIL):
            await self._fetch_media(user_id, request, route)
            return
        look_up = self._look_up
        if reach is Reach.PROFILE:
            if look_up is not None and route.user_id:
                await look_up(user_id, request, route.user_id)
            return
        if reach is Reach.ALL_ROOMS:  # every joined room's recent history
            rooms = await internals.joined_rooms(self._context.api, user_id)
            units = route.units * len(rooms)
            await self._read_history(
                user_id, request, None, units, route.servlet, False
            )
            return
        if route.room_id is not None:  # a room read without a join is a room reached
            await self._read_room(user_id, request, route.room_id)
        if reach in (Reach.HISTORY, Reach.EVENT) or (
            reach is Reach.MEMBERS and route.servlet == "RoomInitialSyncRestServlet"
        ):
            await self._read_history(
                user_id,
                request,
                route.room_id,
                route.units,
                route.servlet,
                automatic(route),
            )


# What Element's SDKs fetch without a person's act (matrix-js-sdk: a thread's root
# and its summary, `/event/{root}` and `/relations/{root}?dir=b&recurse=true`, for
# every thread a sync or an opened room shows; a jump to an event asks `/context`
# with `limit=0`, which costs nothing). Still counted and refused by the limits, never towards a block: a
# client that retries them on its own shows no intent (see `policy.evaluate`).
_AUTOMATIC = frozenset({"RoomEventServlet", "EventRestServlet"})


def automatic(route: Request) -> bool:
    if route.servlet in _AUTOMATIC:
        return True
    if route.servlet != "RelationPaginationServlet":
        return False
    recurse = route.query.get("recurse", route.query.get("org.matrix.msc3981.recurse"))
    return recurse in ("true", "1")
