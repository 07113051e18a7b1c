"""Media downloads: every download and thumbnail an account fetches, counted and sized.

Synapse has no download hook for modules, so the count and the refusal happen where
the per-request check sees the URL, while Synapse authenticates the request: before
any file is read or any remote server asked, so a refused download costs nothing.
Once the response is sent, its bytes are added (as many as were really sent), or, if
Synapse failed to serve it, the download is given back (`pending_responses`).

Only the client media API carries an account (`/_matrix/client/v1/media/download`
and `.../thumbnail`, local and remote media alike). Federation requests (another
server fetching our media) never pass through here, and neither do the legacy
unauthenticated `/_matrix/media/v3/...` endpoints (see the README).
"""

from __future__ import annotations

from synapse.logging.context import ContextRequest

from synapse_tchap_guard.gates.counted import Charge, CountedGate
from synapse_tchap_guard.pending_responses import PendingResponses
from synapse_tchap_guard.routes import Reach
from synapse_tchap_guard.routes import Request as Route


class MediaGate:
    def __init__(self, gate: CountedGate, responses: PendingResponses) -> None:
        self._gate = gate
        self._responses = responses
        self.counts = gate.counts
        self.active = gate.control.active

    async def fetch(self, user_id: str, request: ContextRequest, route: Route) -> None:
        """Count a download or thumbnail, or refuse it (raises)."""
        params = route.path_params
        target = f"mxc://{params.get('server_name')}/{params.get('media_id')}"
        kind = "thumbnail" if route.reach is Reach.THUMBNAIL else "download"
        line = await self._gate.admit(
            user_id, request, Charge(target, details={"media": kind})
        )
        if line is not None:  # its response says what it sent, or that it failed
            self._responses.expect(request.request_id, self._gate, line, sized=True)
