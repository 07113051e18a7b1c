"""Counting on a hot path: recent records kept in memory, written to the database behind.

A download must not wait for the database: Synapse serves one with a single query,
and on SQLite every query waits its turn on one connection. So a control on a hot path
counts here. Each account's recent records are loaded from the database once, then
counted in memory; every `FLUSH_MS` the rows counted since are written in one batch,
with their events, and at once before a refusal or a decision to block is answered,
for an admin's view, and at shutdown. A response that finishes before its request's
row is written folds its bytes (or its failure) into that row; later, they are rows of
their own. Every `CHECK_MS` one query finds the accounts that another process counted
for, or whose marks changed (an admin reset, a step-up), and only those are reloaded.

What that costs: another process's counts are seen within a few seconds, and a
process killed without shutting down loses at most the rows of its last `FLUSH_MS`
(never those that decided a refusal or a block: they are written first).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

import attr
from synapse.module_api import make_deferred_yieldable
from twisted.internet import defer

from synapse_tchap_guard import _synapse_internals as internals
from synapse_tchap_guard.audit import AuditEvent
from synapse_tchap_guard.inputs import one_line
from synapse_tchap_guard.model import Line, Row
from synapse_tchap_guard.policy import AccountMarks, History, Record
from synapse_tchap_guard.store import GuardStore, StoreTimedOut, StoreUnavailable
from synapse_tchap_guard.store.database import error_text

logger = logging.getLogger(__name__)

FLUSH_MS = 250
CHECK_MS = 2000
# Rows another process counted may reach the database this late after their time.
WRITE_DELAY_MS = FLUSH_MS + 5000
IDLE_MS = 60_000
# What a database outage may hold in memory before the oldest rows are given up.
MAX_UNWRITTEN = 100_000

# Rows the database refused for their content, and why (one line): reported, then
# dropped.
OnRejected = Callable[[Sequence[Row], str], None]


@attr.define(eq=False)
class LiveAccount:
    """One account's records as loaded, plus those counted here since."""

    history: History
    marks: AccountMarks
    exempt: bool  # as of the load: admins and appservices are never counted
    used_at: int
    # For controls that count distinct targets: when each was last served.
    targets: dict[str, int] | None = None

    def counted_since(self, target: str, start: int) -> bool:
        """Whether `target` was served after `start` (it then does not count again)."""
        return self.targets is not None and self.targets.get(target, start) > start

    def add(self, record: Record, target: str | None) -> None:
        self.history.add(record)
        if self.targets is not None and target is not None and record.served > 0:
            self.targets[target] = max(record.ts, self.targets.get(target, 0))


