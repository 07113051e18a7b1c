"""People: one budget of people an account may discover, whatever the route.

What counts (`directory` control), and why (see the README):
- user directory search results: each distinct person shown, counted as Synapse
  filters the results one by one (`check_username_for_spam`). Past the budget a
  search is not refused: it shows only people already discovered, and the SIEM
  hears of what it left out. (Element searches on every keystroke and ignores an
  error it does not know: a refusal would teach it nothing and block its owner.)
- profile lookups of another account, by any prefix or field: each distinct person;
- a room's member list, as its members (however many): when the account joins a
  public room (the join shows it), or reads the members or state of a room it is not
  in. Once per room and window; the member lists of rooms the account was already in
  before, invited to, or created, cost nothing more (they were paid, or are its own).
The account's own profile never counts, nor does looking again at someone, or some
room's members, already counted in the window. Past the budget, a lookup is refused
with a 401 that asks the account to re-authenticate (step up); one that stepped up
gets the larger budget for a while, then a 429 like any other limit.
"""

from __future__ import annotations

from synapse.logging.context import ContextRequest
from synapse.module_api import UserProfile

from synapse_tchap_guard import _synapse_internals as internals
from synapse_tchap_guard.audit import AuditEvent
from synapse_tchap_guard.context import GuardContext
from synapse_tchap_guard.gates.counted import Charge, CountedGate


class PeopleGate:
    def __init__(self, context: GuardContext, gate: CountedGate) -> None:
        self._context = context
        self._gate = gate
        self.counts = gate.counts
        # The search requests that already told the SIEM they left people out.
        self._withheld_reported: set[str] = set()

    async def profile(
        self, user_id: str, request: ContextRequest, subject: str
    ) -> None:
        """A profile lookup (or one member's state): a person."""
        if subject == user_id:
            return
        await self._gate.admit(
            user_id, request, Charge(subject, details={"lookup": "profile"})
        )

    async def room_members(
        self, user_id: str, request: ContextRequest | None, room_id: str, via: str
    ) -> None:
        """A room's member list, shown to the account: as many people as it has."""
        count = await internals.joined_member_count(self._context.api, room_id)
        if count <= 0:
            return  # a room this server is not in yet: nothing of it is shown here
        charge = Charge(f"members of {room_id}", count, {"lookup": via})
        await self._gate.admit(user_id, request, charge)

    async def check_username_for_spam(
        self, profile: UserProfile, requester_id: str
    ) -> bool:
        """Count one search result shown to `requester_id`; True leaves it out."""
        subject = profile["user_id"]
        if subject == requester_id:
            return False
        gate = self._gate
        request = internals.current_request()
        account = await gate.account(requester_id, request)
        if account is None:
            return False
        charge = Charge(subject, details={"lookup": "search"})
        if await gate.admit_if_allowed(requester_id, account, charge):
            return False
        self._report_withheld(requester_id, request)
        # Monitor mode shows it, uncounted, as enforce mode would not have.
        return self._context.config.enforcing

    def _report_withheld(self, user_id: str, request: ContextRequest | None) -> None:
        """Once per search that left people out: the SIEM sees enumeration go on."""
        key = request.request_id if request is not None else user_id
        if key in self._withheld_reported:
            return
        if len(self._withheld_reported) > 10_000:
            self._withheld_reported.clear()
        self._withheld_reported.add(key)
        context = self._context
        decision = "deny" if context.config.enforcing else "would_deny"
        event = AuditEvent(
            action=decision,
            ts=context.now(),
            user_id=user_id,
            message=f"{decision}: {user_id}, directory search results past the budget",
            reason="people past the budget are left out of search results",
            request=internals.request_info(request),
            guard={
                "control": self._gate.control.name,
                "mode": context.config.mode.value,
                "decision": decision,
                "lookup": "search",
                "withheld": True,
            },
        )
        context.emit([event])
        self.counts.report([event])
