"""Waiting for the guard's tables and blocks to be loaded when Synapse starts.

A module's `__init__` cannot wait for the database, so the schema is prepared in the
background while Synapse finishes starting. The few requests that may arrive before
it is done wait here, briefly. If that ever takes longer than `WAIT_SECONDS`, the
guard stops making requests wait until it is ready (and says so in its log).
"""

from __future__ import annotations

import logging

from synapse_tchap_guard.clock import Clock
from synapse_tchap_guard.deferreds import Waiters

logger = logging.getLogger(__name__)

WAIT_SECONDS = 10


class Readiness:
    def __init__(self, clock: Clock, what: str) -> None:
        self._clock = clock
        self._what = what  # for the log: "its tables", "the blocks in force"
        self.ready = False
        self._gave_up = False
        self._waiters = Waiters()

    def set_ready(self) -> None:
        self.ready = True
        self._waiters.wake_all()

    async def wait(self) -> bool:
        """Wait until ready; False if not ready within `WAIT_SECONDS` (or before)."""
        if self.ready:
            return True
        if self._gave_up:
            return False
        timeout = self._clock.callLater(WAIT_SECONDS, self._give_up)
        try:
            await self._waiters.wait()
        finally:
            if timeout.active():
                timeout.cancel()
        return self.ready

    def _give_up(self) -> None:
        """Nobody waits any more: requests go on without it (the log says why)."""
        if not self.ready and not self._gave_up:
            logger.error(
                "tchap_guard has not loaded %s after %ss", self._what, WAIT_SECONDS
            )
            self._gave_up = True
        self._waiters.wake_all()
