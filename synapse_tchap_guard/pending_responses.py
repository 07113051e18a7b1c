"""Only what was served counts as served: counted requests wait for their response.

A gate counts a request before Synapse serves it (that is when it can refuse); the
response then says whether it was served after all. A join that failed (a remote
room that does not answer), a download Synapse could not send, a room that refused a
peek: each gives back what it was counted, and stays an attempt. A download adds the
bytes its response really sent.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

from synapse_tchap_guard.metrics import HookTimes
from synapse_tchap_guard.model import Line

# Requests counted and not answered yet: a few seconds' worth, at most.
MAX_PENDING = 10_000


class Counter(Protocol):
    def finish(self, line: Line, ok: bool, sent: int) -> None: ...


Waiting = list[tuple[Counter, Line, bool]]  # (counter, line, whether bytes count)


class PendingResponses:
    def __init__(self, times: HookTimes) -> None:
        # request id -> what its response amends
        self._pending: OrderedDict[str, Waiting] = OrderedDict()
        # Timed when a response amends something: for every other response, the guard
        # costs a dictionary lookup, less than timing it would.
        self._amend = times.timed_sync("response", _amend)

    def expect(
        self, request_id: str, counter: Counter, line: Line, sized: bool = False
    ) -> None:
        self._pending.setdefault(request_id, []).append((counter, line, sized))
        while len(self._pending) > MAX_PENDING:
            self._pending.popitem(last=False)

    def __len__(self) -> int:
        return len(self._pending)

    def on_finished(self, request_id: str, status: int, sent: int) -> None:
        """Called by Synapse once a response is over, while any is awaited."""
        waiting = self._pending.pop(request_id, None)
        if waiting is None:
            return
        self._amend(waiting, 200 <= status < 300, sent)


def _amend(waiting: Waiting, ok: bool, sent: int) -> None:
    for counter, line, sized in waiting:
        counter.finish(line, ok, sent if sized else 0)
