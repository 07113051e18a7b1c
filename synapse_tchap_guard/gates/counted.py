"""The one path of every control counted in memory: what a request costs, judged.

A gate says what a request costs (`Charge`: so many units of its control, for a
target); this path does the rest, the same for every control: load the account's
counts, judge, apply the mode, record, and then let the request through, refuse it,
or decide the block in the database (`ExactGate`), where every process agrees.
"""

from __future__ import annotations

from collections.abc import Mapping

import attr
from synapse.logging.context import ContextRequest

from synapse_tchap_guard import _synapse_internals as internals
from synapse_tchap_guard.audit import RequestInfo
from synapse_tchap_guard.context import GuardContext
from synapse_tchap_guard.controls import Control
from synapse_tchap_guard.gates.exact import ExactGate
from synapse_tchap_guard.live_counts import LiveAccount, LiveCounts
from synapse_tchap_guard.model import Line
from synapse_tchap_guard.policy import Decision


@attr.frozen
class Charge:
    """What one request costs a control."""

    target: str | None  # the room, the media, the person: what the SIEM sees
    units: int = 1  # a download is one; a page of history, as many messages as it holds
    details: Mapping[str, object] = attr.Factory(dict)  # for the SIEM


class CountedGate:
    def __init__(self, context: GuardContext, exact: ExactGate) -> None:
        self._context = context
        self._exact = exact
        self.control: Control = exact.control
        self.counts = LiveCounts(
            self.control.name,
            self.control.longest_window_ms,
            context.store,
            context.now,
            context.is_exempt,
            context.report_rejected,
            distinct_targets=self.control.distinct,
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
        self,
        user_id: str,
        request: ContextRequest | None,
        charge: Charge,
        account: LiveAccount | None = None,
    ) -> Line | None:
        """Count a request; raise the client's error if it is refused.

        Returns the line counted, for its response to amend (`finish`), or None when
        nothing was counted (exempt, already counted, or `on_error`).
        """
        context = self._context
        account = account or await self.account(user_id, request)
        if account is None or self.already_counted(account, charge.target):
            return None
        now = context.now()
        control = self.control
        verdict = control.judge(
            account.history, now, account.marks, context.config.enforcing
        )
        decision = verdict.decision
        if decision is Decision.ALLOW:  # the common case: nothing to report
            if not charge.units:
                return None  # judged, and free (a search: its results count)
            line = Line(
                user_id, control.name, now, decision, charge.target, charge.units
            )
            self.counts.record(account, line)
            return line
        info = internals.request_info(request)
        if decision.escalates:
            return await self._escalate(user_id, info, charge)
        events = control.events(
            user_id,
            charge.target,
            verdict,
            None,
            now,
            info,
            context.config.mode.value,
            charge.details,
        )
        line = Line(user_id, control.name, now, decision, charge.target, charge.units)
        self.counts.record(account, line, events)
        context.emit(events)
        if decision is Decision.DENY:
            # What decided a refusal is in the database before the client hears it,
            # unless the tables do not answer in time: then it is written when they do.
            await context.store.database.lanes.wait_briefly(self.counts.flush)
            raise control.refusal(verdict, context.step_up_url)
        return line  # would_deny: served, and reported

    def would_allow(self, account: LiveAccount, target: str | None) -> bool:
        """Whether one more unit would be allowed now (without counting anything)."""
        if self.already_counted(account, target):
            return True
        verdict = self.control.judge(
            account.history, self._context.now(), account.marks, enforcing=True
        )
        return verdict.decision is Decision.ALLOW

    def record_allowed(
        self, account: LiveAccount, user_id: str, charge: Charge
    ) -> None:
        """Count a unit `would_allow` allowed (nothing to judge again, or report)."""
        line = Line(
            user_id,
            self.control.name,
            self._context.now(),
            Decision.ALLOW,
            charge.target,
            charge.units,
        )
        self.counts.record(account, line)

    def finish(self, line: Line, ok: bool, sent: int) -> None:
        self.counts.finish(line, ok, sent)

    async def _escalate(
        self, user_id: str, request: RequestInfo | None, charge: Charge
    ) -> Line | None:
        """Decide the request that would block in the database, with every count in:
        exact, whatever the other processes counted meanwhile (if the tables do
        not answer in time, `on_error` decides, in `ExactGate`)."""
        await self._context.store.database.lanes.wait_briefly(self.counts.flush)
        self.counts.forget(user_id)
        now = self._context.now()
        verdict = await self._exact.count(
            user_id, charge.target, request, charge.units, charge.details
        )
        if verdict is None:
            return None
        # Served after all (a would_block in monitor mode, or counts changed since):
        # its row is written, so what its response amends goes in rows of its own.
        control = self.control.name
        return Line(
            user_id,
            control,
            now,
            verdict.decision,
            charge.target,
            charge.units,
            taken=True,
        )
