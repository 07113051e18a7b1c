"""Only what was served counts as served: counted requests wait for their response.

A gate counts a request before Synapse serves it (that is when it can refuse); the
response then says whether it was served after all. A join that failed (a remote
room that does not answer), a download Synapse could not send, a room that refused a
peek: each gives back what it was counted, and stays an attempt. A download adds the
bytes its response really sent.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from synapse_tchap_guard.counting.layout import Pending
from synapse_tchap_guard.timing import HookTimes

# Requests counted and not answered yet: a few seconds' worth, at most.
MAX_AWAITED = 10_000

# (the request as counted, whether its response was a success, the bytes that count)
Finish = Callable[[Pending, bool, int], None]
Awaited = list[tuple[Pending, bool]]  # (what is awaited, whether its bytes count)


class AwaitedResponses:
    def __init__(self, finish: Finish, times: HookTimes) -> None:
        self._finish = finish
        self._awaited: OrderedDict[str, Awaited] = OrderedDict()  # by request id
        # Timed when a response amends something: for every other response, the guard
        # costs a length check, less than timing it would.
        self._amend = times.timed_sync("response", self._amend_now)

    def expect(self, request_id: str, pending: Pending, sized: bool = False) -> None:
        self._awaited.setdefault(request_id, []).append((pending, sized))
        while len(self._awaited) > MAX_AWAITED:
            self._awaited.popitem(last=False)

    def __len__(self) -> int:
        return len(self._awaited)

    def on_finished(self, request_id: str, status: int, sent: int) -> None:
        """Called by Synapse once a response is over, while any is awaited."""
        awaited = self._awaited.pop(request_id, None)
        if awaited is not None:
            self._amend(awaited, 200 <= status < 300, sent)

    def _amend_now(self, awaited: Awaited, ok: bool, sent: int) -> None:
        for pending, sized in awaited:
            self._finish(pending, ok, sent if sized else 0)
