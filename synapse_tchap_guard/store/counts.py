"""What accounts counted, as aggregates: a row per window bucket, and their targets.

Each process writes its own rows (`node` is part of the key), adding to them as it
counts, so processes never write the same row; an account's counts are the sums over
every process's rows. A target row says when a control of distinct targets (rooms,
people) last served one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from synapse.module_api import LoggingTransaction

from synapse_tchap_guard import _synapse_internals as internals
from synapse_tchap_guard.audit import AuditEvent
from synapse_tchap_guard.policy import AccountMarks
from synapse_tchap_guard.store.database import Database
from synapse_tchap_guard.store.statements import insert_events_txn, marks_txn


class CountRow(NamedTuple):
    """What one process added to one bucket of one key's window."""

    user_id: str
    session: str
    control: str
    span_ms: int
    bucket_ts: int
    served: int
    bytes: int
    attempts: int
    refusals: int

    @property
    def key(self) -> tuple[str, str, str, int, int]:
        return self[:5]


class TargetRow(NamedTuple):
    """A target served at `ts`; `removed`: one served at `ts` at most was given
    back (its response failed)."""

    user_id: str
    session: str
    control: str
    target: str
    ts: int
    removed: bool = False

    @property
    def key(self) -> tuple[str, str, str, str, bool]:
        return (*self[:4], self.removed)


Row = CountRow | TargetRow


class StoredCounts(NamedTuple):
    """An account's counts as the database has them (every process's rows summed)."""

    marks: AccountMarks
    # (session, control, span, bucket start, served, bytes, attempts, refusals)
    buckets: list[tuple[str, str, int, int, int, int, int, int]]
    # (session, control, target, ts)
    targets: list[tuple[str, str, str, int]]


_KEY = "user_id, session, control, span_ms, bucket_ts, node"
_INSERT_COUNTS = (
    f"INSERT INTO tchap_guard_counts ({_KEY}, served, bytes, attempts, refusals)"
    " VALUES {values} ON CONFLICT ({key}) DO UPDATE SET"
    " served = tchap_guard_counts.served + excluded.served,"
    " bytes = tchap_guard_counts.bytes + excluded.bytes,"
    " attempts = tchap_guard_counts.attempts + excluded.attempts,"
    " refusals = tchap_guard_counts.refusals + excluded.refusals"
)
_INSERT_TARGETS = (
    "INSERT INTO tchap_guard_targets (user_id, session, control, target, ts)"
    " VALUES {values} ON CONFLICT (user_id, session, control, target)"
    " DO UPDATE SET ts = CASE WHEN excluded.ts > tchap_guard_targets.ts"
    " THEN excluded.ts ELSE tchap_guard_targets.ts END"
)
_REMOVE_TARGET = (
    "DELETE FROM tchap_guard_targets WHERE user_id = ? AND session = ?"
    " AND control = ? AND target = ? AND ts <= ?"
)


class CountStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def load(self, user_id: str, since: int) -> StoredCounts:
        """The account's marks, and what it counted after `since` (and after its
        counters were last reset)."""

        def txn_func(txn: LoggingTransaction) -> StoredCounts:
            marks = marks_txn(txn, user_id)
            start = max(since, marks.counters_reset_ts - 1)
            txn.execute(
                "SELECT session, control, span_ms, bucket_ts, SUM(served), SUM(bytes),"
                " SUM(attempts), SUM(refusals) FROM tchap_guard_counts"
                " WHERE user_id = ? AND bucket_ts > ?"
                " GROUP BY session, control, span_ms, bucket_ts",
                (user_id, start),
            )
            buckets = [
                (s, c, int(span), int(ts), int(a), int(b), int(d), int(e))
                for s, c, span, ts, a, b, d, e in txn.fetchall()
            ]
            txn.execute(
                "SELECT session, control, target, ts FROM tchap_guard_targets"
                " WHERE user_id = ? AND ts > ?",
                (user_id, start),
            )
            targets = [(s, c, t, int(ts)) for s, c, t, ts in txn.fetchall()]
            return StoredCounts(marks, buckets, targets)

        return await self._db.run("load_counts", txn_func)

    async def write(
        self,
        counts: Sequence[CountRow],
        targets: Sequence[TargetRow],
        events: Sequence[AuditEvent],
    ) -> None:
        """Add what this process counted, and its events, in one transaction."""
        node = self._db.node

        def txn_func(txn: LoggingTransaction) -> None:
            _upsert_txn(
                txn,
                _INSERT_COUNTS.replace("{key}", _KEY),
                [(*row[:5], node, *row[5:]) for row in counts],
            )
            for row in targets:
                if row.removed:
                    txn.execute(_REMOVE_TARGET, row[:5])
            _upsert_txn(
                txn, _INSERT_TARGETS, [row[:5] for row in targets if not row.removed]
            )
            insert_events_txn(txn, node, events)

        await self._db.run("write_counts", txn_func)

    async def answers(self) -> None:
        """Raises `StoreUnavailable` unless the tables a write touches can be read:
        when a write fails, this tells an outage from a row the database refuses."""

        def txn_func(txn: LoggingTransaction) -> None:
            txn.execute(
                "SELECT 1 FROM tchap_guard_counts, tchap_guard_targets,"
                " tchap_guard_events LIMIT 0"
            )

        await self._db.run("answers", txn_func)

    async def reached(
        self, user_id: str, limit: int
    ) -> list[tuple[str, str, str, int]]:
        """The targets an account was served lately, newest first: (control, session,
        target, ts)."""

        def txn_func(txn: LoggingTransaction) -> list[tuple[str, str, str, int]]:
            txn.execute(
                "SELECT control, session, target, ts FROM tchap_guard_targets"
                " WHERE user_id = ? ORDER BY ts DESC LIMIT ?",
                (user_id, limit),
            )
            return [(c, s, t, int(ts)) for c, s, t, ts in txn.fetchall()]

        return await self._db.run("reached", txn_func)


def _upsert_txn(
    txn: LoggingTransaction, statement: str, values: Sequence[tuple[object, ...]]
) -> None:
    if not values:
        return
    if internals.is_postgres(txn):  # one multi-row statement
        txn.execute_values(statement.replace("{values}", "?"), values, fetch=False)
    else:
        marks = "(" + ", ".join("?" * len(values[0])) + ")"
        txn.execute_batch(statement.replace("{values}", marks), values)
