"""The audit trail: every event about an account, kept for the admin API."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from synapse.module_api import LoggingTransaction

from synapse_tchap_guard.audit import AuditEvent
from synapse_tchap_guard.store.database import Database
from synapse_tchap_guard.store.statements import insert_events_txn


class AuditStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def insert(self, events: Sequence[AuditEvent]) -> None:
        await self._db.run("insert_events", insert_events_txn, self._db.node, events)

    async def recent(self, user_id: str, limit: int) -> list[dict[str, Any]]:
        def txn_func(txn: LoggingTransaction) -> list[dict[str, Any]]:
            txn.execute(
                "SELECT document FROM tchap_guard_events"
                " WHERE user_id = ? ORDER BY id DESC LIMIT ?",
                (user_id, limit),
            )
            return [json.loads(document) for (document,) in txn.fetchall()]

        return await self._db.run("recent_events", txn_func)
