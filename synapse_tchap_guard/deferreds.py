"""Waiting on the reactor: the one queue of waiting Deferreds every part uses.

A coroutine that must wait for something another coroutine will do (a load under
way, a free database slot, its turn, the tables at start-up) parks a Deferred in a
`Waiters` queue; whoever finishes wakes one or all of them. Waking keeps each side's
logging context, as Synapse's own `ObservableDeferred` does, so that Synapse's
per-request accounting stays right.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from typing import Any

from synapse.logging.context import PreserveLoggingContext, current_context
from synapse.module_api import make_deferred_yieldable
from twisted.internet import defer


def in_request() -> bool:
    """Whether this code runs for an HTTP request (not a background process)."""
    return current_context().request is not None


def wake(waiter: defer.Deferred[Any], result: Any = None) -> None:
    """Fire a Deferred others wait on (once; later calls do nothing)."""
    if not waiter.called:
        with PreserveLoggingContext():
            waiter.callback(result)


def wake_with(waiter: defer.Deferred[Any], error: Exception) -> None:
    """`wake`, raising `error` in the waiter."""
    if not waiter.called:
        with PreserveLoggingContext():
            waiter.errback(error)


class Waiters:
    """Coroutines waiting for the same thing, in the order they came."""

    def __init__(self) -> None:
        self._queue: deque[defer.Deferred[Any]] = deque()

    def __len__(self) -> int:
        return len(self._queue)

    async def wait(self) -> Any:
        """Wait until woken; returns what the waker gave (or raises its error)."""
        waiter: defer.Deferred[Any] = defer.Deferred()
        self._queue.append(waiter)
        return await make_deferred_yieldable(waiter)

    def wake_one(self, result: Any = None) -> bool:
        """Wake the longest waiting; False if nobody waits."""
        if not self._queue:
            return False
        wake(self._queue.popleft(), result)
        return True

    def wake_all(self, result: Any = None) -> None:
        queue, self._queue = self._queue, deque()
        for waiter in queue:
            wake(waiter, result)

    def fail_all(self, error: Exception) -> None:
        queue, self._queue = self._queue, deque()
        for waiter in queue:
            wake_with(waiter, error)


class Turns:
    """One coroutine at a time per key, in the order they came."""

    def __init__(self) -> None:
        self._busy: dict[Hashable, Waiters] = {}

    @asynccontextmanager
    async def of(self, key: Hashable) -> AsyncIterator[None]:
        waiting = self._busy.get(key)
        if waiting is None:
            self._busy[key] = Waiters()  # free: take it without waiting
        else:
            await waiting.wait()  # the turn is handed over taken
        try:
            yield
        finally:
            if not self._busy[key].wake_one():
                del self._busy[key]

    def busy(self, key: Hashable) -> bool:
        return key in self._busy
