"""Counting on a hot path: recent attempts kept in memory, written to the database behind.

A download must not wait for the database: Synapse serves one with a single query,
and on SQLite every query waits its turn on one connection. So a control on a hot path
counts here. Each account's recent attempts are loaded from the database once, then
counted in memory. Twice a second the attempts whose response has finished are
written in one batch, with the bytes each response really sent and the events; every
attempt is written at once before a decision to block, for an admin's view, and at
shutdown, as Synapse does for its own per-request bookkeeping (client
IPs). Every two seconds one query finds the accounts that another process counted
for, or whose counters an admin reset, and only those are reloaded.

What that costs: another process's attempts are seen within a few seconds (attempts
being answered are written within ten), and a process killed without shutting down
loses at most the attempts it had not written.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import attr
from synapse.module_api import make_deferred_yieldable
from twisted.internet import defer

from synapse_tchap_guard import _synapse_internals as internals
from synapse_tchap_guard.audit import AuditEvent
from synapse_tchap_guard.context import GuardContext
from synapse_tchap_guard.policy import AccountMarks, Decision, History
from synapse_tchap_guard.store import AttemptRecord

logger = logging.getLogger(__name__)

FLUSH_MS = 500
RELOAD_MS = 2000
# An attempt whose response is still being sent after this long is written anyway.
MAX_HOLD_MS = 10_000
# How long after an attempt another process may write it; checks for changes overlap.
WRITE_DELAY_MS = MAX_HOLD_MS + FLUSH_MS + 1000
IDLE_MS = 60_000
# What a database outage may hold in memory before the oldest counts are given up.
MAX_PENDING = 100_000


@attr.define(eq=False)
class LiveAttempt:
    """An attempt counted here. `finished` once its response is sent (or refused)."""

    user_id: str
    ts: int
    decision: Decision
    target: str | None
    bytes: int = 0
    finished: bool = False
    written: bool = False
    id: int | None = None  # known for attempts written before they finished
    bytes_in_db: int = 0

    @property
    def served(self) -> bool:
        return self.decision.served

    def record(self, control: str) -> AttemptRecord:
        return AttemptRecord(
            self.user_id, control, self.ts, self.decision.value, self.target, self.bytes
        )


@attr.define
class LiveAccount:
    """One account's attempts as loaded, plus those counted here since."""

    history: History
    # Attempts counted here that the database does not fully have yet.
    local: list[LiveAttempt]
    marks: AccountMarks
    used_at: int
    exempt: bool  # as of the load: admins and appservices are never counted
    # For controls that count distinct targets: when each was last counted (served).
    targets: dict[str, int] | None = None

    def counted_since(self, target: str, start: int) -> bool:
        """Whether `target` was counted after `start` (it then does not count again)."""
        assert self.targets is not None
        return self.targets.get(target, start) > start


