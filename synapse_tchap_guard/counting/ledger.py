"""The one counting engine of a process: `Ledger.charge` judges a request and records
it, in one step, exactly, for every control.

A charge belongs to a `Key`: an account, and for a session on probation, that session
too (its own, tighter budget; the account's applies on top). The ledger keeps each
account's states in memory, loaded from the database on first use; judging a
request and recording it happen together, so in one process nothing can come
between them. With workers, the states are shared through Synapse's Redis
(`backends`): a process records only if it had seen every change before, else it
catches up and judges again. What is recorded is written to the database behind
(`journal`).

The rule every `decide` follows: it is pure. It reads the states and returns what to
record, and may run up to `MAX_RACES` times for one request (once per race lost to
another process), so it must not report, log or count anything itself.

Every `CHECK_MS`, one query finds the accounts whose marks changed (an admin's reset,
a step-up, a block, set by any process); their copies here follow. An account unused
for `IDLE_MS` whose counts are all written is let go.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

import attr

from synapse_tchap_guard.controls import Control
from synapse_tchap_guard.counting import backends
from synapse_tchap_guard.counting.backends import (
    Backend,
    Behind,
    Change,
    Missed,
    Missing,
)
from synapse_tchap_guard.counting.journal import Journal
from synapse_tchap_guard.counting.layout import Layout, Pending, Shape
from synapse_tchap_guard.counting.records import (
    Charge,
    Entry,
    Key,
    StateKey,
)
from synapse_tchap_guard.counting.state import AccountCounts, CountState
from synapse_tchap_guard.deferreds import Turns, Waiters
from synapse_tchap_guard.policy import (
    ALLOW,
    AccountMarks,
    Counting,
    Quota,
    Verdict,
    evaluate,
)
from synapse_tchap_guard.store.accounts import AccountStore
from synapse_tchap_guard.store.counts import CountRow, CountStore, StoredCounts
from synapse_tchap_guard.store.database import StoreUnavailable

logger = logging.getLogger(__name__)

CHECK_MS = 2000
# Marks changed by another process reach the database this late after their time.
WRITE_DELAY_MS = 5000
IDLE_MS = 60_000
# Races lost to other processes before this one judges on what it knows.
MAX_RACES = 50


@attr.frozen
class Outcome:
    """What a charge decided."""

    verdict: Verdict
    # The request as counted, for its response to amend; None when nothing was
    # (exempt, free, already counted, or judged only).
    pending: Pending | None = None
    exempt: bool = False
    by_session: bool = (
        False  # the session's probation budget decided, not the account's
    )


@attr.frozen
class Shown:
    """What a search may show: the targets, and whether the budget left some out."""

    targets: frozenset[str]
    past_budget: bool


EXEMPT = Outcome(ALLOW, exempt=True)
FREE = Outcome(ALLOW)


@attr.frozen
class _Judged:
    """What `decide` returns: the verdict, and what to record."""

    outcome: Outcome
    changes: tuple[Change, ...]


class Ledger:
    def __init__(
        self,
        controls: Sequence[Control],
        store: CountStore,
        accounts: AccountStore,
        backend: Backend,
        journal: Journal,
        now: Callable[[], int],
        is_exempt: Callable[[str], Awaitable[bool]],
        enforcing: bool,
    ) -> None:
        self._controls = {control.name: control for control in controls}
        self._shapes = {
            control.name: Shape.of(control.quota, control.distinct)
            for control in controls
        }
        self._store = store
        self._accounts_store = accounts
        self._backend = backend
        self.journal = journal
        self._now = now
        self._is_exempt = is_exempt
        self._enforcing = enforcing
        self._longest_ms = max(
            (control.longest_window_ms for control in controls), default=0
        )
        self._accounts: dict[str, AccountCounts] = {}
        self._loading: dict[str, Waiters] = {}
        self._turns = Turns()  # with Redis: one record at a time per account
        self._amendments: dict[str, list[Change]] = {}  # for Redis, by account
        self._checked_at = now()
        self._shared_failing = False

    # --- the hot path ----------------------------------------------------------

    async def charge(
        self, key: Key, control: Control, charge: Charge, update: bool = True
    ) -> Outcome:
        """Judge a request, and with `update`, record it as judged.

        Raises `StoreUnavailable` if the account is not in memory and the database
        cannot load it.
        """
        account = self._accounts.get(key.user_id)
        if account is None:
            account = await self._load(key.user_id)
        if account.exempt:
            return EXEMPT
        account.used_at = self._now()
        if not self._backend.shared:  # one process: nothing comes in between
            judged = self._decide(account, key, control, charge)
            if update:
                self._record(account, judged.changes)
            return judged.outcome
        async with self._turns.of(key.user_id):
            return await self._charge_shared(key, control, charge, update)

    async def charge_each(
        self, key: Key, control: Control, targets: Sequence[str], most_new: int
    ) -> Shown | None:
        """Count what `targets` cost (a unit each), in order, as far as the control
        allows now and at most `most_new` of them not counted yet; nothing past that
        (for what a response leaves out rather than refuses). None: the account is
        exempt, all may be shown."""
        account = self._accounts.get(key.user_id)
        if account is None:
            account = await self._load(key.user_id)
        if account.exempt:
            return None

        def decide(account: AccountCounts) -> tuple[Shown, tuple[Change, ...]]:
            now = self._now()
            shown: set[str] = set()
            changes: list[Change] = []
            states = self._states(account, key, control)
            room = min(
                _room(quota, state, now, account.marks) for _, quota, state in states
            )
            past_budget = False
            for target in targets:
                if self._counted(account, control, target, now):
                    shown.add(target)
                elif len(changes) // len(states) >= most_new:
                    continue
                elif room > 0:
                    room -= 1
                    shown.add(target)
                    entry = Entry(now, served=1, target=target)
                    changes += [(k, s.layout, entry) for k, _, s in states]
                else:
                    past_budget = True
            return Shown(frozenset(shown), past_budget), tuple(changes)

        if not self._backend.shared:
            shown, changes = decide(account)
            self._record(account, changes)
            return shown
        async with self._turns.of(key.user_id):
            for _ in range(MAX_RACES):
                account = await self._current(key.user_id)
                shown, changes = decide(account)
                if not changes or await self._recorded(account, changes):
                    return shown
            shown, changes = decide(account)
            self._record(account, changes)
            return shown

    def finish(self, pending: Pending, ok: bool, sent: int) -> None:
        """A counted request's response is over: `sent` bytes (counted when `sent` is
        given), or a failure (`ok` False) that gives back what it was served."""
        entry = pending.entry
        if not ok and entry.served > 0:
            amendment = Entry(entry.ts, served=-entry.served, target=entry.target)
        elif ok and sent > 0 and entry.served > 0:
            amendment = Entry(self._now(), bytes=sent)
        else:
            return
        changes: list[Change] = []
        for key, counted_in in zip(pending.keys, pending.layouts, strict=True):
            account = self._accounts.get(key.user_id)
            state = account.states.get((key.control, key.session)) if account else None
            layout = counted_in
            if state is not None:
                state.apply(amendment)
                layout = state.layout
            # (let go of meanwhile: written with the buckets it was counted in)
            self.journal.add(key, layout, amendment)
            changes.append((key, layout, amendment))
        if self._backend.shared:  # the other processes hear of it with the next flush
            self._amendments.setdefault(pending.keys[0].user_id, []).extend(changes)

    # --- judging ---------------------------------------------------------------

    def _states(
        self, account: AccountCounts, key: Key, control: Control
    ) -> list[tuple[StateKey, Quota, CountState]]:
        """The states a charge of `key` reads and records: the account's, and for a
        session on probation, the session's."""
        name = control.name
        state = account.state(name, "", self._shapes[name])
        return [(StateKey(key.user_id, "", name), control.quota, state)]

    def _counted(
        self, account: AccountCounts, control: Control, target: str, now: int
    ) -> bool:
        """For a control of distinct targets: `target` costs nothing more."""
        if not control.distinct:
            return False
        state = account.states.get((control.name, ""))
        if state is None:
            return False
        window = control.quota.target_window_ms(account.marks.stepped_up(now))
        return state.counted_since(target, now - window)

    def _decide(
        self, account: AccountCounts, key: Key, control: Control, charge: Charge
    ) -> _Judged:
        """Judge one more request on the states as counted so far (pure)."""
        now = self._now()
        target = charge.target
        if target is not None and self._counted(account, control, target, now):
            return _Judged(FREE, ())
        states = self._states(account, key, control)
        verdicts = [
            evaluate(
                quota,
                state,
                now,
                account.marks,
                charge.units,
                target,
                charge.automatic,
            ).under(self._enforcing)
            for _, quota, state in states
        ]
        deciding = max(range(len(verdicts)), key=lambda i: _severity(verdicts[i]))
        verdict = verdicts[deciding]
        served = charge.units if verdict.decision.served else 0
        changes = []
        for (state_key, quota, state), own in zip(states, verdicts, strict=True):
            counts = quota.block_at.counts if quota.block_at else None
            towards = own.towards_block and counts is not None
            entry = Entry(
                now,
                served=served,
                attempts=int(towards and counts is Counting.ATTEMPTS),
                refusals=int(
                    towards and counts is Counting.REFUSALS and own.decision.reported
                ),
                target=target,
                cause_since=own.cause_since,
                cause_until=own.cause_until,
            )
            if entry.served or entry.attempts or entry.refusals or entry.cause_until:
                changes.append((state_key, state.layout, entry))
        pending = None
        if served and changes:
            keys = tuple(change[0] for change in changes)
            layouts = tuple(change[1] for change in changes)
            pending = Pending(keys, layouts, changes[0][2])
        outcome = Outcome(verdict, pending, by_session=deciding > 0)
        return _Judged(outcome, tuple(changes))

    def _record(self, account: AccountCounts, changes: Sequence[Change]) -> None:
        for key, layout, entry in changes:
            account.states[(key.control, key.session)].apply(entry)
            self.journal.add(key, layout, entry)

    # --- shared between processes ----------------------------------------------

    async def _charge_shared(
        self, key: Key, control: Control, charge: Charge, update: bool
    ) -> Outcome:
        for _ in range(MAX_RACES):
            account = await self._current(key.user_id)
            if account.exempt:
                return EXEMPT
            judged = self._decide(account, key, control, charge)
            if not update or not judged.changes:
                return judged.outcome
            if await self._recorded(account, judged.changes):
                return judged.outcome
        # Races without end: judge on what this process knows, as one process would.
        account = await self._current(key.user_id)
        judged = self._decide(account, key, control, charge)
        if update:
            self._record(account, judged.changes)
        return judged.outcome

    async def _current(self, user_id: str) -> AccountCounts:
        account = self._accounts.get(user_id)
        return account if account is not None else await self._load(user_id)

    async def _recorded(
        self, account: AccountCounts, changes: Sequence[Change]
    ) -> bool:
        """Record `changes` in Redis if this copy had seen everything; False if it
        had not (it has caught up since: judge again)."""
        try:
            answer = await self._backend.record(
                account.user_id, account.version, changes, conditional=True
            )
        except Exception:
            self._shared_unavailable()
            self._record(account, changes)  # as one process would
            return True
        self._shared_failing = False
        if isinstance(answer, Missing):
            self._forget(account.user_id)  # loaded afresh, which seeds it
            return False
        self._catch_up(account, answer.missed)
        if isinstance(answer, Behind):
            account.version = answer.version
            return False
        account.version = answer.version
        self._record(account, changes)
        return True

    def _catch_up(self, account: AccountCounts, missed: Missed) -> None:
        """What other processes counted: their changes, or the whole account."""
        if missed.whole is not None:
            backends.decode_account(account, missed.whole, self._shape_of)
            return
        for control, session, entry in missed.changes:
            shape = self._shape_of(control, session)
            if shape is not None:
                account.state(control, session, shape).apply(entry)

    async def _share_amendments(self) -> None:
        """Bytes and failures, for the other processes (one record per account)."""
        amendments, self._amendments = self._amendments, {}
        for user_id, changes in amendments.items():
            account = self._accounts.get(user_id)
            try:
                async with self._turns.of(user_id):
                    seen = account.version if account is not None else 0
                    answer = await self._backend.record(
                        user_id, seen, changes, conditional=False
                    )
                    if account is not None and not isinstance(answer, Missing):
                        self._catch_up(account, answer.missed)
                        account.version = answer.version
            except Exception:
                self._shared_unavailable()
                return

    def _shared_unavailable(self) -> None:
        if not self._shared_failing:
            logger.error(
                "tchap_guard cannot reach Redis: counts are judged per process"
                " until it answers",
                exc_info=True,
            )
        self._shared_failing = True

    # --- loading ---------------------------------------------------------------

    def loaded(self, user_id: str) -> AccountCounts | None:
        return self._accounts.get(user_id)

    async def _load(self, user_id: str) -> AccountCounts:
        """Load an account; requests arriving meanwhile wait for that same load."""
        waiting = self._loading.get(user_id)
        if waiting is not None:
            loaded = await waiting.wait()
            if loaded is None:
                raise StoreUnavailable(f"could not load the counts of {user_id}")
            return loaded  # type: ignore[no-any-return]
        self._loading[user_id] = waiting = Waiters()
        loaded = None
        try:
            loaded = await self._load_now(user_id)
            return loaded
        finally:
            del self._loading[user_id]
            waiting.wake_all(loaded)

    async def _load_now(self, user_id: str) -> AccountCounts:
        account = await self.stored(user_id)

        if self._backend.shared:
            try:
                shared = await self._backend.share(account)
            except Exception:
                self._shared_unavailable()
            else:
                if shared is not None:
                    account.version, whole = shared
                    backends.decode_account(account, whole, self._shape_of)
        return self._accounts.setdefault(user_id, account)

    def _fill(self, account: AccountCounts, stored: StoredCounts) -> None:
        buckets: dict[tuple[str, str], list[tuple[int, int, int, int, int, int]]] = {}
        for session, control, *bucket in stored.buckets:
            span, start, units, sent, tries, refused = bucket
            buckets.setdefault((control, session), []).append(
                (span, start, units, sent, tries, refused)
            )
        served: dict[tuple[str, str], list[tuple[str, int]]] = {}
        for session, control, target, ts in stored.targets:
            served.setdefault((control, session), []).append((target, ts))
        for key in buckets.keys() | served.keys():
            shape = self._shape_of(*key)
            if shape is not None:
                account.state(key[0], key[1], shape).load(
                    buckets.get(key, ()), served.get(key, ())
                )

    def _replay_unwritten(self, account: AccountCounts) -> None:
        """What this process counted that the database does not have yet."""
        fresh, kept = self.journal.unwritten(account.user_id)
        for key, entry in fresh:
            shape = self._shape_of(key.control, key.session)
            if shape is not None:
                account.state(key.control, key.session, shape).apply(entry)
        for row in kept:
            shape = self._shape_of(row.control, row.session)
            if shape is None:
                continue
            state = account.state(row.control, row.session, shape)
            if isinstance(row, CountRow):
                state.load([(row.span_ms, row.bucket_ts, *row[5:])])
            elif not row.removed:
                state.load((), [(row.target, row.ts)])

    async def stored(self, user_id: str) -> AccountCounts:
        """The account's counts as the database has them, with what this process has
        not written yet (for an admin's view, or to load it)."""
        if user_id not in self.journal.users():
            return await self._stored(user_id)  # the common case: a cold account
        # Not while a batch is being written: its rows would be in neither place.
        async with self.journal.writing().of(None):
            return await self._stored(user_id)

    async def _stored(self, user_id: str) -> AccountCounts:
        stored = await self._store.load(user_id, self._now() - self._longest_ms - 1)
        account = AccountCounts(
            user_id, stored.marks, await self._is_exempt(user_id), self._now()
        )
        self._fill(account, stored)
        self._replay_unwritten(account)
        return account

    def shape(self, control: Control) -> Shape:
        return self._shapes[control.name]

    def _shape_of(self, control: str, session: str) -> Shape | None:
        return self._shapes.get(control)

    def _forget(self, user_id: str) -> None:
        self._accounts.pop(user_id, None)

    # --- changes made elsewhere ------------------------------------------------

    def marks_changed(self, user_id: str, marks: AccountMarks) -> None:
        """The account's marks changed (a reset, a step-up, a block): its windows
        follow. Counted before a reset (or, for the tally, a block) no longer counts:
        a state's layout starts its windows at the marks, in Redis's copy too."""
        account = self._accounts.get(user_id)
        if account is None or account.marks == marks:
            return
        if self._backend.shared:
            self._forget(user_id)  # loaded afresh, Redis's copy read with the marks
            return
        account.marks = marks
        for state in account.states.values():
            state.follow(Layout.of(state.layout.shape, marks))

    async def refresh_marks(self, user_id: str) -> None:
        """Read the account's marks again, after this process changed them; other
        processes follow within `CHECK_MS` (and this one too, if the database does
        not answer now)."""
        try:
            marks = await self._accounts_store.marks(user_id)
        except StoreUnavailable as error:
            logger.warning("tchap_guard could not read marks again: %s", error)
            return
        self.marks_changed(user_id, marks)

    # --- behind ----------------------------------------------------------------

    async def sync(self) -> None:
        """Write what was counted; every `CHECK_MS`, follow what changed elsewhere."""
        now = self._now()
        idle = self.journal.idle and not self._amendments
        if idle and now - self._checked_at < CHECK_MS:
            return  # four times a second: nothing to do
        await self._share_amendments()
        await self.journal.flush()
        if now - self._checked_at < CHECK_MS:
            return
        since, self._checked_at = self._checked_at - WRITE_DELAY_MS, now
        try:
            changed = await self._accounts_store.marks_changed_since(since)
        except StoreUnavailable as error:
            logger.warning("tchap_guard could not check for changes: %s", error)
            return
        for user_id, marks in changed.items():
            self.marks_changed(user_id, marks)
        unwritten = self.journal.users()
        for user_id, account in list(self._accounts.items()):
            if now - account.used_at > IDLE_MS and user_id not in unwritten:
                del self._accounts[user_id]
            else:
                for state in account.states.values():
                    state.forget_before(now)

    async def flush(self) -> None:
        await self._share_amendments()
        await self.journal.flush()

    def touch(self, user_id: str) -> None:
        account = self._accounts.get(user_id)
        if account is not None:
            account.used_at = self._now()


def _room(quota: Quota, state: CountState, now: int, marks: AccountMarks) -> int:
    """How many more units the limits serve now (one unit each)."""
    room = 2**62
    for limit in quota.limits_for(marks.stepped_up(now)):
        if limit.max is not None:
            room = min(room, limit.max - state.served(limit.window_ms, now))
        if (
            limit.max_bytes is not None
            and state.sent(limit.window_ms, now) >= limit.max_bytes
        ):
            room = 0
    return max(0, room)


def _severity(verdict: Verdict) -> tuple[int, int]:
    """Which of several verdicts decides: a block, then a refusal (the longest wait),
    then an allowance."""
    decision = verdict.decision
    if decision.escalates:
        rank = 2
    elif decision.reported:
        rank = 1
    else:
        rank = 0
    return rank, verdict.retry_after_ms or 0
