"""Media downloads: every download and thumbnail an account fetches, counted and sized.

Synapse has no download hook for modules, so the count and the refusal happen where
the per-request check sees the URL, while Synapse authenticates the request: before
any file is read or any remote server asked, so a refused download costs nothing.
Once the response is sent, its bytes are added (as many as were really sent), or, if
Synapse failed to serve it, the download is given back (`counting.awaited`).

Thumbnails no larger than an avatar (`small_thumbnails.max_size`) have a quota of
their own: Element loads them by the hundred, and a refused one makes it fetch the
full picture instead.

Only the client media API carries an account (`/_matrix/client/v1/media/download`
and `.../thumbnail`, local and remote media alike). Federation requests (another
server fetching our media) never pass through here, and neither do the legacy
unauthenticated `/_matrix/media/v3/...` endpoints (see docs/configuration.md,
"Which downloads count").
"""

from __future__ import annotations

from collections.abc import Mapping

from synapse.logging.context import ContextRequest

from synapse_tchap_guard.controls import Control
from synapse_tchap_guard.counting.records import Charge
from synapse_tchap_guard.gates.admission import Admission
from synapse_tchap_guard.routes import Reach
from synapse_tchap_guard.routes import Request as Route


class MediaGate:
    def __init__(
        self,
        admission: Admission,
        downloads: Control,
        small_thumbnails: Control,
        small_size: int,
    ) -> None:
        self._admission = admission
        self._downloads = downloads
        self._small_thumbnails = small_thumbnails
        self._small_size = small_size

    async def fetch(self, user_id: str, request: ContextRequest, route: Route) -> None:
        """Count a download or thumbnail, or refuse it (raises)."""
        params = route.path_params
        target = f"mxc://{params.get('server_name')}/{params.get('media_id')}"
        kind = "download"
        control = self._downloads
        if route.reach is Reach.THUMBNAIL:
            kind = "thumbnail"
            if self._is_small(route.query):
                control = self._small_thumbnails
        if not control.active:
            return
        charge = Charge(target, details={"media": kind})
        # Its response says what it sent, or that it failed.
        await self._admission.admit(user_id, request, control, charge, sized=True)

    def _is_small(self, query: Mapping[str, str]) -> bool:
        """An avatar's size, as the client asks it (Synapse never sends larger)."""
        try:
            width, height = int(query["width"]), int(query["height"])
        except (KeyError, ValueError):
            return False  # Synapse refuses it: counted as a download
        return 0 < width <= self._small_size and 0 < height <= self._small_size
