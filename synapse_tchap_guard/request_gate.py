"""The check Synapse runs while authenticating every request of a regular account.

Synapse calls the account-validity hook `is_user_expired` from `get_user_by_req`, on
every process, for every authenticated request but logout. It is the one place to
refuse a blocked account's every request, and to see, before Synapse serves them,
the requests that have no hook of their own: those that reveal people, messages,
rooms or media (`routes`). It must cost next to nothing: a lookup in this process's
copy of the blocks in force, and a dictionary lookup that settles most requests.
"""

from __future__ import annotations

from synapse.logging.context import ContextRequest

from synapse_tchap_guard import _synapse_internals as internals
from synapse_tchap_guard import responses
from synapse_tchap_guard.blocks import Blocking
from synapse_tchap_guard.context import GuardContext
from synapse_tchap_guard.gates.history import HistoryGate
from synapse_tchap_guard.gates.media import MediaGate
from synapse_tchap_guard.gates.people import PeopleGate
from synapse_tchap_guard.gates.rooms import RoomsGate
from synapse_tchap_guard.routes import Reach, Request, Routes


class RequestGate:
    def __init__(
        self,
        context: GuardContext,
        blocking: Blocking,
        routes: Routes,
        media: MediaGate,
        rooms: RoomsGate,
        history: HistoryGate,
        people: PeopleGate | None,
    ) -> None:
        self._context = context
        self._registry = blocking.registry
        self._loaded = blocking.loaded
        self._routes = routes
        self._media = media
        self._rooms = rooms
        self._history = history
        self._people = people

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
            await self._media.fetch(user_id, request, route)
            return
        people = self._people
        if reach is Reach.PROFILE:
            if people is not None and route.user_id:
                await people.profile(user_id, request, route.user_id)
            return
        if reach is Reach.ALL_ROOMS:  # every joined room's recent history
            rooms = await internals.joined_rooms(self._context.api, user_id)
            units = route.units * len(rooms)
            await self._history.read(user_id, request, None, units, route.servlet)
            return
        if route.room_id is not None:  # a room read without a join is a room reached
            await self._rooms.read(user_id, request, route.room_id)
        if reach in (Reach.HISTORY, Reach.EVENT) or (
            reach is Reach.MEMBERS and route.servlet == "RoomInitialSyncRestServlet"
        ):
            await self._history.read(
                user_id, request, route.room_id, route.units, route.servlet
            )
