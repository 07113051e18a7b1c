"""Message history: what an account reads back, by any route, weighed by what it asks.

`/messages`, `/context`, `/event`, `/relations`, `/threads`, a room's `initialSync`,
the global `initialSync`, `POST /search`, and reads of rooms the account is not in
all count (`message_history`), each as many messages as the request may return: its
`limit`, capped as Synapse caps it (an uncapped `limit` counts whole: a single
request larger than a window's maximum is refused). Live timelines, through `/sync`
and `/events`, are ordinary use and never count. What a client fetches on its own
(`request_check.automatic`) is counted, but never towards a block.
"""

from __future__ import annotations

from typing import Any

from synapse.logging.context import ContextRequest

from synapse_tchap_guard import _synapse_internals as internals
from synapse_tchap_guard.controls import Control
from synapse_tchap_guard.counting.records import Charge
from synapse_tchap_guard.gates.admission import Admission

# Synapse's defaults for a `POST /search` body (api/filtering.py, handlers/search.py).
_SEARCH_LIMIT = 10
_SEARCH_CONTEXT = 5


class HistoryGate:
    def __init__(self, admission: Admission, control: Control) -> None:
        self._admission = admission
        self._control = control
        self.active = control.active

    async def read(
        self,
        user_id: str,
        request: ContextRequest | None,
        room_id: str | None,
        messages: int,
        route: str,
        automatic: bool = False,
    ) -> None:
        if not self.active or messages <= 0:
            return
        charge = Charge(room_id, messages, {"route": route}, automatic)
        await self._admission.admit(user_id, request, self._control, charge)

    async def search(self, user_id: str, body: Any) -> None:
        """`POST /search`: as many results as its filter asks, with their context."""
        await self.read(
            user_id, internals.current_request(), None, search_size(body), "search"
        )


def search_size(body: Any) -> int:
    """How many messages a search may return, as Synapse reads its body."""
    room_events = _mapping(_mapping(body).get("search_categories")).get("room_events")
    room_events = _mapping(room_events)
    limit = _count(_mapping(room_events.get("filter")).get("limit"), _SEARCH_LIMIT)
    context = room_events.get("event_context")
    if not isinstance(context, dict):
        return limit
    before = _count(context.get("before_limit"), _SEARCH_CONTEXT)
    after = _count(context.get("after_limit"), _SEARCH_CONTEXT)
    return limit * (1 + before + after)


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _count(value: Any, default: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        return default  # Synapse refuses it, or reads its default
    return max(0, value)