class LiveCounts:
    def __init__(
        self,
        context: GuardContext,
        control: str,
        longest_window_ms: int,
        distinct_targets: bool = False,
    ) -> None:
        self._context = context
        self._control = control
        self._longest_window_ms = longest_window_ms
        self._distinct_targets = distinct_targets
        self._accounts: dict[str, LiveAccount] = {}
        self._loading: dict[str, list[defer.Deferred[LiveAccount | None]]] = {}
        self._unwritten: list[LiveAttempt] = []
        self._late: set[LiveAttempt] = set()  # written, then sent more bytes
        self._events: list[AuditEvent] = []
        self._failing = False
        self._checked_at = context.now()
        self._busy = False  # a flush or a reload is talking to the database
        self._queue: list[defer.Deferred[None]] = []

    def loaded(self, user_id: str, now: int) -> LiveAccount | None:
        """The account's counts if they are in memory: the hot path, no waiting."""
        account = self._accounts.get(user_id)
        if account is not None:
            account.used_at = now
        return account

    async def account(self, user_id: str) -> LiveAccount:
        """The account's counts, loaded from the database on first use (may raise)."""
        account = self._accounts.get(user_id) or await self._load_once(user_id)
        account.used_at = self._context.now()
        return account

    def record(
        self, account: LiveAccount, attempt: LiveAttempt, events: tuple[AuditEvent, ...]
    ) -> None:
        account.history.add_attempt(attempt.ts, attempt.served)
        if account.targets is not None and attempt.served and attempt.target:
            account.targets[attempt.target] = attempt.ts
        account.local.append(attempt)
        self._unwritten.append(attempt)
        self._events.extend(events)
        if len(self._unwritten) > MAX_PENDING:
            lost = len(self._unwritten) - MAX_PENDING
            for given_up in self._unwritten[:lost]:
                given_up.written = True  # no longer in flight: never to be written
            del self._unwritten[:lost]
            del self._events[:-MAX_PENDING]
            logger.error(
                "tchap_guard dropped %d unwritten %s counts", lost, self._control
            )

    def finish(self, attempt: LiveAttempt, sent: int) -> None:
        """The attempt's response is sent, with `sent` bytes (if it was served)."""
        attempt.finished = True
        if sent <= 0:
            return
        attempt.bytes += sent
        if attempt.written:
            self._late.add(attempt)
        account = self._accounts.get(attempt.user_id)
        if account is not None and attempt.served:
            account.history.add_bytes(self._context.now(), sent)

    def forget(self, user_id: str) -> None:
        """Drop an account's copy: its next use loads it afresh from the database."""
        self._accounts.pop(user_id, None)

    async def sync(self) -> None:
        """Write what was counted; every two seconds, reload what changed elsewhere."""
        await self._exclusively(self._sync)

    async def flush(self) -> None:
        """Write every attempt, late bytes and event counted so far, at once: those
        still being answered too (their bytes follow), so the database has them all."""
        await self._exclusively(lambda: self._flush(everything=True))

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
        now = self._context.now()
        if now - self._checked_at < RELOAD_MS:
            return
        since, self._checked_at = self._checked_at - WRITE_DELAY_MS, now
        try:
            changed = await self._context.store.changed_accounts(self._control, since)
        except Exception:
            logger.warning("tchap_guard could not check for changes", exc_info=True)
            return
        for user_id, account in list(self._accounts.items()):
            account.local = [a for a in account.local if self._in_flight(a)]
            if user_id in changed:
                await self._reload(user_id, account)
            elif now - account.used_at > IDLE_MS and not account.local:
                del self._accounts[user_id]
            else:
                cutoff = now - self._longest_window_ms
                account.history.forget_before(cutoff)
                if account.targets is not None:
                    account.targets = {
                        target: ts
                        for target, ts in account.targets.items()
                        if ts > cutoff
                    }

    async def _flush(self, everything: bool = False) -> None:
        now = self._context.now()
        ready = [
            a
            for a in self._unwritten
            if everything or a.finished or now - a.ts >= MAX_HOLD_MS
        ]
        late = [(a, a.bytes - a.bytes_in_db) for a in self._late]
        events = self._events
        if not (ready or late or events):
            return
        taken = set(ready)
        self._unwritten = [a for a in self._unwritten if a not in taken]
        self._late, self._events = set(), []
        finished = [a for a in ready if a.finished]
        unfinished = [a for a in ready if not a.finished]
        records = [a.record(self._control) for a in (*finished, *unfinished)]
        try:
            ids = await self._context.store.write_attempts(
                records[: len(finished)],
                records[len(finished) :],
                [(a.id, size) for a, size in late if a.id is not None],
                events,
            )
        except Exception:
            # Keep everything for the next try; the counts in memory stay right.
            self._unwritten = ready + self._unwritten
            self._late.update(a for a, _ in late)
            self._events = events + self._events
            if not self._failing:
                logger.error(
                    "tchap_guard could not write %s counts; they are kept in memory",
                    self._control,
                    exc_info=True,
                )
            self._failing = True
            return
        self._failing = False
        for attempt, record in zip((*finished, *unfinished), records, strict=True):
            attempt.written = True
            attempt.bytes_in_db = record.bytes
        for attempt, attempt_id in zip(unfinished, ids, strict=True):
            attempt.id = attempt_id
            if attempt.bytes > attempt.bytes_in_db:  # sent while being written
                self._late.add(attempt)
        for attempt, size in late:
            attempt.bytes_in_db += size

    async def _load_once(self, user_id: str) -> LiveAccount:
        """Load an account; requests arriving meanwhile wait for that same load."""
        waiting = self._loading.get(user_id)
        if waiting is not None:
            waiter: defer.Deferred[LiveAccount | None] = defer.Deferred()
            waiting.append(waiter)
            loaded = await make_deferred_yieldable(waiter)
            if loaded is None:
                raise RuntimeError(f"could not load the counts of {user_id}")
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
        now = self._context.now()
        since = now - self._longest_window_ms
        stored, marks = await self._context.store.load_history(
            user_id, self._control, since
        )
        targets = None
        if self._distinct_targets:
            targets = {
                target: attempt.ts
                for attempt, target in stored
                if attempt.served and target is not None
            }
        return LiveAccount(
            history=History.of(attempt for attempt, _ in stored),
            local=[],
            marks=marks,
            used_at=now,
            exempt=await self._context.is_exempt(user_id),
            targets=targets,
        )

    async def _reload(self, user_id: str, account: LiveAccount) -> None:
        try:
            fresh = await self._load(user_id)
        except Exception:
            logger.warning("tchap_guard could not reload %s", user_id, exc_info=True)
            return
        # What this process counted that the database does not have yet, and what was
        # counted while the reload ran (no write overlaps a reload: `_exclusively`).
        for attempt in account.local:
            if not attempt.written:
                fresh.history.add_attempt(attempt.ts, attempt.served)
                fresh.local.append(attempt)
                if fresh.targets is not None and attempt.served and attempt.target:
                    fresh.targets[attempt.target] = attempt.ts
            unwritten_bytes = attempt.bytes - attempt.bytes_in_db
            if attempt.served and unwritten_bytes > 0:
                fresh.history.add_bytes(attempt.ts, unwritten_bytes)
        fresh.used_at = account.used_at
        if self._accounts.get(user_id) is account:
            self._accounts[user_id] = fresh

    @staticmethod
    def _in_flight(attempt: LiveAttempt) -> bool:
        """Not fully in the database yet: unwritten, or bytes to add."""
        return not attempt.written or attempt.bytes > attempt.bytes_in_db
