"""Accounts: the marks that change how an account is counted (resets, step-ups,
blocks), and the row that serialises what is decided in the database about one
account (a block, a notice's rate limit, a step-up code's)."""

from __future__ import annotations

from collections.abc import Sequence

from synapse.module_api import LoggingTransaction

from synapse_tchap_guard.audit import AuditEvent
from synapse_tchap_guard.policy import AccountMarks
from synapse_tchap_guard.store.database import Database
from synapse_tchap_guard.store.statements import (
    MARKS,
    insert_events_txn,
    marks_txn,
    restart_escalation_txn,
    touch_account_txn,
)


class AccountStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def marks(self, user_id: str) -> AccountMarks:
        return await self._db.run("account_marks", marks_txn, user_id)

    async def record_step_up(
        self, user_id: str, now: int, until: int, events: Sequence[AuditEvent]
    ) -> None:
        """The account re-authenticated: its step-up limits hold until `until`."""

        def txn_func(txn: LoggingTransaction) -> None:
            touch_account_txn(txn, user_id, now)
            txn.execute(
                "UPDATE tchap_guard_accounts SET step_up_ts = ?, step_up_until_ts = ?,"
                " marks_changed_ts = ? WHERE user_id = ?",
                (now, until, now, user_id),
            )
            insert_events_txn(txn, self._db.node, events)

        await self._db.run("record_step_up", txn_func)

    async def restart_escalation(
        self, user_id: str, now: int, events: Sequence[AuditEvent]
    ) -> None:
        """The account crossed a block threshold in monitor mode: as after a block, its
        count towards the next one starts over."""

        def txn_func(txn: LoggingTransaction) -> None:
            touch_account_txn(txn, user_id, now)
            restart_escalation_txn(txn, user_id, now)
            insert_events_txn(txn, self._db.node, events)

        await self._db.run("restart_escalation", txn_func)

    async def marks_changed_since(self, since: int) -> dict[str, AccountMarks]:
        """Accounts whose marks changed (a reset, a step-up, a block) after `since`,
        and their marks now."""

        def txn_func(txn: LoggingTransaction) -> dict[str, AccountMarks]:
            txn.execute(
                f"SELECT user_id, {MARKS} FROM tchap_guard_accounts"
                " WHERE marks_changed_ts > ?",
                (since,),
            )
            return {
                user_id: AccountMarks(*map(int, marks))
                for user_id, *marks in txn.fetchall()
            }

        return await self._db.run("marks_changed", txn_func)
