"""The counting engine on the store's real SQL, a fake clock, and each backend: the
same tests on one process's counts and on counts shared through a real Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import redis
from twisted.internet import defer, task

from synapse_tchap_guard.clock import now_ms
from synapse_tchap_guard.controls import (
    MEDIA_DOWNLOADS,
    MESSAGE_HISTORY,
    PUBLIC_ROOM_JOINS,
    Control,
)
from synapse_tchap_guard.counting import backends, ledger
from synapse_tchap_guard.counting.backends import Backend, LocalBackend, RedisBackend
from synapse_tchap_guard.counting.journal import Journal
from synapse_tchap_guard.counting.ledger import Ledger, Outcome
from synapse_tchap_guard.counting.records import Charge, Key
from synapse_tchap_guard.policy import Counting, Decision, Limit, Quota, Threshold
from synapse_tchap_guard.store import GuardStore
from synapse_tchap_guard.store.counts import Row
from tests.services import require_redis
from tests.unit.fakes import SqliteDatabase, new_store, run, shared_store

MIN = 60_000
HOUR = 60 * MIN

DOWNLOADS = Control(
    MEDIA_DOWNLOADS,
    Quota(
        limits=(Limit(MIN, max=5), Limit(HOUR, max=50, max_bytes=1000)),
        block_at=Threshold(HOUR, 100),
    ),
)
ROOMS = Control(
    PUBLIC_ROOM_JOINS, Quota(limits=(Limit(HOUR, max=3),), block_at=Threshold(HOUR, 6))
)
HISTORY = Control(
    MESSAGE_HISTORY,
    Quota(
        limits=(Limit(HOUR, max=100),),
        block_at=Threshold(3 * HOUR, 2, Counting.REFUSALS),
        max_per_request=50,
    ),
)
CONTROLS = [DOWNLOADS, ROOMS, HISTORY]


class Redis:
    """The guard's `Eval` on a synchronous client; a test may hold a script's answer
    back (`hold`), to let another process count in between."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.held: list[defer.Deferred[None]] = []
        self.hold = False
        self.out = False

    async def run(self, script: str, keys: Sequence[str], args: Sequence[str]) -> Any:
        if self.out:
            raise ConnectionError("Redis is out (test)")
        if self.hold:
            waiter: defer.Deferred[None] = defer.Deferred()
            self.held.append(waiter)
            await waiter
        return self.client.eval(script, len(keys), *keys, *args)

    def release(self) -> None:
        held, self.held = self.held, []
        for waiter in held:
            waiter.callback(None)


class Process:
    """One Synapse process's ledger."""

    def __init__(
        self,
        clock: task.Clock,
        store: GuardStore,
        backend: Backend,
        enforcing: bool = True,
        exempt: frozenset[str] = frozenset(),
    ) -> None:
        self.clock = clock
        self.store = store
        self.rejected: list[tuple[list[Row], str]] = []

        async def is_exempt(user_id: str) -> bool:
            return user_id in exempt

        self.ledger = Ledger(
            CONTROLS,
            store.counts,
            store.accounts,
            backend,
            Journal(
                store.counts, lambda rows, why: self.rejected.append((list(rows), why))
            ),
            lambda: now_ms(clock),
            is_exempt,
            enforcing,
        )

    def charge(
        self, user_id: str, control: Control = DOWNLOADS, charge: Charge | None = None
    ) -> Outcome:
        return run(
            self.ledger.charge(Key(user_id), control, charge or Charge("mxc://x/1"))
        )

    def decisions(
        self, user_id: str, count: int, control: Control = DOWNLOADS
    ) -> list[Decision]:
        return [self.charge(user_id, control).verdict.decision for _ in range(count)]

    @property
    def database(self) -> SqliteDatabase:
        assert isinstance(self.store.database, SqliteDatabase)
        return self.store.database


@pytest.fixture
def clock() -> task.Clock:
    clock = task.Clock()
    clock.advance(1_800_000_000)  # 2027
    return clock


@pytest.fixture
def connection() -> Iterator[redis.Redis]:
    require_redis()
    client = redis.Redis(host="127.0.0.1", port=6379)
    yield client
    client.close()


@pytest.fixture(params=["local", "redis"])
def backend_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def shared_redis(backend_name: str, request: pytest.FixtureRequest) -> Redis | None:
    if backend_name == "local":
        return None
    return Redis(request.getfixturevalue("connection"))


def backend_of(shared_redis: Redis | None) -> Backend:
    if shared_redis is None:
        return LocalBackend()
    return RedisBackend(shared_redis.run, 2 * HOUR)


