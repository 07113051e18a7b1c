"""Media downloads: every download and thumbnail an account fetches, counted and sized.

Synapse has no download hook for modules, so the count and the refusal happen where
the per-request check sees the URL, while Synapse authenticates the request: before
any file is read or any remote server asked, so a refused download costs nothing.
Once the response is sent, its bytes are added (as many as were really sent), or, if
Synapse failed to serve it, the download is given back.

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

from synapse_tchap_guard import inputs
from synapse_tchap_guard.gates.counted import Charge, CountedGate
from synapse_tchap_guard.model import Line

_MEDIA = re.compile(
    r"/_matrix/client/v1/media/(download|thumbnail)/([^/?#]+)/([^/?#]+)"
)
# Counted downloads whose response has not finished yet; a few seconds' worth.
_PENDING_MAX = 10_000


@attr.frozen
class Download:
    kind: str  # download | thumbnail
    target: str  # mxc://server/id, normalised (`inputs.target`)


def download_of(request: ContextRequest) -> Download | None:
    """The download or thumbnail this request asks for, if it is one."""
    if request.method not in ("GET", "HEAD"):
        return None
    match = _MEDIA.match(request.url)
    if match is None:
        return None
    kind, server_name, media_id = match.groups()
    mxc = f"mxc://{unquote(server_name)}/{unquote(media_id)}"
    return Download(kind, inputs.target(mxc))


class MediaGate:
    def __init__(self, gate: CountedGate) -> None:
        self._gate = gate
        self.counts = gate.counts
        self.active = gate.control.active
        # request id -> the line its response amends (bytes sent, or a failure)
        self._pending: OrderedDict[str, Line] = OrderedDict()

    async def check(
        self, user_id: str, request: ContextRequest, download: Download
    ) -> None:
        """Count a download or thumbnail, or refuse it (raises)."""
        charge = Charge(download.target, details={"media": download.kind})
        line = await self._gate.admit(user_id, request, charge)
        if line is not None:
            self._pending[request.request_id] = line
            while len(self._pending) > _PENDING_MAX:
                self._pending.popitem(last=False)

    def on_media_response(self, request_id: str, status: int, sent: int) -> None:
        """A counted download's response is sent: its bytes, or its failure."""
        line = self._pending.pop(request_id, None)
        if line is not None:
            self._gate.finish(line, 200 <= status < 300, sent)
