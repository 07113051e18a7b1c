"""Prometheus metrics, served on Synapse's own metrics endpoint.

They are counted from the audit events as they are written, so a dashboard and the
SIEM never disagree. Each process counts what it decided (sum them across workers);
like Synapse's own metrics, every series carries a `server_name` label.

`synapse_tchap_guard_hook_seconds` is the guard's own cost: the time spent in each of
its hooks on a request's path, and in each kind of its database work.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Coroutine
from functools import wraps
from typing import Any, ParamSpec, TypeVar

from prometheus_client import Counter, Gauge, Histogram

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
HOOK_SECONDS = Histogram(
    "synapse_tchap_guard_hook_seconds",
    "Time spent in the guard: each hook on a request's path (the per-request check,"
    " each counted control, joins, logins, searches, responses) and each kind of its"
    " database work (db:...)",
    [_LABEL, "hook"],
    buckets=HOOK_BUCKETS,
)

P = ParamSpec("P")
T = TypeVar("T")


class HookTimes:
    """Observes the time of the guard's hooks in `synapse_tchap_guard_hook_seconds`.

    An async hook is timed from its call to its answer, awaits included: the time the
    request waits on the guard (on the common path nothing is awaited, so it is the
    guard's own CPU time)."""

    def __init__(self, server_name: str) -> None:
        self._server_name = server_name

    def observe(self, hook: str, seconds: float) -> None:
        HOOK_SECONDS.labels(self._server_name, hook).observe(seconds)

    def timed(
        self, hook: str, func: Callable[P, Awaitable[T]]
    ) -> Callable[P, Coroutine[Any, Any, T]]:
        histogram = HOOK_SECONDS.labels(self._server_name, hook)

        @wraps(func)
        async def timed(*args: P.args, **kwargs: P.kwargs) -> T:
            started = time.perf_counter()
            try:
                return await func(*args, **kwargs)
            finally:
                histogram.observe(time.perf_counter() - started)

        return timed

    def timed_sync(self, hook: str, func: Callable[P, T]) -> Callable[P, T]:
        histogram = HOOK_SECONDS.labels(self._server_name, hook)

        @wraps(func)
        def timed(*args: P.args, **kwargs: P.kwargs) -> T:
            started = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                histogram.observe(time.perf_counter() - started)

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
