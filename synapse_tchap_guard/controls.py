"""The counted controls: a name, words for people, and a quota.

Gates, the database path and the admin API only see `Control`: how it judges one more
request, how it reports a decision to the SIEM, and how an account stands against it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attr
from synapse.module_api.errors import SynapseError

from synapse_tchap_guard import policy, responses
from synapse_tchap_guard.audit import (
    AuditEvent,
    RequestInfo,
    describe_block,
    format_timestamp,
)
from synapse_tchap_guard.config import format_duration
from synapse_tchap_guard.model import Block
from synapse_tchap_guard.policy import (
    AccountMarks,
    Decision,
    History,
    Limit,
    Quota,
    Threshold,
    Verdict,
)


@attr.frozen
class Control:
    name: str
    label: str  # "public room joins", as in "Too many public room joins"
    quota: Quota
    # Whether it counts distinct targets (people): a target already served in the
    # window costs nothing more.
    distinct: bool = False

    @property
    def longest_window_ms(self) -> int:
        return self.quota.longest_window_ms

    @property
    def active(self) -> bool:
        return self.quota.active

    def judge(
        self,
        history: History,
        now: int,
        marks: AccountMarks,
        enforcing: bool,
        units: int = 1,
        repeat: bool = False,
    ) -> Verdict:
        """The verdict on one more request at `now`, under the configured mode."""
        verdict = policy.evaluate(self.quota, history, now, marks, units, repeat)
        return verdict.under(enforcing)

    def repeats(
        self,
        refused_since: Callable[[str | None, int], bool],
        target: str | None,
        now: int,
    ) -> bool:
        """Whether a request for `target` repeats a refusal still in the block
        threshold's window (then it cannot count towards a block)."""
        block_at = self.quota.block_at
        return block_at is not None and refused_since(target, now - block_at.window_ms)

    def window_for(self, marks: AccountMarks, now: int) -> int:
        """How far back a distinct target counts as already served."""
        limits = self.quota.limits_for(marks.stepped_up(now))
        return max((limit.window_ms for limit in limits), default=0)

    def refusal(self, verdict: Verdict, step_up_url: str) -> SynapseError:
        """What the client of a refused request gets: a 429 it knows, or, when
        re-authenticating would lift the limit, a 401 that says where."""
        rule = verdict.rule
        assert isinstance(rule, Limit) and verdict.retry_after_ms is not None
        if verdict.step_up and self.quota.step_up is not None:
            return responses.step_up_required(
                self.label,
                step_up_url,
                self.quota.step_up.valid_for_ms,
                verdict,
            )
        return responses.limit_exceeded(self.label, verdict)

    def block_reason(self, verdict: Verdict) -> str:
        assert verdict.rule is not None
        window = format_duration(verdict.rule.window_ms)
        return f"too many {self.label}: {verdict.count} {verdict.measure.value} in {window}"

    def events(
        self,
        user_id: str,
        target: str | None,
        verdict: Verdict,
        block: Block | None,
        now: int,
        request: RequestInfo | None,
        mode: str,
        details: Mapping[str, object] | None = None,
    ) -> tuple[AuditEvent, ...]:
        """The events that report a verdict (none for an allowed request)."""
        rule = verdict.rule
        decision = verdict.decision
        if not decision.reported or rule is None:
            return ()
        window = format_duration(rule.window_ms)
        guard: dict[str, object] = {
            "control": self.name,
            "mode": mode,
            "decision": decision.value,
            "window": window,
            "window_ms": rule.window_ms,
            "measure": verdict.measure.value,
            "count": verdict.count,
            "limit": verdict.rule_max,
            "target": target,
            **(details or {}),
        }
        if verdict.retry_after_ms is not None:
            guard["retry_after_ms"] = verdict.retry_after_ms
        if self.quota.step_up is not None:
            guard["step_up_required"] = verdict.step_up
        if block is not None:
            guard["block"] = describe_block(block)
        if decision.escalates:
            reason = self.block_reason(verdict)
        else:
            reason = f"limit of {verdict.rule_max} {self.label} per {window} reached"
        action = decision.value
        if decision is Decision.DENY and verdict.step_up:
            action = "step_up_required"
        return (
            AuditEvent(
                action=action,
                ts=now,
                user_id=user_id,
                message=(
                    f"{action}: {user_id}, {self.label}"
                    f" {verdict.count}/{verdict.rule_max} in {window}"
                ),
                reason=reason,
                request=request,
                guard=guard,
            ),
        )

    def report(self, history: History, now: int, marks: AccountMarks) -> dict[str, Any]:
        """The account's standing against each rule, for the admin API."""
        limits: list[dict[str, Any]] = []
        block_at = None
        for entry in policy.usage(self.quota, history, now, marks):
            rule = entry.rule
            described = _window(rule.window_ms)
            if isinstance(rule, Threshold):
                block_at = {
                    **described,
                    rule.counts.value: entry.count,
                    "max": rule.max,
                }
                continue
            assert isinstance(rule, Limit)
            described.update(count=entry.count, max=rule.max)
            if rule.max_bytes is not None:
                described.update(bytes=entry.bytes, max_bytes=rule.max_bytes)
            limits.append(described)
        standing: dict[str, Any] = {"limits": limits, "block_at": block_at}
        if self.quota.step_up is not None:
            stepped_up = marks.stepped_up(now)
            standing["step_up"] = {
                "stepped_up": stepped_up,
                "valid_until": _moment(marks.step_up_until_ts) if stepped_up else None,
                "last": _moment(marks.step_up_ts),
            }
        return standing


def _window(window_ms: int) -> dict[str, Any]:
    return {"window": format_duration(window_ms), "window_ms": window_ms}


def _moment(ts: int) -> str | None:
    return format_timestamp(ts) if ts else None
