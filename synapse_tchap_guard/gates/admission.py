"""The one path of every counted control: a charge, judged, and its consequences.

A gate says what a request costs (`Charge`: so many units of a control, for a
target); this path does the rest, the same for every control: charge the ledger
(judged and recorded in one step), then let the request through, refuse it, or block
the account, report what happened, and have the response amend what was counted.
If the guard's tables cannot answer, `on_error` decides (`GuardContext.store_failed`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from synapse.logging.context import ContextRequest

from synapse_tchap_guard import _synapse_internals as internals
from synapse_tchap_guard.context import GuardContext
from synapse_tchap_guard.controls import Control
from synapse_tchap_guard.counting.awaited import AwaitedResponses
from synapse_tchap_guard.counting.ledger import Ledger, Shown
from synapse_tchap_guard.counting.records import Charge, Key
from synapse_tchap_guard.inputs import RequestInfo
from synapse_tchap_guard.policy import Decision, Verdict
from synapse_tchap_guard.store.database import StoreUnavailable


class Escalation(Protocol):
    """What blocks an account that crossed a block threshold (`Blocking.escalate`):
    raises the client's error, or in monitor mode reports what would have been."""

    async def escalate(
        self,
        user_id: str,
        control: Control,
        verdict: Verdict,
        target: str | None,
        request: RequestInfo | None,
        details: Mapping[str, object],
    ) -> None: ...


class Admission:
    def __init__(
        self,
        context: GuardContext,
        blocking: Escalation,
        ledger: Ledger,
        awaited: AwaitedResponses,
    ) -> None:
        self._context = context
        self._blocking = blocking
        self.ledger = ledger
        self._awaited = awaited

    async def admit(
        self,
        user_id: str,
        request: ContextRequest | None,
        control: Control,
        charge: Charge,
        sized: bool = False,
    ) -> None:
        """Count a request; raise the client's error if it is refused. Its response
        gives back what it was counted if it fails, and, if `sized`, adds its bytes."""
        try:
            outcome = await self.ledger.charge(Key(user_id), control, charge)
        except StoreUnavailable as error:
            info = internals.request_info(request)
            self._context.store_failed(control.name, user_id, info, error)
            return  # `on_error: allow`
        verdict = outcome.verdict
        if outcome.pending is not None and request is not None:
            self._awaited.expect(request.request_id, outcome.pending, sized)
        decision = verdict.decision
        if decision is Decision.ALLOW:  # the common case: nothing to report
            return
        context = self._context
        info = internals.request_info(request)
        if decision.escalates:
            # The database has every count of it (unless it does not answer in time).
            await context.store.database.lanes.wait_briefly(self.ledger.flush)
            try:
                await self._blocking.escalate(
                    user_id, control, verdict, charge.target, info, charge.details
                )
            finally:
                await self.ledger.refresh_marks(user_id)  # its count starts over
            return  # would_block: served, and reported
        events = control.events(
            user_id,
            charge.target,
            verdict,
            None,
            context.now(),
            info,
            context.config.mode.value,
            charge.details,
        )
        context.emit(events)
        self.ledger.journal.report(events)
        if decision is Decision.DENY:
            # What decided a refusal is in the database before the client hears it,
            # unless the tables do not answer in time: then it is written when they do.
            await context.store.database.lanes.wait_briefly(self.ledger.flush)
            raise control.refusal(verdict, context.step_up_url)
        # would_deny: served, and reported

    async def admit_each(
        self,
        user_id: str,
        request: ContextRequest | None,
        control: Control,
        targets: Sequence[str],
        most_new: int,
    ) -> Shown | None:
        """Count the targets a response may show (see `Ledger.charge_each`); None
        when it may show them all (exempt, or `on_error: allow`)."""
        try:
            return await self.ledger.charge_each(
                Key(user_id), control, targets, most_new
            )
        except StoreUnavailable as error:
            info = internals.request_info(request)
            self._context.store_failed(control.name, user_id, info, error)
            return None
