"""Media downloads: every download and thumbnail an account fetches, counted and sized.

Synapse has no download hook for modules, so the count and the refusal happen where
the per-request check sees the URL, while Synapse authenticates the request: before
any file is read or any remote server asked, so a refused download costs nothing.
The bytes are added once the response is sent, as many as were really sent.

Downloads are a hot path, so they are counted in memory and written behind
(`live_counts`); only the attempt that would block the account is decided again in
the database, exactly, like a join.

Only the client media API carries an account (`/_matrix/client/v1/media/download`
and `.../thumbnail`, local and remote media alike). Federation requests (another
server fetching our media) never pass through here, and neither do the legacy
unauthenticated `/_matrix/media/v3/...` endpoints (see the README).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from urllib.parse import unquote

import attr
from synapse.logging.context import ContextRequest

from synapse_tchap_guard import _synapse_internals as internals
from synapse_tchap_guard import policy, responses
from synapse_tchap_guard.context import GuardContext
from synapse_tchap_guard.gates.quota import QuotaGate
from synapse_tchap_guard.live_counts import LiveAttempt, LiveCounts
from synapse_tchap_guard.policy import Decision

_MEDIA = re.compile(
    r"/_matrix/client/v1/media/(download|thumbnail)/([^/?#]+)/([^/?#]+)"
)
# Counted downloads whose response has not finished yet; a few seconds' worth.
_PENDING_MAX = 10_000


@attr.frozen
class Download:
    kind: str  # download | thumbnail
    target: str  # mxc://server/id


def download_of(request: ContextRequest) -> Download | None:
    """The download or thumbnail this request asks for, if it is one."""
    if request.method not in ("GET", "HEAD"):
        return None
    match = _MEDIA.match(request.url)
    if match is None:
        return None
    kind, server_name, media_id = match.groups()
    return Download(kind, f"mxc://{unquote(server_name)}/{unquote(media_id)}")


class MediaGate:
    def __init__(self, context: GuardContext, quota_gate: QuotaGate) -> None:
        self._context = context
        self._quota_gate = quota_gate
        control = quota_gate.control
        self.active = control.active
        self.counts = LiveCounts(context, control.name, control.longest_window_ms)
        # request id -> the attempt its response's bytes belong to
        self._pending: OrderedDict[str, LiveAttempt] = OrderedDict()

    async def check(
        self, user_id: str, request: ContextRequest, download: Download
    ) -> None:
        """Count a download or thumbnail, or refuse it (raises)."""
        context = self._context
        now = context.now()
        try:
            account = self.counts.loaded(user_id, now) or await self.counts.account(
                user_id
            )
        except Exception:
            info = internals.request_info(request)
            if context.database_trouble(user_id, self._quota_gate.control.name, info):
                return
            raise responses.guard_unavailable() from None
        if account.exempt:
            return
        target = download.target
        verdict = self._quota_gate.control.judge(account.history, now, account.marks)
        decision = policy.apply_mode(verdict, context.config.enforcing)
        if decision is Decision.ALLOW:  # the common case: nothing to report
            attempt = LiveAttempt(user_id, now, decision, target)
            self.counts.record(account, attempt, ())
            self._remember(request.request_id, attempt)
            return
        details: dict[str, str] = {"media": download.kind}
        if decision.escalates:
            await self._escalate(user_id, target, request, details)
            return
        info = internals.request_info(request)
        events = self._quota_gate.events_for(
            user_id, target, decision, verdict, None, now, info, details
        )
        # A refused download sends nothing: its attempt is finished already.
        refused = decision is Decision.DENY
        attempt = LiveAttempt(user_id, now, decision, target, finished=refused)
        self.counts.record(account, attempt, events)
        context.emit(events)
        if refused:
            raise responses.limit_exceeded(self._quota_gate.control.label, verdict)
        self._remember(request.request_id, attempt)

    async def _escalate(
        self,
        user_id: str,
        target: str,
        request: ContextRequest,
        details: dict[str, str],
    ) -> None:
        """Decide the attempt that would block in the database, with every count in."""
        await self.counts.flush()
        self.counts.forget(user_id)
        info = internals.request_info(request)
        attempt_id = await self._quota_gate.check(user_id, target, info, details)
        if attempt_id is not None:  # served after all (monitor mode): count its bytes
            attempt = LiveAttempt(
                user_id, self._context.now(), Decision.ALLOW, target, written=True
            )
            attempt.id = attempt_id
            self._remember(request.request_id, attempt)

    def _remember(self, request_id: str, attempt: LiveAttempt) -> None:
        self._pending[request_id] = attempt
        while len(self._pending) > _PENDING_MAX:
            self._pending.popitem(last=False)

    def on_media_response(self, request_id: str, status: int, sent: int) -> None:
        """Give a counted download's attempt the bytes its response really sent."""
        attempt = self._pending.pop(request_id, None)
        if attempt is not None:
            self.counts.finish(attempt, sent if 200 <= status < 300 else 0)
