"""Media downloads: every download and thumbnail an account fetches, counted and sized.

Synapse has no download hook for modules, so the count and the refusal happen where
the per-request check sees the URL, while Synapse authenticates the request: before
any file is read or any remote server asked, so a refused download costs nothing.
The bytes are added once the response is sent, as many as were really sent.

Only the client media API carries an account (`/_matrix/client/v1/media/download`
and `.../thumbnail`, local and remote media alike). Federation requests (another
server fetching our media) never pass through here, and neither do the legacy
unauthenticated `/_matrix/media/v3/...` endpoints (see the README).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from urllib.parse import unquote

from synapse.logging.context import ContextRequest

from synapse_tchap_guard import _synapse_internals as internals
from synapse_tchap_guard.context import GuardContext
from synapse_tchap_guard.gates.quota import QuotaGate

PREFIX = "/_matrix/client/v1/media/"
_MEDIA = re.compile(
    r"/_matrix/client/v1/media/(download|thumbnail)/([^/?#]+)/([^/?#]+)"
)
# Counted downloads whose response has not finished yet; a few seconds' worth.
_PENDING_MAX = 10_000


class MediaGate:
    def __init__(self, context: GuardContext, quota_gate: QuotaGate) -> None:
        self._context = context
        self._quota_gate = quota_gate
        quota = quota_gate.control.quota
        self.active = bool(quota.limits) or quota.block_at is not None
        # request id -> the account and attempt to add the response's bytes to
        self._pending: OrderedDict[str, tuple[str, int]] = OrderedDict()

    @staticmethod
    def concerns(request: ContextRequest) -> bool:
        return request.url.startswith(PREFIX) and request.method in ("GET", "HEAD")

    async def check(self, user_id: str, request: ContextRequest) -> None:
        """Count a download or thumbnail, or refuse it (raises)."""
        match = _MEDIA.match(request.url)
        if match is None or await self._context.is_exempt(user_id):
            return
        kind, server_name, media_id = match.groups()
        target = f"mxc://{unquote(server_name)}/{unquote(media_id)}"
        attempt_id = await self._quota_gate.check(
            user_id,
            target,
            internals.request_info(request),
            details={"media": kind},
        )
        if attempt_id is not None:
            self._pending[request.request_id] = (user_id, attempt_id)
            while len(self._pending) > _PENDING_MAX:
                self._pending.popitem(last=False)

    def on_media_response(self, request_id: str, status: int, sent: int) -> None:
        """Add the bytes a counted download really sent to its attempt."""
        pending = self._pending.pop(request_id, None)
        if pending is None or not 200 <= status < 300 or sent <= 0:
            return
        self._context.api.run_as_background_process(
            "tchap_guard_media_bytes", self._add_bytes, *pending, sent
        )

    async def _add_bytes(self, user_id: str, attempt_id: int, sent: int) -> None:
        try:
            await self._context.store.add_served_bytes(attempt_id, sent)
        except Exception:
            self._context.database_trouble(user_id, "media_downloads", None)
