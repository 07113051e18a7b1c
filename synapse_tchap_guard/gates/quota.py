"""Counting one control's attempts against its quota, shared by every counted control.

Data flows one way: the gate asks the store to judge the attempt (the store reads the
account's history and applies `decide`, the pure policy, in one transaction), then
logs the events, enforces a new block, and answers with an error or lets it through.
"""

from __future__ import annotations

from collections.abc import Mapping

from synapse_tchap_guard import policy, responses
from synapse_tchap_guard.audit import AuditEvent, RequestInfo
from synapse_tchap_guard.blocks import Blocking, describe_block
from synapse_tchap_guard.config import format_duration
from synapse_tchap_guard.context import GuardContext
from synapse_tchap_guard.controls import Control
from synapse_tchap_guard.policy import AccountMarks, Attempt, Decision, Verdict
from synapse_tchap_guard.store import Block, NewBlock, Ruling


class QuotaGate:
    def __init__(
        self, context: GuardContext, blocking: Blocking, control: Control
    ) -> None:
        self._context = context
        self._blocking = blocking
        self.control = control

    async def check(
        self,
        user_id: str,
        target: str | None,
        request: RequestInfo | None,
        details: Mapping[str, object] | None = None,
    ) -> int | None:
        """Count one attempt; raise the client's error if it is refused.

        Returns the stored attempt's id, or None when nothing was stored because the
        database could not answer and `on_error` let the attempt through.
        """
        context = self._context
        control = self.control
        now = context.now()

        def decide(history: list[Attempt], marks: AccountMarks) -> Ruling:
            verdict = control.judge(policy.History.of(history), now, marks)
            decision = policy.apply_mode(verdict, context.config.enforcing)
            return Ruling(
                decision=decision,
                verdict=verdict,
                block=(
                    self._new_block(verdict, now)
                    if decision is Decision.BLOCK
                    else None
                ),
                describe=lambda block: self.events_for(
                    user_id, target, decision, verdict, block, now, request, details
                ),
            )

        try:
            if not context.readiness.ready and not await context.readiness.wait():
                raise RuntimeError("the guard's tables are not ready")
            judgement = await context.store.judge(
                user_id,
                self.control.name,
                target,
                now,
                now - control.longest_window_ms,
                decide,
            )
        except Exception:
            if context.database_trouble(user_id, self.control.name, request):
                return None
            raise responses.guard_unavailable() from None

        if judgement.already_blocked:
            assert judgement.block is not None
            self._blocking.registry.remember(judgement.block, now)
            raise responses.account_blocked(judgement.block)

        ruling = judgement.ruling
        assert ruling is not None
        context.emit(judgement.events)
        if judgement.block is not None:
            self._blocking.enforce(judgement.block, request)
            raise responses.account_blocked(judgement.block)
        if ruling.decision is Decision.DENY:
            raise responses.limit_exceeded(self.control.label, ruling.verdict)
        return judgement.attempt_id

    def _new_block(self, verdict: Verdict, now: int) -> NewBlock:
        return self._blocking.new_block(
            self.control.name, self._block_reason(verdict), now
        )

    def _block_reason(self, verdict: Verdict) -> str:
        assert verdict.rule is not None
        window = format_duration(verdict.rule.window_ms)
        return f"too many {self.control.label}: {verdict.count} attempts in {window}"

    def events_for(
        self,
        user_id: str,
        target: str | None,
        decision: Decision,
        verdict: Verdict,
        block: Block | None,
        now: int,
        request: RequestInfo | None,
        details: Mapping[str, object] | None,
        action: str | None = None,
    ) -> tuple[AuditEvent, ...]:
        """The events that report a decision (none for an allowed attempt); `action`
        names a refusal more precisely than its decision (`step_up_required`)."""
        rule = verdict.rule
        if decision is Decision.ALLOW or rule is None:
            return ()
        window = format_duration(rule.window_ms)
        guard: dict[str, object] = {
            "control": self.control.name,
            "mode": self._context.config.mode.value,
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
        if block is not None:
            guard["block"] = describe_block(block)
        if decision.escalates:
            reason = self._block_reason(verdict)
        else:
            reason = (
                f"limit of {verdict.rule_max} {self.control.label} per {window} reached"
            )
        return (
            AuditEvent(
                action=action or decision.value,
                ts=now,
                user_id=user_id,
                message=(
                    f"{action or decision.value}: {user_id}, {self.control.label}"
                    f" {verdict.count}/{verdict.rule_max} in {window}"
                ),
                reason=reason,
                request=request,
                guard=guard,
            ),
        )
