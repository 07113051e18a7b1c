"""People: one budget of people an account may discover, whatever the route.

What counts (`directory` control), and why (see docs/configuration.md, "Which
people count"):
- user directory search results: each distinct person shown. A search is never
  refused: it shows the people already discovered, and new ones only from a few
  characters typed, a few at a time, within the budget; the SIEM hears of what it
  left out. (Element searches on every keystroke and ignores an error it does not
  know: a refusal would teach it nothing and get its owner blocked.)
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

from typing import Any

from synapse.logging.context import ContextRequest

from synapse_tchap_guard import _synapse_internals as internals
from synapse_tchap_guard import inputs
from synapse_tchap_guard.audit import AuditEvent
from synapse_tchap_guard.config import DirectoryConfig
from synapse_tchap_guard.context import GuardContext
from synapse_tchap_guard.controls import Control
from synapse_tchap_guard.counting.records import Charge
from synapse_tchap_guard.gates.admission import Admission


class PeopleGate:
    def __init__(
        self,
        context: GuardContext,
        admission: Admission,
        control: Control,
        config: DirectoryConfig,
    ) -> None:
        self._context = context
        self._admission = admission
        self._control = control
        self._config = config
        # The search requests that already told the SIEM they left people out.
        self._withheld_reported: set[str] = set()

    async def profile(
        self, user_id: str, request: ContextRequest, subject: str
    ) -> None:
        """A profile lookup: a person."""
        if subject == user_id:
            return
        charge = Charge(subject, details={"lookup": "profile"})
        await self._admission.admit(user_id, request, self._control, charge)

    async def room_members(
        self, user_id: str, request: ContextRequest | None, room_id: str, via: str
    ) -> None:
        """A room's member list, shown to the account: as many people as it has."""
        count = await internals.joined_member_count(self._context.api, room_id)
        if count <= 0:
            return  # a room this server is not in yet: nothing of it is shown here
        charge = Charge(f"members of {room_id}", count, {"lookup": via})
        await self._admission.admit(user_id, request, self._control, charge)

    async def search_results(
        self, user_id: str, term: str, results: list[Any]
    ) -> list[Any]:
        """The results of a directory search that the account may see: everyone it
        discovered already, and, from `min_search_length` characters on, at most
        `new_people_per_search` people more, within its budget, counted one by one
        (in one step, one round trip with Redis). Element searches on every
        keystroke: its first letters show the people it knows, its typed name the
        best matches."""
        request = internals.current_request()
        config = self._config
        people = []
        for result in results:
            user = result.get("user_id") if isinstance(result, dict) else None
            people.append(inputs.target(user) if isinstance(user, str) else None)
        others = [p for p in people if p is not None and p != user_id]
        most_new = config.new_people_per_search
        if len(term.strip()) < config.min_search_length:
            most_new = 0  # a type-ahead's first letters
        shown = await self._admission.admit_each(
            user_id, request, self._control, others, most_new
        )
        if shown is None:
            return results
        if shown.past_budget:
            self._report_withheld(user_id, request)
        if not self._context.config.enforcing:
            return results  # monitor mode leaves nothing out
        return [
            result
            for result, person in zip(results, people, strict=True)
            if person == user_id or person in shown.targets
        ]

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
                "control": self._control.name,
                "mode": context.config.mode.value,
                "decision": decision,
                "lookup": "search",
                "withheld": True,
            },
        )
        context.emit([event])
        self._admission.ledger.journal.report([event])