@pytest.fixture
def store(clock: task.Clock) -> GuardStore:
    return new_store(clock)


@pytest.fixture
def main(clock: task.Clock, store: GuardStore, shared_redis: Redis | None) -> Process:
    return Process(clock, store, backend_of(shared_redis))


def user() -> str:
    return f"@{uuid.uuid4().hex}:example.org"


# --- on either backend -----------------------------------------------------------


def test_a_burst_gets_exactly_the_limit_and_a_refusal_says_when(main: Process) -> None:
    alice = user()
    assert main.decisions(alice, 7) == [Decision.ALLOW] * 5 + [Decision.DENY] * 2
    refused = main.charge(alice).verdict
    assert refused.rule == Limit(MIN, max=5)
    # It passes when the first bucket has left: a minute and a second (its width).
    assert MIN < (refused.retry_after_ms or 0) <= MIN + 1000
    main.clock.advance(61)
    assert main.decisions(alice, 6) == [Decision.ALLOW] * 5 + [Decision.DENY]


def test_what_was_counted_is_written_behind_in_a_few_rows_and_read_back(
    clock: task.Clock, main: Process, store: GuardStore, shared_redis: Redis | None
) -> None:
    alice = user()
    for _ in range(4):
        main.charge(alice)
    run(main.ledger.flush())
    rows = main.database.rows(
        "SELECT span_ms, served FROM tchap_guard_counts WHERE user_id = ? ORDER BY span_ms",
        (alice,),
    )
    # Four downloads in one bucket of each window, and one of the tally: three rows.
    assert rows == [(MIN, 4), (HOUR, 4)]
    assert main.database.rows(
        "SELECT SUM(attempts) FROM tchap_guard_counts WHERE user_id = ?", (alice,)
    ) == [(4,)]
    if shared_redis is not None:
        shared_redis.client.delete(
            *RedisBackend.keys(alice)
        )  # seeded from the database
    restarted = Process(clock, store, backend_of(shared_redis))
    assert restarted.decisions(alice, 2) == [Decision.ALLOW, Decision.DENY]


def test_a_failed_response_gives_back_what_it_was_served_and_bytes_add_up(
    main: Process,
) -> None:
    alice = user()
    served = main.charge(alice)
    assert served.pending is not None
    main.ledger.finish(served.pending, ok=False, sent=0)
    for _ in range(2):
        outcome = main.charge(alice)
        assert outcome.pending is not None
        main.ledger.finish(outcome.pending, ok=True, sent=500)  # 1000 bytes: the max
    refused = main.charge(alice).verdict
    assert refused.decision is Decision.DENY and refused.measure.value == "bytes"
    account = main.ledger.loaded(alice)
    assert account is not None
    state = account.states[(DOWNLOADS.name, "")]
    now = now_ms(main.clock)
    assert (state.served(MIN, now), state.sent(HOUR, now)) == (2, 1000)
    assert state.attempts(now) == 4  # the failure stays an attempt


def test_a_distinct_target_costs_once_per_window(main: Process) -> None:
    alice = user()
    for room in ("!a", "!b", "!a", "!a", "!c"):
        assert (
            main.charge(alice, ROOMS, Charge(room)).verdict.decision is Decision.ALLOW
        )
    assert main.charge(alice, ROOMS, Charge("!d")).verdict.decision is Decision.DENY
    # A room given back (its join failed) costs nothing.
    main.clock.advance(HOUR / 1000 * 2)
    joined = main.charge(alice, ROOMS, Charge("!e"))
    assert joined.pending is not None
    main.ledger.finish(joined.pending, ok=False, sent=0)
    assert main.charge(alice, ROOMS, Charge("!e")).pending is not None


def test_a_cause_counts_once_towards_a_block(main: Process) -> None:
    alice = user()
    page = Charge("!room", units=50)
    assert [main.charge(alice, HISTORY, page).verdict.decision for _ in range(2)] == [
        Decision.ALLOW
    ] * 2
    for _ in range(10):  # the same full window, refused again and again
        assert main.charge(alice, HISTORY, page).verdict.decision is Decision.DENY
    # Once it has room again, filled again, and refused: the second cause blocks.
    main.clock.advance(HOUR / 1000 + 61)
    assert main.charge(alice, HISTORY, page).verdict.decision is Decision.ALLOW
    assert main.charge(alice, HISTORY, page).verdict.decision is Decision.ALLOW
    assert main.charge(alice, HISTORY, page).verdict.decision is Decision.BLOCK


