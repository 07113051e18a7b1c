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

Lookups are counted in memory and written behind (`live_counts`), like downloads.
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import unquote

import attr
from synapse.logging.context import ContextRequest
from synapse.module_api import UserProfile

from synapse_tchap_guard import _synapse_internals as internals
from synapse_tchap_guard import policy, responses
from synapse_tchap_guard.context import GuardContext
from synapse_tchap_guard.gates.quota import QuotaGate
from synapse_tchap_guard.live_counts import LiveAccount, LiveAttempt, LiveCounts
from synapse_tchap_guard.policy import Decision, DirectoryRules, Verdict

STEP_UP_PATH = "/_synapse/client/tchap_guard/v1/step_up"
PUBLIC_ROOMS = "public room directory"
_LOOKUP = re.compile(
    r"/_matrix/client/(?:r0|v3)/"
    r"(?:(?P<search>user_directory/search)|profile/(?P<profile>[^/?#]+)"
    r"|(?P<rooms>publicRooms))(?:[/?#]|$)"
)


@attr.frozen
class Lookup:
    kind: Literal["search", "profile", "rooms"]
    subject: str | None  # the person looked up


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
        return Lookup("profile", unquote(match["profile"]))
    return Lookup("rooms", PUBLIC_ROOMS)


class DirectoryGate:
    def __init__(
        self, context: GuardContext, quota_gate: QuotaGate, rules: DirectoryRules
    ) -> None:
        self._context = context
        self._quota_gate = quota_gate
        self._rules = rules
        control = quota_gate.control
        self.counts = LiveCounts(
            context, control.name, control.longest_window_ms, distinct_targets=True
        )
        self.step_up_url = context.api.public_baseurl.rstrip("/") + STEP_UP_PATH

    async def check(
        self, user_id: str, request: ContextRequest, lookup: Lookup
    ) -> None:
        """Count a lookup, or refuse it (raises). Search results count one by one."""
        if lookup.subject == user_id:
            return
        account = await self._account(user_id, request)
        if account is None or account.exempt:
            return
        now = self._context.now()
        if lookup.kind == "profile" and self._known(account, lookup.subject, now):
            return
        verdict = self._quota_gate.control.judge(account.history, now, account.marks)
        decision = policy.apply_mode(verdict, self._context.config.enforcing)
        if decision is Decision.ALLOW:
            if lookup.kind != "search":
                self.counts.record(
                    account,
                    LiveAttempt(user_id, now, decision, lookup.subject, finished=True),
                    (),
                )
            return
        if decision.escalates:
            await self.counts.flush()
            self.counts.forget(user_id)
            await self._quota_gate.check(
                user_id,
                lookup.subject,
                internals.request_info(request),
                {"lookup": lookup.kind},
            )
            return
        await self._refuse(user_id, account, lookup, decision, verdict, request, now)

    async def check_username_for_spam(
        self, profile: UserProfile, requester_id: str
    ) -> bool:
        """Count one search result shown to `requester_id`; True hides it."""
        subject = profile["user_id"]
        if subject == requester_id:
            return False
        account = await self._account(requester_id, internals.current_request())
        if account is None or account.exempt:
            return False
        now = self._context.now()
        if self._known(account, subject, now):
            return False
        verdict = self._quota_gate.control.judge(account.history, now, account.marks)
        decision = policy.apply_mode(verdict, self._context.config.enforcing)
        if decision is Decision.ALLOW:
            attempt = LiveAttempt(requester_id, now, decision, subject, finished=True)
            self.counts.record(account, attempt, ())
            return False
        # Past the budget the rest of the page is not shown, and the next search is
        # refused. Monitor mode shows it, uncounted, as enforce mode would not have.
        return self._context.config.enforcing

    def _known(self, account: LiveAccount, subject: str | None, now: int) -> bool:
        """Already counted in the window that applies: looking again costs nothing."""
        budget = self._rules.budget(account.marks.stepped_up(now))
        return subject is not None and account.counted_since(
            subject, now - budget.window_ms
        )

    async def _account(
        self, user_id: str, request: ContextRequest | None
    ) -> LiveAccount | None:
        """The account's counts; None lets the request through (`on_error: allow`)."""
        try:
            return self.counts.loaded(
                user_id, self._context.now()
            ) or await self.counts.account(user_id)
        except Exception:
            info = internals.request_info(request)
            if self._context.database_trouble(
                user_id, self._quota_gate.control.name, info
            ):
                return None
            raise responses.guard_unavailable() from None

    async def _refuse(
        self,
        user_id: str,
        account: LiveAccount,
        lookup: Lookup,
        decision: Decision,
        verdict: Verdict,
        request: ContextRequest,
        now: int,
    ) -> None:
        """Count the refused lookup, report it, and answer (raises in enforce mode)."""
        stepped_up = account.marks.stepped_up(now)
        needs_step_up = not stepped_up
        action = (
            "step_up_required" if decision is Decision.DENY and needs_step_up else None
        )
        events = self._quota_gate.events_for(
            user_id,
            lookup.subject,
            decision,
            verdict,
            None,
            now,
            internals.request_info(request),
            {"lookup": lookup.kind, "step_up_required": needs_step_up},
            action=action,
        )
        refused = LiveAttempt(user_id, now, decision, lookup.subject, finished=True)
        self.counts.record(account, refused, events)
        self._context.emit(events)
        if decision is not Decision.DENY:
            return  # monitor mode: reported, not refused
        if stepped_up:
            raise responses.limit_exceeded(self._quota_gate.control.label, verdict)
        assert verdict.retry_after_ms is not None
        budget = self._rules.free
        raise responses.step_up_required(
            self.step_up_url,
            self._rules.step_up_valid_for_ms,
            budget.max_profiles,
            budget.window_ms,
            verdict.retry_after_ms,
        )
