"""How much of Synapse's database the guard may take, and how long a request waits.

Synapse's connection pool serves everything it does (`cp_max` connections; 5 in a
small deployment). A query of the guard that waits (on a lock held on its tables, on
a database in trouble) holds its connection all along, so a guard free to run any
number of them would take the whole pool, and stall every request of every account.
So each transaction of the guard takes a slot in one of two lanes, per process:

- `REQUESTS`: what a request waits for (judging it, an admin's call). At most
  `slots` transactions at once; the request waits at most `deadline_ms` for its
  slot and its transaction together, then gets `StoreTimedOut` (a
  `StoreUnavailable`), so that `on_error` decides. Its statements are cancelled by
  the database after `statement_timeout_ms`, which gives the connection back.
- `BACKGROUND`: everything else (counts written behind, blocks reloaded, expiry,
  pruning): one transaction at a time, whose statements are cancelled after
  `statement_timeout_ms`; it waits as long as that takes.

The lane is that of the logging context the work runs in: a request's, or a
background process's. Work a request waits for with a deadline runs as a background
process of its own, so that it can outlive the wait; abandoned at the deadline, it
does not start its transaction if it has not yet.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import attr
from synapse.module_api import make_deferred_yieldable
from twisted.internet import defer

from synapse_tchap_guard.clock import Clock
from synapse_tchap_guard.deferreds import Waiters, in_request, wake, wake_with

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Runs `work()` as a background process of Synapse (see `TchapGuard`).
Spawn = Callable[[Callable[[], Coroutine[Any, Any, None]]], object]


@attr.frozen
class LaneLimits:
    slots: int  # transactions at once, a connection each
    statement_timeout_ms: int  # each statement, cancelled by the database after
    deadline_ms: int | None  # how long the caller waits, slot included (None: as long)


REQUESTS = LaneLimits(slots=2, statement_timeout_ms=2000, deadline_ms=2000)
BACKGROUND = LaneLimits(slots=1, statement_timeout_ms=10_000, deadline_ms=None)


class TimedOut(Exception):
    """The caller stopped waiting (the work itself goes on, or is abandoned)."""


class Abandoned(Exception):
    """The caller gave up before the transaction started: it must not run."""


@attr.define
class Ticket:
    """One caller's claim on a lane; `abandoned` once it stopped waiting."""

    abandoned: bool = False


class Lane:
    def __init__(self, limits: LaneLimits, clock: Clock, spawn: Spawn) -> None:
        self.limits = limits
        self._clock = clock
        self._spawn = spawn
        self._free = limits.slots
        self._waiting = Waiters()

    async def run(self, work: Callable[[Ticket], Awaitable[T]]) -> T:
        """`work(ticket)` in a slot; raises `TimedOut` past the deadline, if any."""
        ticket = Ticket()
        if self.limits.deadline_ms is None:
            return await self._in_slot(work, ticket)
        try:
            return await stop_waiting_after(
                self._clock,
                self._spawn,
                self.limits.deadline_ms,
                lambda: self._in_slot(work, ticket),
            )
        except TimedOut:
            ticket.abandoned = True
            raise

    @property
    def busy(self) -> int:
        """Slots taken now (for tests and the curious)."""
        return self.limits.slots - self._free

    async def _in_slot(
        self, work: Callable[[Ticket], Awaitable[T]], ticket: Ticket
    ) -> T:
        await self._acquire()
        try:
            if ticket.abandoned:
                raise Abandoned()
            return await work(ticket)
        finally:
            self._release()

    async def _acquire(self) -> None:
        if self._free > 0:
            self._free -= 1
            return
        await self._waiting.wait()  # the slot is handed over taken

    def _release(self) -> None:
        if not self._waiting.wake_one():
            self._free += 1


class Lanes:
    """The two lanes of one Synapse process."""

    def __init__(self, clock: Clock, spawn: Spawn) -> None:
        self._clock = clock
        self._spawn = spawn
        self.requests = Lane(REQUESTS, clock, spawn)
        self.background = Lane(BACKGROUND, clock, spawn)

    async def wait_briefly(self, work: Callable[[], Coroutine[Any, Any, None]]) -> bool:
        """Wait for `work()` no longer than a request waits for its tables; False if
        it is not done by then (it goes on, as a background process)."""
        assert REQUESTS.deadline_ms is not None
        try:
            await stop_waiting_after(
                self._clock, self._spawn, REQUESTS.deadline_ms, work
            )
        except TimedOut:
            return False
        return True

    def current(self) -> Lane:
        """The lane of the work running now: a request's, or the background's."""
        if in_request():
            return self.requests
        return self.background


async def stop_waiting_after(
    clock: Clock, spawn: Spawn, ms: int, work: Callable[[], Awaitable[T]]
) -> T:
    """The result of `work()`, or `TimedOut` after `ms`.

    The work runs as a background process, and is not cancelled at the deadline (a
    transaction cannot be stopped halfway): it is only no longer waited for.
    """
    outcome: defer.Deferred[T] = defer.Deferred()

    async def detached() -> None:
        try:
            result = await work()
        except Exception as error:
            if outcome.called and not isinstance(error, Abandoned):
                # Nobody waits any more: say that it ended, and how.
                logger.info(
                    "tchap_guard: work given up on at its deadline ended later with %s",
                    type(error).__name__,
                )
            wake_with(outcome, error)
        else:
            wake(outcome, result)

    spawn(detached)
    timer = clock.callLater(
        ms / 1000, wake_with, outcome, TimedOut(f"no answer within {ms} ms")
    )
    try:
        return await make_deferred_yieldable(outcome)
    finally:
        if timer.active():
            timer.cancel()
