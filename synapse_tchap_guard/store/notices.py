"""Notices to the owners of accounts: an outbox, and the record of what they were told.

Any process may queue a notice; the main process delivers them (only it can send a
server notice). Queuing counts the notices already queued for the account on that
channel in the window, after writing the account's row, so the limit holds exactly
whichever processes queue them.
"""

from __future__ import annotations

import json
from typing import Any

import attr
from synapse.module_api import LoggingTransaction

from synapse_tchap_guard.policy import Threshold
from synapse_tchap_guard.store.database import Database
from synapse_tchap_guard.store.statements import one, touch_account_txn

PENDING = "pending"
SENT = "sent"
FAILED = "failed"


@attr.frozen
class Notice:
    id: int
    user_id: str
    ts: int
    about: str  # "block", "step_up"
    channel: str  # "email", "server_notice"
    content: dict[str, Any]


class NoticeStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def queue(
        self,
        user_id: str,
        about: str,
        channel: str,
        content: dict[str, Any],
        now: int,
        limit: Threshold,
    ) -> int | None:
        """Queue a notice; None if the account was sent `limit.max` on this channel in
        `limit.window_ms` already."""

        def txn_func(txn: LoggingTransaction) -> int | None:
            touch_account_txn(txn, user_id, now)
            txn.execute(
                "SELECT COUNT(*) FROM tchap_guard_notices"
                " WHERE user_id = ? AND channel = ? AND ts > ?",
                (user_id, channel, now - limit.window_ms),
            )
            if int(one(txn)[0]) >= limit.max:
                return None
            txn.execute(
                "INSERT INTO tchap_guard_notices"
                " (user_id, ts, about, channel, content, state, node)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (
                    user_id,
                    now,
                    about,
                    channel,
                    json.dumps(content),
                    PENDING,
                    self._db.node,
                ),
            )
            return int(one(txn)[0])

        return await self._db.run("queue_notice", txn_func)

    async def pending(self, limit: int) -> list[Notice]:
        def txn_func(txn: LoggingTransaction) -> list[Notice]:
            txn.execute(
                "SELECT id, user_id, ts, about, channel, content FROM tchap_guard_notices"
                " WHERE state = ? ORDER BY id LIMIT ?",
                (PENDING, limit),
            )
            return [
                Notice(id_, user_id, ts, about, channel, json.loads(content))
                for id_, user_id, ts, about, channel, content in txn.fetchall()
            ]

        return await self._db.run("pending_notices", txn_func)

    async def done(self, notice_id: int, state: str, now: int) -> None:
        def txn_func(txn: LoggingTransaction) -> None:
            txn.execute(
                "UPDATE tchap_guard_notices SET state = ?, done_ts = ? WHERE id = ?",
                (state, now, notice_id),
            )

        await self._db.run("notice_done", txn_func)
