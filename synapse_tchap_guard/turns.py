"""Coroutines that take turns: one at a time per key, in the order they came."""

from __future__ import annotations

from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager

from synapse.module_api import make_deferred_yieldable
from twisted.internet import defer

from synapse_tchap_guard import _synapse_internals as internals


class Turns:
    def __init__(self) -> None:
        self._waiting: dict[Hashable, list[defer.Deferred[None]]] = {}

    @asynccontextmanager
    async def of(self, key: Hashable) -> AsyncIterator[None]:
        waiting = self._waiting.get(key)
        if waiting is None:
            self._waiting[key] = []  # free: take it without waiting
        else:
            turn: defer.Deferred[None] = defer.Deferred()
            waiting.append(turn)
            await make_deferred_yieldable(turn)
        try:
            yield
        finally:
            waiting = self._waiting[key]
            if waiting:
                internals.wake(waiting.pop(0))
            else:
                del self._waiting[key]

    def busy(self, key: Hashable) -> bool:
        return key in self._waiting
