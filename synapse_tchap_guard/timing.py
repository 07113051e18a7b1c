"""The guard's own time, by hook and by kind of database work: a histogram on
Synapse's metrics endpoint (`synapse_tchap_guard_hook_seconds`).

A leaf: every part times itself, and none needs the rest of the metrics for it.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from functools import wraps
from itertools import accumulate
from time import perf_counter
from typing import Any, ParamSpec, TypeVar

from prometheus_client import REGISTRY
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

P = ParamSpec("P")
T = TypeVar("T")
_LABEL = "server_name"

# From 5 µs (a dictionary lookup or two) to a second (a stalled database).
HOOK_BUCKETS = (
    *(5e-6, 1e-5, 2e-5, 3e-5, 5e-5, 7.5e-5, 1e-4, 1.5e-4, 2e-4, 3e-4, 5e-4, 7.5e-4),
    *(1e-3, 2e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
# As Prometheus writes them in `le` (Python's repr is Go's format at these values).
_BOUNDS = [repr(bound) for bound in HOOK_BUCKETS] + ["+Inf"]
HOOK_SECONDS = "synapse_tchap_guard_hook_seconds"
_HOOK_HELP = (
    "Time spent in the guard: each hook on a request's path (the per-request check,"
    " joins, logins, searches, responses) and each kind of its database work (db:...)"
)


class _Buckets:
    """One series of the histogram. The guard's hooks run on Synapse's reactor thread,
    so a bisect and an increment suffice: prometheus_client's own histogram takes a
    lock and scans its buckets on every observation, which, on the cheapest request,
    was half of the guard's own time."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(HOOK_BUCKETS) + 1)  # the last: above every bound
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(HOOK_BUCKETS, seconds)] += 1
        self.total += seconds


class _HookTimesCollector(Collector):
    """Exposes every series as `synapse_tchap_guard_hook_seconds`, a histogram."""

    def __init__(self) -> None:
        self.series: dict[tuple[str, str], _Buckets] = {}

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(
            HOOK_SECONDS, _HOOK_HELP, labels=[_LABEL, "hook"]
        )
        for labels, buckets in sorted(self.series.items()):
            cumulative = accumulate(buckets.counts)
            family.add_metric(
                list(labels), list(zip(_BOUNDS, cumulative, strict=True)), buckets.total
            )
        yield family


_HOOK_TIMES = _HookTimesCollector()
REGISTRY.register(_HOOK_TIMES)


class HookTimes:
    """Observes the time of the guard's hooks in `synapse_tchap_guard_hook_seconds`.

    An async hook is timed from its call to its answer, awaits included: the time the
    request waits on the guard (on the common path nothing is awaited, so it is the
    guard's own CPU time)."""

    def __init__(self, server_name: str) -> None:
        self._server_name = server_name

    def _series(self, hook: str) -> _Buckets:
        key = (self._server_name, hook)
        series = _HOOK_TIMES.series.get(key)
        if series is None:  # not built on every call: `observe` runs per transaction
            series = _HOOK_TIMES.series[key] = _Buckets()
        return series

    def observe(self, hook: str, seconds: float) -> None:
        self._series(hook).observe(seconds)

    def timed(
        self, hook: str, func: Callable[P, Awaitable[T]]
    ) -> Callable[P, Coroutine[Any, Any, T]]:
        observe = self._series(hook).observe

        @wraps(func)
        async def timed(*args: P.args, **kwargs: P.kwargs) -> T:
            started = perf_counter()
            try:
                return await func(*args, **kwargs)
            finally:
                observe(perf_counter() - started)

        return timed

    def timed_sync(self, hook: str, func: Callable[P, T]) -> Callable[P, T]:
        observe = self._series(hook).observe

        @wraps(func)
        def timed(*args: P.args, **kwargs: P.kwargs) -> T:
            started = perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                observe(perf_counter() - started)

        return timed
