"""The one path of every counted control: what a request costs, judged.

A gate says what a request costs (`Charge`: so many units of its control, for a
target); this path does the rest, the same for every control: load the account's
counts, judge and record in one step (exact, see `live_counts`), apply the mode, then
let the request through, refuse it, or block the account.
"""

from __future__ import annotations

from collections.abc import Mapping

import attr
from synapse.logging.context import ContextRequest

from synapse_tchap_guard import _synapse_internals as internals
from synapse_tchap_guard import inputs
from synapse_tchap_guard.blocks import Blocking
from synapse_tchap_guard.context import GuardContext
from synapse_tchap_guard.controls import Control
from synapse_tchap_guard.live_counts import LiveAccount, LiveCounts
from synapse_tchap_guard.model import Line
from synapse_tchap_guard.policy import Decision, Verdict
from synapse_tchap_guard.shared_counts import SharedCounts


@attr.frozen
class Charge:
    """What one request costs a control."""

    # The room, the media, the person: what the SIEM sees, made safe to store.
    target: str | None = attr.field(converter=attr.converters.optional(inputs.target))
    units: int = 1  # a download is one; a page of history, as many messages as it asks
    details: Mapping[str, object] = attr.Factory(dict)  # for the SIEM


class CountedGate:
    def __init__(
        self,
        context: GuardContext,
        blocking: Blocking,
        control: Control,
        shared: SharedCounts | None = None,
    ) -> None:
        self._context = context
        self._blocking = blocking
        self.control = control
        self.counts = LiveCounts(
            control.name,
            control.longest_window_ms,
            context.store,
            context.now,
            context.is_exempt,
            context.report_rejected,
            distinct_targets=control.distinct,
            shared=shared,
        )

    async def account(
        self, user_id: str, request: ContextRequest | None
    ) -> LiveAccount | None:
        """The account's counts; None lets the request through uncounted (exempt, or
        the database could not answer and `on_error` allows)."""
        account = self.counts.loaded(user_id, self._context.now())
        if account is None:
            account = await self._context.unless_store_fails(
                self.control.name,
                user_id,
                internals.request_info(request),
                self.counts.account(user_id),
            )
        return None if account is None or account.exempt else account

    def already_counted(self, account: LiveAccount, target: str | None) -> bool:
        """For a control of distinct targets: this one costs nothing more."""
        if target is None or not self.control.distinct:
            return False
        now = self._context.now()
        window = self.control.window_for(account.marks, now)
        return account.counted_since(target, now - window)

    async def admit(
        self, user_id: str, request: ContextRequest | None, charge: Charge
    ) -> Line | None:
        """Count a request; raise the client's error if it is refused.

        Returns the line counted, for its response to amend (`finish`), or None when
        nothing was counted (exempt, already counted, free, or `on_error`).
        """
        context = self._context
        control = self.control
        account = await self.account(user_id, request)
        if account is None or self.already_counted(account, charge.target):
            return None
        verdicts: list[Verdict] = []

        def decide(account: LiveAccount) -> Line | None:
            now = context.now()
            verdict = control.judge(
                account.history,
                now,
                account.marks,
                context.config.enforcing,
                charge.units,
            )
            verdicts.append(verdict)
            if verdict.decision is Decision.ALLOW and not charge.units:
                return None  # judged, and free (what it shows counts one by one)
            return Line(
                user_id,
                control.name,
                now,
                verdict.decision,
                charge.target,
                charge.units,
            )

        line = await self.counts.count(user_id, account, decide)
        verdict = verdicts[-1]
        if verdict.decision is Decision.ALLOW:  # the common case: nothing to report
            return line
        info = internals.request_info(request)
        if verdict.decision.escalates:
            # The database has every count of it (unless it does not answer in time).
            await context.store.database.lanes.wait_briefly(self.counts.flush)
            await self._blocking.escalate(
                user_id, control, verdict, charge.target, info, charge.details
            )
            self.counts.forget(user_id)  # loaded afresh, with its new marks
            return line  # would_block: served, and reported
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
        self.counts.report(events)
        if verdict.decision is Decision.DENY:
            # What decided a refusal is in the database before the client hears it,
            # unless the tables do not answer in time: then it is written when they do.
            await context.store.database.lanes.wait_briefly(self.counts.flush)
            raise control.refusal(verdict, context.step_up_url)
        return line  # would_deny: served, and reported

    async def admit_if_allowed(
        self, user_id: str, account: LiveAccount, charge: Charge
    ) -> bool:
        """Count what `charge` costs if the control allows it now; if not, count and
        report nothing (for what a response leaves out rather than refuses)."""
        context = self._context
        allowed = False

        def decide(account: LiveAccount) -> Line | None:
            nonlocal allowed
            if self.already_counted(account, charge.target):
                allowed = True
                return None
            now = context.now()
            verdict = self.control.judge(account.history, now, account.marks, True)
            allowed = verdict.decision is Decision.ALLOW
            if not allowed:
                return None
            return Line(
                user_id,
                self.control.name,
                now,
                Decision.ALLOW,
                charge.target,
                charge.units,
            )

        await self.counts.count(user_id, account, decide)
        return allowed

    def finish(self, line: Line, ok: bool, sent: int) -> None:
        self.counts.finish(line, ok, sent)
