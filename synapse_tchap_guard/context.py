"""What every part of the guard needs: the config, the clock, the store, the audit
trail, exemptions, and the one place where a database failure meets `on_error`."""

from __future__ import annotations

import collections
import logging
from collections.abc import Awaitable, Sequence
from typing import TypeVar

from synapse.module_api import ModuleApi

from synapse_tchap_guard import responses
from synapse_tchap_guard.audit import AuditEvent, AuditLog
from synapse_tchap_guard.clock import Clock, now_ms
from synapse_tchap_guard.config import GuardConfig, OnError
from synapse_tchap_guard.inputs import RequestInfo, one_line
from synapse_tchap_guard.store import GuardStore, StoreUnavailable
from synapse_tchap_guard.store.counts import Row
from synapse_tchap_guard.timing import HookTimes

logger = logging.getLogger(__name__)

T = TypeVar("T")

# The step-up endpoint (User-Interactive Auth), under the module's own namespace.
STEP_UP_PATH = "/_synapse/client/tchap_guard/v1/step_up"


class GuardContext:
    def __init__(
        self,
        api: ModuleApi,
        config: GuardConfig,
        store: GuardStore,
        audit: AuditLog,
        clock: Clock,
    ) -> None:
        self.api = api
        self.config = config
        self.store = store
        self.audit = audit
        self.clock = clock
        self.times = HookTimes(api.server_name)
        self.step_up_url = api.public_baseurl.rstrip("/") + STEP_UP_PATH

    def now(self) -> int:
        return now_ms(self.clock)

    async def is_exempt(self, user_id: str) -> bool:
        """Server admins, appservice users and configured accounts are never limited."""
        if user_id in self.config.exempt_users:
            return True
        info = await self.api.get_userinfo_by_id(user_id)
        return info is None or info.is_admin or info.appservice_id is not None

    def emit(self, events: Sequence[AuditEvent]) -> None:
        """Log events already kept in the database (written with what they report)."""
        for event in events:
            self.audit.emit(event)

    async def report(self, events: Sequence[AuditEvent]) -> None:
        """Keep events in the audit trail, then log them; the log never waits on the store."""
        try:
            await self.store.audit.insert(events)
        except StoreUnavailable as error:
            logger.error(
                "tchap_guard could not store %d audit event(s): %s",
                len(events),
                error,  # a StoreUnavailable's text is one line
            )
        self.emit(events)

    async def unless_store_fails(
        self,
        control: str,
        user_id: str | None,
        request: RequestInfo | None,
        work: Awaitable[T],
    ) -> T | None:
        """Await database work done to judge a request. If the guard's tables cannot
        answer, `on_error` decides: None lets the request through, or it gets a 503.

        The one error boundary of the request paths: it catches `StoreUnavailable`
        only, so a bug is never mistaken for a database that lets requests through.
        """
        try:
            return await work
        except StoreUnavailable as error:
            self.store_failed(control, user_id, request, error)
            return None

    def store_failed(
        self,
        control: str,
        user_id: str | None,
        request: RequestInfo | None,
        error: StoreUnavailable,
    ) -> None:
        """Report that the tables failed to judge a request; under `on_error: deny`,
        raise the 503 the client gets."""
        allow = self.config.on_error is OnError.ALLOW
        logger.error(
            "tchap_guard could not judge %s for %s: %s",
            control,
            one_line(user_id),
            error,
        )
        self._database_error(
            user_id,
            control,
            request,
            f"database error while judging {control} for {user_id}",
            "allow" if allow else "deny",
        )
        if not allow:
            raise responses.guard_unavailable() from None

    def report_rejected(self, rows: Sequence[Row], reason: str) -> None:
        """Counts kept in memory that the database would not take: they are dropped
        (their counts stay in memory until the process restarts), and reported."""
        logger.error(
            "tchap_guard dropped %d row(s) it could not write: %s",
            len(rows),
            reason,  # one line, as `error_text` writes it
        )
        dropped = collections.Counter((row.user_id, row.control) for row in rows)
        # One event an account, for the first few (an outage may drop thousands).
        for (user_id, control), count in list(dropped.items())[:10]:
            self._database_error(
                user_id,
                control,
                None,
                f"{count} count(s) of {user_id} could not be written and were dropped",
                "dropped",
                detail=reason,
            )

    def _database_error(
        self,
        user_id: str | None,
        control: str,
        request: RequestInfo | None,
        message: str,
        decision: str,
        detail: str | None = None,
    ) -> None:
        guard: dict[str, object] = {
            "control": control,
            "mode": self.config.mode.value,
            "on_error": self.config.on_error.value,
            "decision": decision,
        }
        if detail is not None:
            guard["error"] = detail
        self.audit.emit(
            AuditEvent(
                action="database_error",
                ts=self.now(),
                user_id=user_id,
                message=message,
                reason="the guard's tables could not be read or written",
                request=request,
                guard=guard,
            )
        )
