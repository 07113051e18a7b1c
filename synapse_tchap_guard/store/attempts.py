"""The attempts log: what each account did, per control, and what was decided."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attr
from synapse.module_api import LoggingTransaction

from synapse_tchap_guard import _synapse_internals as internals
from synapse_tchap_guard.audit import AuditEvent
from synapse_tchap_guard.model import AlreadyBlocked, Block, NewBlock, Row, StoredLine
from synapse_tchap_guard.policy import AccountMarks, History, Verdict
from synapse_tchap_guard.store.accounts import marks_txn, touch_account_txn
from synapse_tchap_guard.store.audit import insert_events_txn
from synapse_tchap_guard.store.blocks import block_in_force_txn, open_block_txn
from synapse_tchap_guard.store.database import Database

_COLUMNS = "user_id, control, ts, decision, target, attempts, served, bytes, node"
_INSERT = (
    f"INSERT INTO tchap_guard_attempts ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_ROWS = "SELECT ts, decision, target, attempts, served, bytes FROM tchap_guard_attempts"
_OF_ACCOUNT = "WHERE user_id = ? AND control = ? AND ts > ?"


@attr.frozen
class Recorded:
    """A request judged and written in one transaction, with what followed from it."""

    verdict: Verdict
    block: Block | None
    events: tuple[AuditEvent, ...]


# Given the account's history and marks, the verdict on one more request.
Decide = Callable[[History, AccountMarks], Verdict]
# Given the verdict, the block to open (if any), and the events that report it.
BlockFor = Callable[[Verdict], NewBlock | None]
Report = Callable[[Verdict, Block | None], Sequence[AuditEvent]]


class AttemptStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def judge(
        self,
        user_id: str,
        control: str,
        target: str | None,
        units: int,
        now: int,
        since: int,
        decide: Decide,
        block_for: BlockFor,
        report: Report,
    ) -> Recorded:
        """Count one request exactly, whatever other processes do: lock the account's
        row, read its history after `since`, decide, and write the line, the block
        and the events. Raises `AlreadyBlocked` (and counts nothing) if it is."""

        def txn_func(txn: LoggingTransaction) -> Recorded:
            marks = touch_account_txn(txn, user_id, now)
            block = block_in_force_txn(txn, user_id, now)
            if block is not None:
                raise AlreadyBlocked(block)
            rows = _rows_txn(txn, user_id, control, since, marks)
            history = History.of(row.record for row in rows)
            verdict = decide(history, marks)
            served = units if verdict.decision.served else 0
            row = Row(
                user_id, control, now, verdict.decision.value, target, 1, served, 0
            )
            _insert_rows_txn(txn, self._db.node, [row])
            if verdict.decision.escalates:
                txn.execute(
                    "UPDATE tchap_guard_accounts"
                    " SET escalation_reset_ts = ?, marks_changed_ts = ? WHERE user_id = ?",
                    (now, now, user_id),
                )
            new_block = block_for(verdict)
            opened = open_block_txn(txn, user_id, new_block, now) if new_block else None
            events = tuple(report(verdict, opened))
            insert_events_txn(txn, self._db.node, events)
            return Recorded(verdict, opened, events)

        return await self._db.run("judge", txn_func)

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
            _note_last_seen_txn(txn, rows)
            insert_events_txn(txn, self._db.node, events)

        await self._db.run("write_attempts", txn_func)

    async def counted_elsewhere_since(self, control: str, since: int) -> set[str]:
        """Accounts with lines written by another process after `since`."""

        def txn_func(txn: LoggingTransaction) -> set[str]:
            txn.execute(
                "SELECT DISTINCT user_id FROM tchap_guard_attempts"
                " WHERE ts > ? AND control = ? AND node <> ?",
                (since, control, self._db.node),
            )
            return {user_id for (user_id,) in txn.fetchall()}

        return await self._db.run("counted_elsewhere", txn_func)

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


def _note_last_seen_txn(txn: LoggingTransaction, rows: Sequence[Row]) -> None:
    """Keep the accounts whose rows no window needs any more prunable (see pruning)."""
    last_seen: dict[str, int] = {}
    for row in rows:
        last_seen[row.user_id] = max(row.ts, last_seen.get(row.user_id, 0))
    txn.execute_batch(
        "INSERT INTO tchap_guard_accounts (user_id, last_attempt_ts)"
        " VALUES (?, ?) ON CONFLICT (user_id) DO UPDATE"
        " SET last_attempt_ts = excluded.last_attempt_ts"
        " WHERE excluded.last_attempt_ts > tchap_guard_accounts.last_attempt_ts",
        sorted(last_seen.items()),  # always the same order: no deadlocks
    )
