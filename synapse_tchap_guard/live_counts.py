"""Counting on a hot path: recent records kept in memory, exact, written to the database
behind.

A download must not wait for the database: Synapse serves one with a single query,
and on SQLite every query waits its turn on one connection. So a control on a hot path
counts here. Each account's recent rows are loaded from the database once, then
counted in memory, where judging a request and recording it happen in one step: in a
single process, nothing can come between them. With several processes (workers,
hence Redis), the account's rows are shared in Redis and each request is appended
there only if its process had seen every row before it (`shared_counts`): exact
across processes too.

Every `FLUSH_MS` the rows counted here are written to the database in one batch, with
their events; and at once before a refusal or a block is answered, for an admin's
view, and at shutdown. A response that finishes before its request's row is written
folds its bytes (or its failure) into that row; later, they are rows of their own.
Every `CHECK_MS` one query finds the accounts whose marks changed (an admin reset, a
step-up, a block), and those are loaded afresh.

What a crash costs: a process killed without shutting down loses at most the rows of
its last `FLUSH_MS` from the database (never those that decided a refusal or a
block: they are written first); with Redis, the other processes still count them.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager

import attr
from synapse.module_api import make_deferred_yieldable
from twisted.internet import defer

from synapse_tchap_guard import _synapse_internals as internals
from synapse_tchap_guard.audit import AuditEvent
from synapse_tchap_guard.inputs import one_line
from synapse_tchap_guard.model import Line, Row
from synapse_tchap_guard.policy import AccountMarks, History, Record
from synapse_tchap_guard.shared_counts import (
    Appended,
    Behind,
    SharedCounts,
    SharedRow,
)
from synapse_tchap_guard.store import GuardStore, StoreTimedOut, StoreUnavailable
from synapse_tchap_guard.store.database import error_text
from synapse_tchap_guard.turns import Turns

logger = logging.getLogger(__name__)

FLUSH_MS = 250
CHECK_MS = 2000
# Marks changed by another process reach the database this late after their time.
WRITE_DELAY_MS = 5000
IDLE_MS = 60_000
# What a database outage may hold in memory before the oldest rows are given up.
MAX_UNWRITTEN = 100_000
# Appends raced by other processes before this one gives up waiting its turn.
MAX_RACES = 50

# Rows the database refused for their content, and why (one line): reported, then
# dropped.
OnRejected = Callable[[Sequence[Row], str], None]
_WRITING = object()  # the turn of what writes or loads rows (see `_writing`)

# Given the account as counted so far, the line one more request adds (None: none).
Decide = Callable[["LiveAccount"], Line | None]


@attr.define(eq=False)
class LiveAccount:
    """One account's records as loaded, plus those counted since."""

    history: History
    marks: AccountMarks
    exempt: bool  # as of the load: admins and appservices are never counted
    used_at: int
    # For controls that count distinct targets: when each was last served.
    targets: dict[str, int] | None = None
    seen: int = 0  # with Redis: how many of the shared rows are in `history`
    # When each target was last refused (a refusal of it again is a repeat).
    refused: dict[str, int] = attr.Factory(dict)

    def counted_since(self, target: str, start: int) -> bool:
        """Whether `target` was served after `start` (it then does not count again)."""
        return self.targets is not None and self.targets.get(target, start) > start

    def refused_since(self, target: str | None, start: int) -> bool:
        return target is not None and self.refused.get(target, start) > start

    def forget_before(self, cutoff: int) -> None:
        """Drop what no window reaching back to `cutoff` needs: an account in use for
        days holds its longest window's worth, not its whole life."""
        self.history.forget_before(cutoff)
        if self.targets is not None:
            self.targets = {t: ts for t, ts in self.targets.items() if ts > cutoff}
        self.refused = {t: ts for t, ts in self.refused.items() if ts > cutoff}

    def add(self, record: Record, target: str | None) -> None:
        self.history.add(record)
        if record.refused and target is not None:
            self.refused[target] = max(record.ts, self.refused.get(target, 0))
        if self.targets is None or target is None:
            return
        if record.served > 0:
            self.targets[target] = max(record.ts, self.targets.get(target, 0))
        elif record.served < 0:  # a failure after it was served: not reached after all
            self.targets.pop(target, None)


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
        shared: SharedCounts | None = None,
    ) -> None:
        self._control = control
        self._longest_window_ms = longest_window_ms
        self._store = store
        self._now = now
        self._is_exempt = is_exempt
        self._on_rejected = on_rejected
        self._distinct_targets = distinct_targets
        self._shared = shared
        # Tells this process's rows in Redis from others' (and from its past lives').
        self._origin = f"{store.database.node}/{secrets.token_hex(4)}"
        self._accounts: dict[str, LiveAccount] = {}
        self._loading: dict[str, list[defer.Deferred[LiveAccount | None]]] = {}
        self._lines: list[Line] = []  # counted here, rows not taken yet
        self._rows: list[Row] = []  # taken, not written yet (amendments, retries)
        self._events: list[AuditEvent] = []
        self._failing = False
        self._shared_failing = False
        self._checked_at = now()
        self._turns = Turns()  # with Redis: one append at a time per account
        self._amendments: dict[str, list[SharedRow]] = {}  # for Redis, by account

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

    async def count(
        self, user_id: str, account: LiveAccount, decide: Decide
    ) -> Line | None:
        """Judge and record one request in one step, exactly: `decide` sees every row
        counted before it, by any process, and its line is recorded as decided."""
        shared = self._shared
        if shared is None:  # one process: nothing can come between the two
            line = decide(account)
            if line is not None:
                self.record(account, line)
            return line
        keys = shared.keys(self._control, user_id)
        async with self._turns.of(user_id):
            for _ in range(MAX_RACES):
                account = self._accounts.get(user_id, account)
                line = decide(account)
                if line is None:
                    return None
                row = SharedRow(self._origin, line.record, line.target)
                cutoff = self._now() - self._longest_window_ms
                try:
                    answer = await shared.append_if_seen(
                        keys, account.seen, [row], cutoff
                    )
                except Exception:
                    self._shared_unavailable()
                    break
                self._shared_failing = False
                if isinstance(answer, Appended):
                    account.seen = answer.total
                    self.record(account, line)
                    return line
                if isinstance(answer, Behind):
                    self._merge(account, answer)
                else:  # missing in Redis: load it afresh, which seeds it
                    self.forget(user_id)
                    account = await self.account(user_id)
        # Redis does not answer (or races without end): judge on what this process
        # knows, as a single process would.
        line = decide(account)
        if line is not None:
            self.record(account, line)
        return line

    def record(
        self,
        account: LiveAccount,
        line: Line,
        events: Sequence[AuditEvent] = (),
    ) -> None:
        """Count a line decided on `account` (see `count`), to be written behind."""
        account.add(line.record, line.target)
        self._lines.append(line)
        self._events.extend(events)
        unwritten = len(self._lines) + len(self._rows)
        if unwritten > MAX_UNWRITTEN:
            self._give_up(unwritten - MAX_UNWRITTEN)

    def report(self, events: Sequence[AuditEvent]) -> None:
        """Events to write with the next batch (they are logged already)."""
        self._events.extend(events)

    def finish(self, line: Line, ok: bool, sent: int) -> None:
        """The request's response is sent: `sent` bytes, or a failure (`ok` False)
        that gives back what it was served."""
        now = self._now()
        amendment: Row | None = None
        if not ok and line.served:
            units = line.served
            line.failed = True
            record = Record(line.ts, 0, -units)
            if line.taken:
                amendment = self._amendment(line, "failed", record)
        elif ok and sent > 0 and line.served:
            record = Record(now, 0, 0, sent)
            if line.taken:
                amendment = self._amendment(line, "bytes", record)
            else:
                line.bytes += sent
        else:
            return
        if amendment is not None:
            self._rows.append(amendment)
        account = self._accounts.get(line.user_id)
        if account is not None:
            account.add(record, line.target)
        if self._shared is not None:  # other processes hear of it with the next flush
            row = SharedRow(self._origin, record, line.target)
            self._amendments.setdefault(line.user_id, []).append(row)

    def forget(self, user_id: str) -> None:
        """Drop an account's copy: its next use loads it afresh from the database."""
        self._accounts.pop(user_id, None)

    async def reset(self, user_id: str) -> None:
        """An admin reset the account's counters: every process starts it afresh."""
        self.forget(user_id)
        if self._shared is not None:
            try:
                await self._shared.drop(self._shared.keys(self._control, user_id))
            except Exception:
                self._shared_unavailable()

    # --- behind ----------------------------------------------------------------------

    async def sync(self) -> None:
        """Write what was counted; every `CHECK_MS`, reload what changed elsewhere."""
        idle = not (self._lines or self._rows or self._events or self._amendments)
        if idle and self._now() - self._checked_at < CHECK_MS:
            return  # four times a second, for each control: nothing to take turns for
        await self._exclusively(self._sync)

    async def flush(self) -> None:
        """Write everything counted so far, now (its later bytes follow)."""
        await self._exclusively(self._flush)

    async def _exclusively(self, work: Callable[[], Awaitable[None]]) -> None:
        async with self._writing():
            await work()

    def _writing(self) -> AbstractAsyncContextManager[None]:
        """Flushes and loads take turns: a load must not miss a write it overlaps."""
        return self._turns.of(_WRITING)

    async def _sync(self) -> None:
        await self._flush()
        now = self._now()
        if now - self._checked_at < CHECK_MS:
            return
        since, self._checked_at = self._checked_at - WRITE_DELAY_MS, now
        try:
            changed = await self._store.accounts.marks_changed_since(since)
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
                account.forget_before(cutoff)

    async def _flush(self) -> None:
        await self._share_amendments()
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

        A batch the database refuses twice while it answers otherwise holds a row it
        cannot take: the batch is split until that row is found, reported and dropped,
        and the rest is written. (Once is not enough: an outage may end between the
        failed write and the check that the database answers.)
        """
        for _ in range(2):
            try:
                await self._store.attempts.write(rows, events)
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
            await self._store.attempts.answers()
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

    @staticmethod
    def _amendment(line: Line, decision: str, record: Record) -> Row:
        return Row(
            line.user_id,
            line.control,
            record.ts,
            decision,
            line.target,
            0,
            record.served,
            record.bytes,
        )

    # --- shared between processes ----------------------------------------------------

    def _merge(self, account: LiveAccount, behind: Behind) -> None:
        """Rows other processes appended: this process's own are in already."""
        for row in behind.rows:
            if row.origin != self._origin:
                account.add(row.record, row.target)
        account.seen = behind.total

    async def _share_amendments(self) -> None:
        """Bytes and failures, for the other processes (a batch per account)."""
        shared, amendments = self._shared, self._amendments
        if shared is None or not amendments:
            return
        self._amendments = {}
        try:
            for user_id, rows in amendments.items():
                await shared.append(shared.keys(self._control, user_id), rows)
        except Exception:
            self._shared_unavailable()

    def _shared_unavailable(self) -> None:
        if not self._shared_failing:
            logger.error(
                "tchap_guard cannot reach Redis: %s counts are judged per process"
                " until it answers",
                self._control,
                exc_info=True,
            )
        self._shared_failing = True

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
            # Not while a batch is being written: its rows would be in neither place.
            async with self._writing():
                loaded = await self._load(user_id)
            self._accounts[user_id] = loaded
            return loaded
        finally:
            del self._loading[user_id]
            for waiter in waiting:
                internals.wake(waiter, loaded)

    async def _load(self, user_id: str) -> LiveAccount:
        now = self._now()
        since = now - self._longest_window_ms
        stored, marks = await self._store.attempts.load(user_id, self._control, since)
        # What this process counted that the database does not have yet.
        since = max(since, marks.counters_reset_ts)
        stored += [
            row
            for row in self._unwritten_rows()
            if row.user_id == user_id and row.ts > since
        ]
        rows = [(row.record, row.target) for row in stored]
        seen = 0
        if self._shared is not None:
            keys = self._shared.keys(self._control, user_id)
            seed = [SharedRow("database", record, target) for record, target in rows]
            try:
                seen, shared = await self._shared.seed(keys, seed)
            except Exception:
                self._shared_unavailable()
            else:
                rows = [(row.record, row.target) for row in shared]
        account = LiveAccount(
            history=History(),
            marks=marks,
            exempt=await self._is_exempt(user_id),
            used_at=now,
            targets={} if self._distinct_targets else None,
            seen=seen,
        )
        for record, target in sorted(rows, key=lambda row: row[0].ts):
            account.add(record, target)
        return account

    async def _reload(self, user_id: str, account: LiveAccount) -> None:
        try:
            fresh = await self._load(user_id)
        except StoreUnavailable as error:
            logger.warning(
                "tchap_guard could not reload %s: %s", one_line(user_id), error
            )
            return
        fresh.used_at = account.used_at
        if self._accounts.get(user_id) is account:
            self._accounts[user_id] = fresh