class LiveCounts:
    def __init__(
        self,
        control: str,
        longest_window_ms: int,
        store: GuardStore,
        now: Callable[[], int],
        is_exempt: Callable[[str], Awaitable[bool]],
        on_rejected: OnRejected,
        distinct_targets: bool = False,
    ) -> None:
        self._control = control
        self._longest_window_ms = longest_window_ms
        self._store = store
        self._now = now
        self._is_exempt = is_exempt
        self._on_rejected = on_rejected
        self._distinct_targets = distinct_targets
        self._accounts: dict[str, LiveAccount] = {}
        self._loading: dict[str, list[defer.Deferred[LiveAccount | None]]] = {}
        self._lines: list[Line] = []  # counted here, rows not taken yet
        self._rows: list[Row] = []  # taken, not written yet (amendments, retries)
        self._events: list[AuditEvent] = []
        self._failing = False
        self._checked_at = now()
        self._busy = False  # a flush or a reload is talking to the database
        self._queue: list[defer.Deferred[None]] = []

    # --- the hot path ----------------------------------------------------------------

    def loaded(self, user_id: str, now: int) -> LiveAccount | None:
        """The account's counts if they are in memory: no waiting."""
        account = self._accounts.get(user_id)
        if account is not None:
            account.used_at = now
        return account

    async def account(self, user_id: str) -> LiveAccount:
        """The account's counts, loaded from the database on first use.

        Raises `StoreUnavailable` if the database cannot answer.
        """
        account = self._accounts.get(user_id) or await self._load_once(user_id)
        account.used_at = self._now()
        return account

    def record(
        self,
        account: LiveAccount,
        line: Line,
        events: Sequence[AuditEvent] = (),
    ) -> None:
        account.add(line.row().record, line.target)
        self._lines.append(line)
        self._events.extend(events)
        unwritten = len(self._lines) + len(self._rows)
        if unwritten > MAX_UNWRITTEN:
            self._give_up(unwritten - MAX_UNWRITTEN)

    def finish(self, line: Line, ok: bool, sent: int) -> None:
        """The request's response is sent: `sent` bytes, or a failure (`ok` False)
        that gives back what it was served."""
        account = self._accounts.get(line.user_id)
        now = self._now()
        if not ok and line.served:
            units = line.served
            line.failed = True
            if line.taken:
                self._rows.append(self._amendment(line, "failed", -units, 0, line.ts))
            if account is not None:
                account.add(Record(line.ts, 0, -units), None)
                if account.targets is not None and line.target is not None:
                    account.targets.pop(line.target, None)
        elif ok and sent > 0 and line.served:
            if line.taken:
                self._rows.append(self._amendment(line, "bytes", 0, sent, now))
            else:
                line.bytes += sent
            if account is not None:
                account.add(Record(now, 0, 0, sent), None)

    def forget(self, user_id: str) -> None:
        """Drop an account's copy: its next use loads it afresh from the database."""
        self._accounts.pop(user_id, None)

    # --- behind ----------------------------------------------------------------------

    async def sync(self) -> None:
        """Write what was counted; every `CHECK_MS`, reload what changed elsewhere."""
        await self._exclusively(self._sync)

    async def flush(self) -> None:
        """Write everything counted so far, now (its later bytes follow)."""
        await self._exclusively(self._flush)

    async def _exclusively(self, work: Callable[[], Awaitable[None]]) -> None:
        """Flushes and reloads take turns: a reload must not miss a write it overlaps."""
        while self._busy:
            turn: defer.Deferred[None] = defer.Deferred()
            self._queue.append(turn)
            await make_deferred_yieldable(turn)
        self._busy = True
        try:
            await work()
        finally:
            self._busy = False
            if self._queue:
                internals.wake(self._queue.pop(0))

    async def _sync(self) -> None:
        await self._flush()
        now = self._now()
        if now - self._checked_at < CHECK_MS:
            return
        since, self._checked_at = self._checked_at - WRITE_DELAY_MS, now
        try:
            changed = await self._store.attempts.counted_elsewhere_since(
                self._control, since
            )
            changed |= await self._store.accounts.marks_changed_since(since)
        except StoreUnavailable as error:
            logger.warning("tchap_guard could not check for changes: %s", error)
            return
        unwritten = {row.user_id for row in self._unwritten_rows()}
        cutoff = now - self._longest_window_ms
        for user_id, account in list(self._accounts.items()):
            if user_id in changed:
                await self._reload(user_id, account)
            elif now - account.used_at > IDLE_MS and user_id not in unwritten:
                del self._accounts[user_id]
            else:
                account.history.forget_before(cutoff)
                if account.targets is not None:
                    account.targets = {
                        target: ts
                        for target, ts in account.targets.items()
                        if ts > cutoff
                    }

    async def _flush(self) -> None:
        rows = [line.take() for line in self._lines] + self._rows
        events = self._events
        self._lines, self._rows, self._events = [], [], []
        if not (rows or events):
            return
        kept_rows, kept_events = await self._write(rows, events)
        if kept_rows or kept_events:
            # The database is out: keep the rest for the next try; the counts in
            # memory stay right meanwhile.
            if not self._failing:
                logger.error(
                    "tchap_guard could not write %s counts; they are kept in memory",
                    self._control,
                )
            self._failing = True
            self._rows = kept_rows + self._rows
            self._events = kept_events + self._events
        elif self._failing:
            logger.info("tchap_guard writes %s counts again", self._control)
            self._failing = False

    async def _write(
        self, rows: list[Row], events: list[AuditEvent]
    ) -> tuple[list[Row], list[AuditEvent]]:
        """Write rows and events; returns what is left because the database is out.

        A batch the database refuses while it answers otherwise holds a row it cannot
        take: the batch is split until that row is found, reported and dropped, and
        the rest is written.
        """
        try:
            await self._store.attempts.write(rows, events)
            return [], []
        except Exception as error:  # background work: there is no request to fail
            # Timed out: the tables are stalled, whatever the rows hold.
            if isinstance(error, StoreTimedOut) or not await self._database_answers():
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
            await self._store.database.ping()
        except Exception:
            return False
        return True

    def _give_up(self, count: int) -> None:
        """An outage has lasted too long: drop the oldest rows, and say so."""
        rows = [line.take() for line in self._lines] + self._rows
        self._lines = []
        self._rows = rows[count:]
        del self._events[: max(0, len(self._events) - MAX_UNWRITTEN)]
        self._on_rejected(rows[:count], "the database was out too long")

    def _unwritten_rows(self) -> list[Row]:
        """What this process counted that the database does not have yet (the rows
        of lines not taken are made afresh: their bytes may still change)."""
        return [line.row() for line in self._lines] + self._rows

    def _amendment(
        self, line: Line, decision: str, served: int, size: int, ts: int
    ) -> Row:
        return Row(
            line.user_id, line.control, ts, decision, line.target, 0, served, size
        )

    # --- loading ---------------------------------------------------------------------

    async def _load_once(self, user_id: str) -> LiveAccount:
        """Load an account; requests arriving meanwhile wait for that same load."""
        waiting = self._loading.get(user_id)
        if waiting is not None:
            waiter: defer.Deferred[LiveAccount | None] = defer.Deferred()
            waiting.append(waiter)
            loaded = await make_deferred_yieldable(waiter)
            if loaded is None:
                raise StoreUnavailable(f"could not load the counts of {user_id}")
            return loaded
        self._loading[user_id] = waiting = []
        loaded = None
        try:
            loaded = await self._load(user_id)
            self._accounts[user_id] = loaded
            return loaded
        finally:
            del self._loading[user_id]
            for waiter in waiting:
                internals.wake(waiter, loaded)

    async def _load(self, user_id: str) -> LiveAccount:
        now = self._now()
        stored, marks = await self._store.attempts.load(
            user_id, self._control, now - self._longest_window_ms
        )
        account = LiveAccount(
            history=History.of(row.record for row in stored),
            marks=marks,
            exempt=await self._is_exempt(user_id),
            used_at=now,
            targets={} if self._distinct_targets else None,
        )
        if account.targets is not None:
            for row in stored:
                if row.target is not None and row.served > 0:
                    account.targets[row.target] = max(
                        row.ts, account.targets.get(row.target, 0)
                    )
                elif row.target is not None and row.served < 0:
                    account.targets.pop(row.target, None)
        return account

    async def _reload(self, user_id: str, account: LiveAccount) -> None:
        try:
            fresh = await self._load(user_id)
        except StoreUnavailable as error:
            logger.warning(
                "tchap_guard could not reload %s: %s", one_line(user_id), error
            )
            return
        # What this process counted that the database does not have yet, including
        # what was counted while the reload ran (no write overlaps a reload).
        for row in self._unwritten_rows():
            if row.user_id == user_id:
                fresh.add(row.record, row.target)
        fresh.used_at = account.used_at
        if self._accounts.get(user_id) is account:
            self._accounts[user_id] = fresh
