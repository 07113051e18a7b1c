"""Accounts: the row that serialises an account's exact judgements, and its marks."""

from __future__ import annotations

from collections.abc import Sequence

from synapse.module_api import LoggingTransaction

from synapse_tchap_guard.audit import AuditEvent
from synapse_tchap_guard.policy import AccountMarks
from synapse_tchap_guard.store.audit import insert_events_txn
from synapse_tchap_guard.store.database import Database, one

_MARKS = "counters_reset_ts, escalation_reset_ts, step_up_ts, step_up_until_ts"


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

    async def marks_changed_since(self, since: int) -> set[str]:
        """Accounts whose marks changed (a reset, a step-up, a block) after `since`."""

        def txn_func(txn: LoggingTransaction) -> set[str]:
            txn.execute(
                "SELECT user_id FROM tchap_guard_accounts WHERE marks_changed_ts > ?",
                (since,),
            )
            return {user_id for (user_id,) in txn.fetchall()}

        return await self._db.run("marks_changed", txn_func)


def touch_account_txn(txn: LoggingTransaction, user_id: str, now: int) -> AccountMarks:
    """Write the account's row, so that concurrent judgements of it serialise."""
    txn.execute(
        "INSERT INTO tchap_guard_accounts (user_id, last_attempt_ts) VALUES (?, ?)"
        " ON CONFLICT (user_id) DO UPDATE SET last_attempt_ts = excluded.last_attempt_ts"
        f" RETURNING {_MARKS}",
        (user_id, now),
    )
    return AccountMarks(*map(int, one(txn)))


def restart_escalation_txn(txn: LoggingTransaction, user_id: str, now: int) -> None:
    txn.execute(
        "UPDATE tchap_guard_accounts"
        " SET escalation_reset_ts = ?, marks_changed_ts = ? WHERE user_id = ?",
        (now, now, user_id),
    )


def marks_txn(txn: LoggingTransaction, user_id: str) -> AccountMarks:
    txn.execute(
        f"SELECT {_MARKS} FROM tchap_guard_accounts WHERE user_id = ?", (user_id,)
    )
    row = txn.fetchone()
    return AccountMarks(*map(int, row)) if row else AccountMarks()
