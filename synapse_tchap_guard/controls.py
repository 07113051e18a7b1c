"""The counted controls: how each judges one more attempt and reports an account's standing.

A control is a name, words for people, and its rules. Joins and downloads follow a
`Quota` (limits per window, then a block threshold); the directory follows its
budgets and step-ups. Gates, the database path and the admin API only see `Control`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attr

from synapse_tchap_guard import policy
from synapse_tchap_guard.audit import format_timestamp
from synapse_tchap_guard.config import format_duration
from synapse_tchap_guard.policy import (
    AccountMarks,
    DirectoryRules,
    History,
    Quota,
    Threshold,
    Verdict,
)

Judge = Callable[[History, int, AccountMarks], Verdict]
Report = Callable[[History, int, AccountMarks], dict[str, Any]]


@attr.frozen
class Control:
    name: str
    label: str  # "public room joins", as in "Too many public room joins"
    longest_window_ms: int
    judge: Judge  # one more attempt at `now`, given the history and the marks
    report: Report  # the account's standing, for the admin API
    active: bool  # whether any rule is set at all


def quota_control(name: str, label: str, quota: Quota) -> Control:
    def judge(history: History, now: int, marks: AccountMarks) -> Verdict:
        return policy.evaluate(quota, history, now, marks.escalation_reset_ts)

    def report(history: History, now: int, marks: AccountMarks) -> dict[str, Any]:
        usage = policy.usage(quota, history, now, marks.escalation_reset_ts)
        limits: list[dict[str, Any]] = []
        block_at = None
        for entry in usage:
            rule = entry.rule
            described = _window(rule.window_ms)
            if isinstance(rule, Threshold):
                block_at = {**described, "attempts": entry.attempts, "max": rule.max}
                continue
            described.update(count=entry.attempts, max=rule.max)
            if rule.max_bytes is not None:
                described.update(bytes=entry.bytes, max_bytes=rule.max_bytes)
            limits.append(described)
        return {"limits": limits, "block_at": block_at}

    return Control(
        name=name,
        label=label,
        longest_window_ms=quota.longest_window_ms,
        judge=judge,
        report=report,
        active=bool(quota.limits) or quota.block_at is not None,
    )


def directory_control(rules: DirectoryRules) -> Control:
    def judge(history: History, now: int, marks: AccountMarks) -> Verdict:
        return policy.evaluate_discovery(
            rules, history, now, marks.stepped_up(now), marks.escalation_reset_ts
        )

    def report(history: History, now: int, marks: AccountMarks) -> dict[str, Any]:
        stepped_up = marks.stepped_up(now)
        budget = rules.budget(stepped_up)
        described: dict[str, Any] = {
            "budget": {
                **_window(budget.window_ms),
                "discovered": history.served_after(now - budget.window_ms),
                "max_profiles": budget.max_profiles,
                "stepped_up": stepped_up,
            },
            "last_step_up": _moment(marks.step_up_ts),
            "step_up_valid_until": _moment(marks.step_up_until_ts)
            if stepped_up
            else None,
        }
        if rules.block_at is not None:
            start = max(now - rules.block_at.window_ms, marks.escalation_reset_ts)
            described["block_at"] = {
                **_window(rules.block_at.window_ms),
                "refused": history.refused_after(start),
                "max": rules.block_at.max,
            }
        return described

    return Control(
        name="directory",
        label="directory lookups",
        longest_window_ms=rules.longest_window_ms,
        judge=judge,
        report=report,
        active=True,
    )


def _window(window_ms: int) -> dict[str, Any]:
    return {"window": format_duration(window_ms), "window_ms": window_ms}


def _moment(ts: int) -> str | None:
    return format_timestamp(ts) if ts else None
