"""Judging a request in one database transaction: exact whatever the processes.

For what is rare and must be exact across processes: joins, failed step-ups, and the
request that would block an account counted in memory. The store locks the account's
row, reads its history, asks the control for a verdict, and writes the request, the
block and the events together; then the block takes effect and the client gets its
answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from synapse_tchap_guard import responses
from synapse_tchap_guard.audit import AuditEvent, RequestInfo
from synapse_tchap_guard.blocks import Blocking
from synapse_tchap_guard.context import GuardContext
from synapse_tchap_guard.controls import Control
from synapse_tchap_guard.model import AlreadyBlocked, Block, NewBlock
from synapse_tchap_guard.policy import AccountMarks, Decision, History, Verdict


class ExactGate:
    def __init__(
        self, context: GuardContext, blocking: Blocking, control: Control
    ) -> None:
        self._context = context
        self._blocking = blocking
        self.control = control

    async def count(
        self,
        user_id: str,
        target: str | None,
        request: RequestInfo | None,
        units: int = 1,
        details: Mapping[str, object] | None = None,
    ) -> Verdict | None:
        """Count one request; raise the client's error if it is refused.

        Returns the verdict of a request let through, or None when the database could
        not answer and `on_error` let it through uncounted.
        """
        context = self._context
        control = self.control
        now = context.now()
        enforcing = context.config.enforcing

        def decide(history: History, marks: AccountMarks) -> Verdict:
            return control.judge(history, now, marks, enforcing)

        def block_for(verdict: Verdict) -> NewBlock | None:
            if verdict.decision is not Decision.BLOCK:
                return None
            return self._blocking.new_block(
                control.name, control.block_reason(verdict), now
            )

        def report(verdict: Verdict, block: Block | None) -> Sequence[AuditEvent]:
            return control.events(
                user_id,
                target,
                verdict,
                block,
                now,
                request,
                context.config.mode.value,
                details,
            )

        try:
            recorded = await context.unless_store_fails(
                control.name,
                user_id,
                request,
                context.store.attempts.judge(
                    user_id,
                    control.name,
                    target,
                    units,
                    now,
                    now - control.longest_window_ms,
                    decide,
                    block_for,
                    report,
                ),
            )
        except AlreadyBlocked as blocked:
            self._blocking.registry.remember(blocked.block, now)
            raise responses.account_blocked(blocked.block) from None
        if recorded is None:
            return None
        context.emit(recorded.events)
        if recorded.block is not None:
            self._blocking.enforce(recorded.block, request)
            raise responses.account_blocked(recorded.block)
        if recorded.verdict.decision is Decision.DENY:
            raise control.refusal(recorded.verdict, context.step_up_url)
        return recorded.verdict
