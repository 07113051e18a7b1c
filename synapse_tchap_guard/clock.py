"""Time, as the guard reads it: Synapse's reactor, or a fake clock in tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class Clock(Protocol):
    """What the guard uses of Twisted's `IReactorTime`; `twisted.internet.task.Clock`
    is one, so tests move time instead of sleeping."""

    def seconds(self) -> float: ...

    # Returns an `IDelayedCall` (active(), cancel()), which mypy cannot see through.
    def callLater(
        self, delay: float, callable: Callable[..., object], *args: object, **kw: object
    ) -> Any: ...


def now_ms(clock: Clock) -> int:
    return int(clock.seconds() * 1000)
