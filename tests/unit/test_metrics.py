"""Metrics are counted from the audit events: each action lands in its series."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from synapse_tchap_guard.audit import AuditEvent
from synapse_tchap_guard.metrics import GuardMetrics
from synapse_tchap_guard.timing import HookTimes
from tests.unit.fakes import run

SERVER = "metrics.unit.test"


def sample(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(
        f"synapse_tchap_guard_{name}", {"server_name": SERVER, **labels}
    )
    return value or 0.0


def event(action: str, **guard: str) -> AuditEvent:
    return AuditEvent(action=action, ts=0, user_id="@u:x", message="", guard=guard)


def test_each_action_counts_in_its_series_and_the_gauge_asks_the_registry() -> None:
    blocked = [3]
    metrics = GuardMetrics(SERVER, lambda: blocked[0])
    before = sample("decisions_total", control="media_downloads", decision="deny")
    metrics.observe(event("deny", control="media_downloads", decision="deny"))
    metrics.observe(event("step_up_required", control="directory", decision="deny"))
    metrics.observe(
        event("would_block", control="public_room_joins", decision="would_block")
    )
    metrics.observe(event("step_up_failed", control="directory"))
    metrics.observe(event("login_refused"))
    metrics.observe(event("admin_unblock"))
    metrics.observe(
        event("database_error", control="media_downloads", decision="allow")
    )
    metrics.observe(event("sessions_ended"))  # not a metric of its own
    metrics.observe(event("step_up_code_sent", control="directory"))
    metrics.observe(event("owner_notified", channel="email", about="block"))
    metrics.observe(
        event("owner_not_notified", channel="server_notice", about="step_up")
    )

    assert (
        sample("decisions_total", control="media_downloads", decision="deny")
        == before + 1
    )
    assert sample("decisions_total", control="directory", decision="deny") == 1
    assert sample("step_ups_total", outcome="required") == 1
    assert sample("step_ups_total", outcome="failed") == 1
    assert (
        sample("decisions_total", control="public_room_joins", decision="would_block")
        == 1
    )
    assert sample("logins_refused_total") == 1
    assert sample("admin_actions_total", action="unblock") == 1
    assert (
        sample("database_errors_total", control="media_downloads", decision="allow")
        == 1
    )
    assert sample("step_ups_total", outcome="code_sent") == 1
    assert (
        sample("owner_notices_total", channel="email", about="block", outcome="sent")
        == 1
    )
    assert (
        sample(
            "owner_notices_total",
            channel="server_notice",
            about="step_up",
            outcome="not_sent",
        )
        == 1
    )
    assert sample("blocked_accounts") == 3
    blocked[0] = 0
    assert sample("blocked_accounts") == 0


def test_each_hook_is_timed_in_its_series_even_when_it_raises() -> None:
    times = HookTimes(SERVER)

    async def check(user_id: str) -> bool:
        if not user_id:
            raise ValueError("refused")
        return False

    timed = times.timed("request", check)
    assert run(timed("@u:x")) is False
    with pytest.raises(ValueError):
        run(timed(""))
    finished = times.timed_sync("response", lambda request_id: None)
    finished("r1")
    times.observe("db:load", 0.002)

    assert timed.__name__ == "check"  # Synapse sees the hook it was given
    assert sample("hook_seconds_count", hook="request") == 2
    assert sample("hook_seconds_count", hook="response") == 1
    assert sample("hook_seconds_count", hook="db:load") == 1
    # Fine enough for microseconds: these hooks took well under a millisecond.
    assert sample("hook_seconds_bucket", hook="request", le="0.001") == 2
    assert sample("hook_seconds_bucket", hook="db:load", le="0.001") == 0
    assert sample("hook_seconds_bucket", hook="db:load", le="0.005") == 1
