"""Writing what this process counted to the database, behind, as aggregates.

A request must not wait for the database (on SQLite every query waits its turn on one
connection), so what is counted is kept here and written every `FLUSH_MS` in one
transaction, summed per window bucket: a burst of downloads costs a few rows, not a
row each. It is written at once before a refusal or a block is answered, for an
admin's view, and at shutdown. Audit events go with the batch they explain.

What a crash costs: a process killed without shutting down loses at most what it
counted in its last `FLUSH_MS` (never what decided a refusal or a block: that is
written first); with Redis, the other processes still count it.

When the database is out, what was counted is kept, summed, and written when it is
back (counting in memory goes on meanwhile); past `MAX_UNWRITTEN` rows the oldest
are given up, and said so. A batch the database refuses twice while it answers
otherwise holds a row it cannot take: the batch is split until that row is found,
reported and dropped, and the rest is written. (Once is not enough: an outage may
end between the failed write and the check that the database answers.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from synapse_tchap_guard.audit import AuditEvent
from synapse_tchap_guard.counting.layout import Layout
from synapse_tchap_guard.counting.records import Entry, StateKey
from synapse_tchap_guard.deferreds import Turns
from synapse_tchap_guard.store.counts import CountRow, CountStore, Row, TargetRow
from synapse_tchap_guard.store.database import StoreTimedOut, error_text

logger = logging.getLogger(__name__)

FLUSH_MS = 250
# What a database outage may hold in memory before the oldest rows are given up.
MAX_UNWRITTEN = 100_000

# Rows the database refused for their content, and why (one line): reported, then
# dropped.
OnRejected = Callable[[Sequence[Row], str], None]


class Journal:
    def __init__(self, store: CountStore, on_rejected: OnRejected) -> None:
        self._store = store
        self._on_rejected = on_rejected
        self._fresh: list[tuple[StateKey, Layout, Entry]] = []  # not summed yet
        self._kept: list[Row] = []  # summed, not written: the database was out
        self._events: list[AuditEvent] = []
        self._failing = False
        self._writing = Turns()

    def add(self, key: StateKey, layout: Layout, entry: Entry) -> None:
        self._fresh.append((key, layout, entry))
        if len(self._fresh) + len(self._kept) > MAX_UNWRITTEN:
            self._kept = summed(self._fresh) + self._kept
            self._fresh = []
            excess = len(self._kept) - MAX_UNWRITTEN
            if excess > 0:
                given_up, self._kept = self._kept[:excess], self._kept[excess:]
                self._on_rejected(given_up, "the database was out too long")

    def report(self, events: Sequence[AuditEvent]) -> None:
        """Events to write with the next batch (they are logged already)."""
        self._events.extend(events)

    @property
    def idle(self) -> bool:
        return not (self._fresh or self._kept or self._events)

    def unwritten(self, user_id: str) -> tuple[list[tuple[StateKey, Entry]], list[Row]]:
        """What this process counted of an account that the database lacks: entries
        not written yet, and rows kept while the database was out."""
        fresh = [
            (key, entry) for key, _, entry in self._fresh if key.user_id == user_id
        ]
        kept = [row for row in self._kept if row.user_id == user_id]
        return fresh, kept

    def users(self) -> set[str]:
        """The accounts of which something is not written yet."""
        return {key.user_id for key, _, _ in self._fresh} | {
            row.user_id for row in self._kept
        }

    def writing(self) -> Turns:
        """Writes and loads take turns: a load must not miss a write it overlaps."""
        return self._writing

    async def flush(self) -> None:
        """Write everything counted so far, now."""
        async with self._writing.of(None):
            await self._flush()

    async def _flush(self) -> None:
        rows = merged(self._kept + summed(self._fresh))
        events = self._events
        self._fresh, self._kept, self._events = [], [], []
        if not (rows or events):
            return
        kept_rows, kept_events = await self._write(rows, events)
        if kept_rows or kept_events:
            # The database is out: keep the rest for the next try; the counts in
            # memory stay right meanwhile.
            if not self._failing:
                logger.error("tchap_guard could not write counts; kept in memory")
            self._failing = True
            self._kept = kept_rows + self._kept
            self._events = kept_events + self._events
        elif self._failing:
            logger.info("tchap_guard writes counts again")
            self._failing = False

    async def _write(
        self, rows: list[Row], events: list[AuditEvent]
    ) -> tuple[list[Row], list[AuditEvent]]:
        """Write rows and events; returns what is left because the database is out."""
        reason = ""
        for _ in range(2):
            try:
                await self._store.write(
                    [r for r in rows if isinstance(r, CountRow)],
                    [r for r in rows if isinstance(r, TargetRow)],
                    events,
                )
                return [], []
            except Exception as error:  # background work: there is no request to fail
                # Timed out: the tables are stalled, whatever the rows hold.
                if isinstance(error, StoreTimedOut):
                    return rows, events
                if not await self._database_answers():
                    return rows, events
                reason = error_text(error)
        if not rows:  # cannot happen to JSON in ASCII; never retried forever either
            logger.error("tchap_guard dropped %d audit events: %s", len(events), reason)
            return [], []
        if events:
            _, kept_events = await self._write([], events)
            if kept_events:
                return rows, kept_events
        if len(rows) == 1:
            self._on_rejected(rows, reason)
            return [], []
        half = len(rows) // 2
        kept, _ = await self._write(rows[:half], [])
        if kept:
            return kept + rows[half:], []
        return await self._write(rows[half:], [])

    async def _database_answers(self) -> bool:
        try:
            await self._store.answers()
        except Exception:
            return False
        return True


def summed(fresh: Sequence[tuple[StateKey, Layout, Entry]]) -> list[Row]:
    """Entries as rows: a row per bucket they fall in, a row per target."""
    rows: list[Row] = []
    for key, layout, entry in fresh:
        user_id, session, control = key
        for span, start, served, sent, attempts, refusals in layout.buckets(entry):
            rows.append(
                CountRow(
                    user_id,
                    session,
                    control,
                    span,
                    start,
                    served,
                    sent,
                    attempts,
                    refusals,
                )
            )
        target = entry.target
        if target is not None and layout.shape.distinct and entry.served:
            removed = entry.served < 0
            rows.append(TargetRow(user_id, session, control, target, entry.ts, removed))
    return rows


def merged(rows: Sequence[Row]) -> list[Row]:
    """Rows of the same bucket summed, of the same target kept latest: a batch writes
    each row once (PostgreSQL refuses a statement updating one row twice)."""
    counts: dict[tuple[object, ...], CountRow] = {}
    targets: dict[tuple[object, ...], TargetRow] = {}
    for row in rows:
        if isinstance(row, CountRow):
            seen = counts.get(row.key)
            counts[row.key] = row if seen is None else _sum(seen, row)
            continue
        if not row.removed:
            given_back = targets.get((*row.key[:4], True))
            if given_back is not None and given_back.ts >= row.ts:
                continue  # served, then given back: not reached
        seen_target = targets.get(row.key)
        if seen_target is None or seen_target.ts < row.ts:
            targets[row.key] = row
        if row.removed:
            served = targets.get((*row.key[:4], False))
            if served is not None and served.ts <= row.ts:
                del targets[(*row.key[:4], False)]
    return [*counts.values(), *targets.values()]


def _sum(a: CountRow, b: CountRow) -> CountRow:
    return a._replace(
        served=a.served + b.served,
        bytes=a.bytes + b.bytes,
        attempts=a.attempts + b.attempts,
        refusals=a.refusals + b.refusals,
    )