def test_a_request_too_large_is_refused_as_such(main: Process) -> None:
    verdict = main.charge(user(), HISTORY, Charge("!room", units=51)).verdict
    assert verdict.decision is Decision.DENY and verdict.too_large


def test_a_reset_starts_every_count_over_and_a_block_the_tally(
    main: Process, store: GuardStore
) -> None:
    alice = user()
    for _ in range(5):
        main.charge(alice)
    main.clock.advance(0.001)
    now = now_ms(main.clock)
    run(store.accounts.restart_escalation(alice, now, []))
    run(main.ledger.refresh_marks(alice))
    main.charge(alice, ROOMS, Charge("!loads-it-again"))
    state = _state(main, alice)
    now = now_ms(main.clock)
    assert (state.served(MIN, now), state.attempts(now)) == (5, 0)
    _reset_counters(store, alice, now)
    run(main.ledger.refresh_marks(alice))
    assert main.decisions(alice, 6) == [Decision.ALLOW] * 5 + [Decision.DENY]


def test_a_search_is_shown_what_the_budget_leaves_counted_in_one_step(
    main: Process,
) -> None:
    alice = user()
    main.charge(alice, ROOMS, Charge("!known"))
    shown = run(
        main.ledger.charge_each(Key(alice), ROOMS, ["!known", "!a", "!b", "!c"], 5)
    )
    assert shown is not None
    assert shown.targets == {"!known", "!a", "!b"} and shown.past_budget
    capped = run(main.ledger.charge_each(Key(user()), ROOMS, ["!a", "!b", "!c"], 1))
    assert capped is not None and capped.targets == {"!a"} and not capped.past_budget


def test_monitor_mode_counts_what_enforce_would(
    clock: task.Clock, store: GuardStore, shared_redis: Redis | None
) -> None:
    monitor = Process(clock, store, backend_of(shared_redis), enforcing=False)
    alice = user()
    decisions = monitor.decisions(alice, 7)
    assert decisions == [Decision.ALLOW] * 5 + [Decision.WOULD_DENY] * 2
    assert _state(monitor, alice).served(MIN, now_ms(clock)) == 5


def test_exempt_accounts_are_never_counted(
    clock: task.Clock, store: GuardStore, shared_redis: Redis | None
) -> None:
    admin = user()
    process = Process(clock, store, backend_of(shared_redis), exempt=frozenset({admin}))
    assert all(process.charge(admin).exempt for _ in range(10))


def test_an_idle_account_is_let_go_once_written(main: Process) -> None:
    alice = user()
    main.charge(alice)
    main.clock.advance(ledger.IDLE_MS / 1000 + 3)
    run(main.ledger.sync())
    assert main.ledger.loaded(alice) is None
    main.charge(alice)
    assert _state(main, alice).served(HOUR, now_ms(main.clock)) == 2


def test_an_outage_keeps_the_counts_and_writes_them_when_it_ends(main: Process) -> None:
    alice = user()
    main.charge(alice)  # loaded before the outage
    main.database.out = True
    for _ in range(2):
        main.charge(alice)
    run(main.ledger.flush())
    assert main.decisions(alice, 3) == [Decision.ALLOW] * 2 + [Decision.DENY]
    main.database.out = False
    run(main.ledger.flush())
    assert main.database.rows(
        "SELECT served FROM tchap_guard_counts WHERE user_id = ? AND span_ms = ?",
        (alice, MIN),
    ) == [(5,)]
    assert main.rejected == []


def test_a_row_the_database_refuses_is_found_dropped_and_reported(
    main: Process,
) -> None:
    alice, bob = user(), user()
    main.charge(alice, ROOMS, Charge("!fine"))
    main.charge(bob, ROOMS, Charge("!bad\x00room"))  # stored escaped: accepted
    run(main.ledger.flush())
    assert main.rejected == []
    write = main.store.counts.write

    async def refuses_bob(counts: Any, targets: Any, events: Any) -> None:
        if any(row.user_id == bob for row in [*counts, *targets]):
            from synapse_tchap_guard.store import StoreUnavailable

            raise StoreUnavailable("value too long (test)")
        await write(counts, targets, events)

    main.store.counts.write = refuses_bob  # type: ignore[method-assign]
    main.clock.advance(1)
    main.charge(alice, ROOMS, Charge("!other"))
    main.charge(bob, ROOMS, Charge("!another"))
    run(main.ledger.flush())
    dropped = {row.user_id for rows, _ in main.rejected for row in rows}
    assert dropped == {bob}
    assert main.database.rows(
        "SELECT COUNT(*) FROM tchap_guard_targets WHERE user_id = ?", (alice,)
    ) == [(2,)]


