"""Waiting for the guard's tables and blocks to be loaded when Synapse starts.

A module's `__init__` cannot wait for the database, so the schema is prepared in the
background while Synapse finishes starting. The few requests that may arrive before
it is done wait here, briefly; past the timeout `on_error` decides for them.
"""

from __future__ import annotations

from synapse.module_api import make_deferred_yieldable
from twisted.internet import defer, reactor

WAIT_SECONDS = 10


class Readiness:
    def __init__(self) -> None:
        self.ready = False
        self._waiters: list[defer.Deferred[None]] = []

    def set_ready(self) -> None:
        self.ready = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.called:
                waiter.callback(None)

    async def wait(self) -> bool:
        """Wait until ready; False if that took longer than `WAIT_SECONDS`."""
        if self.ready:
            return True
        waiter: defer.Deferred[None] = defer.Deferred()
        waiter.addTimeout(WAIT_SECONDS, reactor)
        self._waiters.append(waiter)
        try:
            await make_deferred_yieldable(waiter)
        except defer.TimeoutError:
            return False
        return True
