"""What every gate needs: the config, the clock, the store, the audit trail, exemptions."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from synapse.module_api import ModuleApi

from synapse_tchap_guard.audit import AuditEvent, AuditLog, RequestInfo
from synapse_tchap_guard.config import GuardConfig, OnError
from synapse_tchap_guard.readiness import Readiness
from synapse_tchap_guard.store import GuardStore

logger = logging.getLogger(__name__)


class GuardContext:
    def __init__(
        self, api: ModuleApi, config: GuardConfig, store: GuardStore, audit: AuditLog
    ) -> None:
        self.api = api
        self.config = config
        self.store = store
        self.audit = audit
        self.readiness = Readiness()

    def now(self) -> int:
        return self.api.get_current_time_msec()

    async def is_exempt(self, user_id: str) -> bool:
        """Server admins, appservice users and configured accounts are never limited."""
        if user_id in self.config.exempt_users:
            return True
        info = await self.api.get_userinfo_by_id(user_id)
        return info is None or info.is_admin or info.appservice_id is not None

    def emit(self, events: Sequence[AuditEvent]) -> None:
        """Log events already kept in the database (written in the deciding transaction)."""
        for event in events:
            self.audit.emit(event)

    async def report(self, events: Sequence[AuditEvent]) -> None:
        """Keep events in the audit trail, then log them; the log never waits on the store."""
        try:
            await self.store.insert_events(events)
        except Exception:
            logger.exception(
                "tchap_guard could not store %d audit event(s)", len(events)
            )
        self.emit(events)

    def database_trouble(
        self, user_id: str | None, control: str, request: RequestInfo | None
    ) -> bool:
        """Report that the store failed while judging a request; True means let it through.

        Call it from the `except` block that caught the failure, so the log shows why.
        """
        allow = self.config.on_error is OnError.ALLOW
        failure = sys.exc_info()[0] is not None
        logger.error(
            "tchap_guard could not judge %s for %s", control, user_id, exc_info=failure
        )
        self.audit.emit(
            AuditEvent(
                action="database_error",
                ts=self.now(),
                user_id=user_id,
                message=f"database error while judging {control} for {user_id}",
                reason="the guard's tables could not be read or written",
                request=request,
                guard={
                    "control": control,
                    "mode": self.config.mode.value,
                    "on_error": self.config.on_error.value,
                    "decision": "allow" if allow else "deny",
                },
            )
        )
        return allow