# --- shared between processes (Redis) ---------------------------------------------


@pytest.fixture
def shared(connection: redis.Redis) -> Redis:
    return Redis(connection)


def two_processes(clock: task.Clock, shared: Redis) -> tuple[Process, Process]:
    store = new_store(clock)
    worker_store = shared_store(store, clock, "worker1")
    return (
        Process(clock, store, RedisBackend(shared.run, 2 * HOUR)),
        Process(clock, worker_store, RedisBackend(shared.run, 2 * HOUR)),
    )


def test_two_processes_share_one_limit_exactly(
    clock: task.Clock, shared: Redis
) -> None:
    main, worker = two_processes(clock, shared)
    alice = user()
    decisions = [
        (main if i % 2 else worker).charge(alice).verdict.decision for i in range(9)
    ]
    assert decisions.count(Decision.ALLOW) == 5


def test_a_process_that_lost_a_race_judges_again_on_what_it_missed(
    clock: task.Clock, shared: Redis
) -> None:
    main, worker = two_processes(clock, shared)
    alice = user()
    for _ in range(4):
        main.charge(alice)
    worker.charge(alice)  # loaded: 5 served, the limit
    # Both judge the next at once; the worker's answer is held until main has
    # recorded, so the worker's copy is behind and must judge again.
    main.charge(alice)  # refused: full
    shared.hold = True
    pending = defer.ensureDeferred(
        worker.ledger.charge(Key(alice), DOWNLOADS, Charge("m"))
    )
    shared.hold = False
    clock.advance(61)  # the window has room again: 5 more may pass
    for _ in range(5):
        assert main.charge(alice).verdict.decision is Decision.ALLOW
    shared.release()
    results: list[Outcome] = []
    pending.addCallback(results.append)
    assert results and results[0].verdict.decision is Decision.DENY


def test_a_process_far_behind_reads_the_whole_account(
    clock: task.Clock, shared: Redis
) -> None:
    main, worker = two_processes(clock, shared)
    alice = user()
    worker.charge(alice, ROOMS, Charge("!r0"))
    main.charge(alice, ROOMS, Charge("!r1"))
    for _ in range(backends.CHANGES_KEPT + 5):  # more changes than Redis keeps
        main.charge(alice, HISTORY, Charge("!room", units=1))
    assert worker.charge(alice, ROOMS, Charge("!r2")).verdict.decision is Decision.ALLOW
    assert worker.charge(alice, ROOMS, Charge("!r3")).verdict.decision is Decision.DENY
    account = worker.ledger.loaded(alice)
    assert account is not None
    history = account.states[(HISTORY.name, "")]
    assert history.served(HOUR, now_ms(clock)) == 100


def test_when_redis_is_out_each_process_judges_what_it_counted(
    clock: task.Clock, shared: Redis
) -> None:
    main, worker = two_processes(clock, shared)
    alice = user()
    main.charge(alice)
    worker.charge(alice)
    shared.out = True
    assert main.decisions(alice, 5) == [Decision.ALLOW] * 4 + [Decision.DENY]
    assert worker.decisions(alice, 5) == [Decision.ALLOW] * 3 + [Decision.DENY] * 2


def test_bytes_sent_reach_the_other_processes_with_the_next_flush(
    clock: task.Clock, shared: Redis
) -> None:
    main, worker = two_processes(clock, shared)
    alice = user()
    outcome = main.charge(alice)
    assert outcome.pending is not None
    main.ledger.finish(outcome.pending, ok=True, sent=1000)
    run(main.ledger.sync())
    refused = worker.charge(alice).verdict
    assert refused.decision is Decision.DENY and refused.measure.value == "bytes"


# --- helpers -------------------------------------------------------------------------


def _state(process: Process, user_id: str) -> Any:
    account = process.ledger.loaded(user_id)
    assert account is not None
    return account.states[(DOWNLOADS.name, "")]


def _reset_counters(store: GuardStore, user_id: str, now: int) -> None:
    database = store.database
    assert isinstance(database, SqliteDatabase)
    database.connection.execute(
        "INSERT INTO tchap_guard_accounts (user_id, counters_reset_ts, marks_changed_ts)"
        " VALUES (?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET"
        " counters_reset_ts = excluded.counters_reset_ts,"
        " marks_changed_ts = excluded.marks_changed_ts",
        (user_id, now, now),
    )
    database.connection.commit()
