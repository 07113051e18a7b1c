"""Prometheus metrics, served on Synapse's own metrics endpoint.

They are counted from the audit events as they are written, so a dashboard and the
SIEM never disagree. Each process counts what it decided (sum them across workers);
like Synapse's own metrics, every series carries a `server_name` label.

`synapse_tchap_guard_hook_seconds` is the guard's own cost: the time spent in each of
its hooks on a request's path, and in each kind of its database work.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter, Gauge

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
SYNAPSE = Gauge(
    "synapse_tchap_guard_synapse_info",
    "The Synapse the guard runs on: 1, with its version and whether this release of"
    ' the guard was tested with it (alert on tested="false")',
    [_LABEL, "version", "tested"],
)
BLOCKED_ACCOUNTS = Gauge(
    "synapse_tchap_guard_blocked_accounts",
    "Accounts blocked right now, as this process knows them",
    [_LABEL],
)


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
