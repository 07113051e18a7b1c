"""The attempts log: what each account did, per control, and what was decided."""

from __future__ import annotations

from collections.abc import Sequence

from synapse.module_api import LoggingTransaction

from synapse_tchap_guard import _synapse_internals as internals
from synapse_tchap_guard.audit import AuditEvent
from synapse_tchap_guard.model import Row, StoredLine
from synapse_tchap_guard.policy import AccountMarks
from synapse_tchap_guard.store.accounts import marks_txn
from synapse_tchap_guard.store.audit import insert_events_txn
from synapse_tchap_guard.store.database import Database

_COLUMNS = "user_id, control, ts, decision, target, attempts, served, bytes, node"
_INSERT = (
    f"INSERT INTO tchap_guard_attempts ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_ROWS = "SELECT ts, decision, target, attempts, served, bytes FROM tchap_guard_attempts"
_OF_ACCOUNT = "WHERE user_id = ? AND control = ? AND ts > ?"


class AttemptStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def load(
        self, user_id: str, control: str, since: int
    ) -> tuple[list[Row], AccountMarks]:
        """The account's rows after `since` (and its last reset), and its marks."""

        def txn_func(txn: LoggingTransaction) -> tuple[list[Row], AccountMarks]:
            marks = marks_txn(txn, user_id)
            return _rows_txn(txn, user_id, control, since, marks), marks

        return await self._db.run("load_history", txn_func)

    async def write(self, rows: Sequence[Row], events: Sequence[AuditEvent]) -> None:
        """Write rows counted in memory, and their events, in one transaction."""

        def txn_func(txn: LoggingTransaction) -> None:
            _insert_rows_txn(txn, self._db.node, rows)
            insert_events_txn(txn, self._db.node, events)

        await self._db.run("write_attempts", txn_func)

    async def answers(self) -> None:
        """Raises `StoreUnavailable` unless the tables a write touches can be read:
        when a write fails, this tells an outage from a row the database refuses."""

        def txn_func(txn: LoggingTransaction) -> None:
            txn.execute(
                "SELECT 1 FROM tchap_guard_attempts, tchap_guard_events LIMIT 0"
            )

        await self._db.run("answers", txn_func)

    async def recent(self, user_id: str, limit: int) -> list[StoredLine]:
        def txn_func(txn: LoggingTransaction) -> list[StoredLine]:
            txn.execute(
                "SELECT id, control, ts, decision, attempts, served, bytes, target"
                " FROM tchap_guard_attempts WHERE user_id = ? ORDER BY id DESC LIMIT ?",
                (user_id, limit),
            )
            return [StoredLine(*row) for row in txn.fetchall()]

        return await self._db.run("recent_attempts", txn_func)


def _rows_txn(
    txn: LoggingTransaction,
    user_id: str,
    control: str,
    since: int,
    marks: AccountMarks,
) -> list[Row]:
    txn.execute(
        f"{_ROWS} {_OF_ACCOUNT} ORDER BY ts",
        (user_id, control, max(since, marks.counters_reset_ts)),
    )
    return [Row(user_id, control, *row) for row in txn.fetchall()]


def _insert_rows_txn(txn: LoggingTransaction, node: str, rows: Sequence[Row]) -> None:
    values = [(*row, node) for row in rows]
    if internals.is_postgres(txn):  # one multi-row statement
        txn.execute_values(
            f"INSERT INTO tchap_guard_attempts ({_COLUMNS}) VALUES ?",
            values,
            fetch=False,
        )
    else:
        txn.execute_batch(_INSERT, values)
