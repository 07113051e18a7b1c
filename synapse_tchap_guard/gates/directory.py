"""The directory: a budget of discoveries an account may make before it must step up.

What counts, and why (see the README):
- user directory search results: each distinct person shown to the account, counted
  as Synapse filters the results one by one (`check_username_for_spam`); a search
  past the budget shows no more results;
- profile lookups (`/profile/{user_id}` and its fields) of another account: each
  distinct person looked up;
- public room directory requests: each one. (A `POST /publicRooms` carries its page
  in a body this hook cannot read, so pages cannot be told apart.)
The account's own profile never counts, nor does looking again at someone already
counted in the window. An account past its budget is refused with a 401 that asks
it to re-authenticate (step up); one that stepped up gets the larger budget for a
while, then a 429 like any other limit.
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import unquote

import attr
from synapse.logging.context import ContextRequest
from synapse.module_api import UserProfile

from synapse_tchap_guard import _synapse_internals as internals
from synapse_tchap_guard import inputs
from synapse_tchap_guard.gates.counted import Charge, CountedGate

PUBLIC_ROOMS = "public room directory"
_LOOKUP = re.compile(
    r"/_matrix/client/(?:r0|v3)/"
    r"(?:(?P<search>user_directory/search)|profile/(?P<profile>[^/?#]+)"
    r"|(?P<rooms>publicRooms))(?:[/?#]|$)"
)


@attr.frozen
class Lookup:
    kind: Literal["search", "profile", "rooms"]
    subject: str | None  # the person looked up, normalised (`inputs.target`)


def lookup_of(request: ContextRequest) -> Lookup | None:
    """The directory lookup this request makes, if it is one."""
    match = _LOOKUP.match(request.url)
    if match is None:
        return None
    if match["search"]:
        return Lookup("search", None) if request.method == "POST" else None
    if match["profile"]:
        if request.method not in ("GET", "HEAD"):
            return None
        return Lookup("profile", inputs.target(unquote(match["profile"])))
    return Lookup("rooms", PUBLIC_ROOMS)


class DirectoryGate:
    def __init__(self, gate: CountedGate, enforcing: bool) -> None:
        self._gate = gate
        self.counts = gate.counts
        self._enforcing = enforcing

    async def check(
        self, user_id: str, request: ContextRequest, lookup: Lookup
    ) -> None:
        """Count a lookup, or refuse it (raises). A search costs nothing itself (its
        results count one by one), but is refused once the budget is spent."""
        if lookup.subject == user_id:
            return
        units = 0 if lookup.kind == "search" else 1
        charge = Charge(lookup.subject, units, {"lookup": lookup.kind})
        await self._gate.admit(user_id, request, charge)

    async def check_username_for_spam(
        self, profile: UserProfile, requester_id: str
    ) -> bool:
        """Count one search result shown to `requester_id`; True hides it."""
        subject = inputs.target(profile["user_id"])  # as a profile lookup counts it
        if subject == requester_id:
            return False
        gate = self._gate
        account = await gate.account(requester_id, internals.current_request())
        if account is None or gate.already_counted(account, subject):
            return False
        if not gate.would_allow(account, subject):
            # Past the budget the rest of the page is not shown, and the next search
            # is refused. Monitor mode shows it, uncounted, as enforce would not have.
            return self._enforcing
        gate.record_allowed(account, requester_id, Charge(subject))
        return False
