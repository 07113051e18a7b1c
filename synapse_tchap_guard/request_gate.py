"""The check Synapse runs while authenticating every request of a regular account.

Synapse calls the account-validity hook `is_user_expired` from `get_user_by_req`, on
every process, for every authenticated request but logout. It is the one place to
refuse a blocked account's every request, and to see the requests that have no hook
of their own (media downloads, profile and room directory lookups), before Synapse
serves them. It must cost next to nothing: a lookup in this process's copy of the
blocks in force, and two anchored patterns that fail within a few characters on the
requests that are neither a download nor a lookup.
"""

from __future__ import annotations

from synapse_tchap_guard import _synapse_internals as internals
from synapse_tchap_guard import responses
from synapse_tchap_guard.blocks import Blocking
from synapse_tchap_guard.context import GuardContext
from synapse_tchap_guard.gates.directory import DirectoryGate, lookup_of
from synapse_tchap_guard.gates.media import MediaGate, download_of


class RequestGate:
    def __init__(
        self,
        context: GuardContext,
        blocking: Blocking,
        media: MediaGate,
        directory: DirectoryGate | None,
    ) -> None:
        self._context = context
        self._registry = blocking.registry
        self._loaded = blocking.loaded
        self._media = media
        self._directory = directory

    async def is_user_expired(self, user_id: str) -> bool | None:
        """Refuse a blocked account's requests; None lets other modules decide."""
        request = internals.current_request()
        if self._loaded.ready or await self._loaded.wait():
            block = self._registry.in_force(user_id, self._context.now())
        else:
            # The blocks could not be loaded, so none is known (the log says why).
            # Gated actions still follow `on_error`; the rest goes on: a broken guard
            # must not take the whole homeserver down.
            block = None
        if not internals.authenticating(request):
            # Pushers and account-status lookups: a blocked account is not served.
            return True if block is not None else None
        if block is not None:
            raise responses.account_blocked(block)
        if self._media.active and (download := download_of(request)) is not None:
            await self._media.check(user_id, request, download)
        elif self._directory is not None and (lookup := lookup_of(request)) is not None:
            await self._directory.check(user_id, request, lookup)
        return None
