"""Prometheus metrics, served on Synapse's own metrics endpoint.

They are counted from the audit events as they are written, so a dashboard and the
SIEM never disagree. Each process counts what it decided (sum them across workers);
like Synapse's own metrics, every series carries a `server_name` label.

`synapse_tchap_guard_hook_seconds` is the guard's own cost: the time spent in each of
its hooks on a request's path, and in each kind of its database work.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from functools import wraps
from itertools import accumulate
from time import perf_counter
from typing import Any, ParamSpec, TypeVar

from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from synapse_tchap_guard.audit import AuditEvent

_LABEL = "server_name"

DECISIONS = Counter(
    "synapse_tchap_guard_decisions_total",
    "Requests the guard refused or blocked (or would have, in monitor mode)",
    [_LABEL, "control", "decision"],
)
STEP_UPS = Counter(
    "synapse_tchap_guard_step_ups_total",
    "Directory step-ups: asked of a client (required), passed, or failed",
    [_LABEL, "outcome"],
)
LOGINS_REFUSED = Counter(
    "synapse_tchap_guard_logins_refused_total",
    "Logins refused because the account is blocked",
    [_LABEL],
)
ADMIN_ACTIONS = Counter(
    "synapse_tchap_guard_admin_actions_total",
    "Calls to the guard's admin API that changed or viewed an account",
    [_LABEL, "action"],
)
OWNER_NOTICES = Counter(
    "synapse_tchap_guard_owner_notices_total",
    "Notices to account owners (of a block, a step-up, or a step-up code mailed)",
    [_LABEL, "channel", "about", "outcome"],
)
DATABASE_ERRORS = Counter(
    "synapse_tchap_guard_database_errors_total",
    "Requests the guard could not judge because its tables did not answer",
    [_LABEL, "control", "decision"],
)
BLOCKED_ACCOUNTS = Gauge(
    "synapse_tchap_guard_blocked_accounts",
    "Accounts blocked right now, as this process knows them",
    [_LABEL],
)

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

P = ParamSpec("P")
T = TypeVar("T")


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


# Decisions recorded as their own audit action (the event's `tchap_guard.decision`).
_DECISION_ACTIONS = frozenset(
    {"deny", "would_deny", "block", "would_block", "step_up_required"}
)
_STEP_UP_OUTCOMES = {
    "step_up_required": "required",
    "step_up_succeeded": "succeeded",
    "step_up_failed": "failed",
    "step_up_code_sent": "code_sent",
}
_OWNER_NOTICES = {"owner_notified": "sent", "owner_not_notified": "not_sent"}
_ADMIN_ACTIONS = {
    "admin_block": "block",
    "admin_unblock": "unblock",
    "admin_view": "view",
}


class GuardMetrics:
    """Counts audit events into this server's series."""

    def __init__(self, server_name: str, blocked_accounts: Callable[[], int]) -> None:
        self._server_name = server_name
        BLOCKED_ACCOUNTS.labels(server_name).set_function(blocked_accounts)
        LOGINS_REFUSED.labels(server_name)  # present, at 0, before the first one

    def observe(self, event: AuditEvent) -> None:
        action = event.action
        server = self._server_name
        guard = event.guard
        if action in _DECISION_ACTIONS:
            DECISIONS.labels(server, guard["control"], guard["decision"]).inc()
        if action in _STEP_UP_OUTCOMES:
            STEP_UPS.labels(server, _STEP_UP_OUTCOMES[action]).inc()
        elif action in _ADMIN_ACTIONS:
            ADMIN_ACTIONS.labels(server, _ADMIN_ACTIONS[action]).inc()
        elif action == "login_refused":
            LOGINS_REFUSED.labels(server).inc()
        elif action in _OWNER_NOTICES:
            OWNER_NOTICES.labels(
                server, guard["channel"], guard["about"], _OWNER_NOTICES[action]
            ).inc()
        elif action == "database_error":
            DATABASE_ERRORS.labels(server, guard["control"], guard["decision"]).inc()
