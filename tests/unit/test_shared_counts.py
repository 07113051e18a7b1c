"""Counts shared between processes: the guard's Redis scripts on a real Redis, and two
processes' counts judged against each other through them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import redis
from twisted.internet import task

from synapse_tchap_guard import policy
from synapse_tchap_guard.clock import now_ms
from synapse_tchap_guard.live_counts import LiveCounts
from synapse_tchap_guard.model import Line
from synapse_tchap_guard.policy import Decision, Limit, Quota, Record
from synapse_tchap_guard.shared_counts import (
    Appended,
    Behind,
    Missing,
    SharedCounts,
    SharedRow,
)
from tests.services import require_redis
from tests.unit.fakes import new_store, run, shared_store

HOUR_MS = 3_600_000
CONTROL = "media_downloads"


@pytest.fixture
def connection() -> Iterator[redis.Redis]:
    require_redis()
    client = redis.Redis(host="127.0.0.1", port=6379)
    yield client
    client.close()


def evaluator(client: redis.Redis) -> Any:
    """The guard's `Eval`, on a synchronous client: the coroutine never waits."""

    async def run_script(script: str, keys: Sequence[str], args: Sequence[str]) -> Any:
        return client.eval(script, len(keys), *keys, *args)

    return run_script


@pytest.fixture
def shared(connection: redis.Redis) -> SharedCounts:
    return SharedCounts(evaluator(connection), time_to_live_ms=HOUR_MS)


def user() -> str:
    return f"@{uuid.uuid4().hex}:example.org"


def row(ts: int, origin: str = "a", target: str | None = "mxc://x/1") -> SharedRow:
    return SharedRow(origin, Record(ts), target)


def test_a_missing_list_asks_to_be_seeded_then_appends_only_after_every_row_seen(
    shared: SharedCounts,
) -> None:
    keys = shared.keys(CONTROL, user())
    assert isinstance(run(shared.append_if_seen(keys, 0, [row(10)], 0)), Missing)
    total, rows = run(shared.seed(keys, [row(5, "database")]))
    assert (total, rows) == (1, [row(5, "database")])
    assert run(shared.append_if_seen(keys, 1, [row(10, "a")], 0)) == Appended(2)
    # A process that has seen only the seeded row is told what it lacks, and nothing
    # of its own is appended.
    answer = run(shared.append_if_seen(keys, 1, [row(11, "b")], 0))
    assert answer == Behind(2, [row(10, "a")])
    assert run(shared.append_if_seen(keys, 2, [row(11, "b")], 0)) == Appended(3)


def test_seeding_a_list_that_exists_returns_it_as_it_is(shared: SharedCounts) -> None:
    keys = shared.keys(CONTROL, user())
    run(shared.seed(keys, [row(5, "database")]))
    run(shared.append_if_seen(keys, 1, [row(10, "a")], 0))
    total, rows = run(shared.seed(keys, [row(1, "database"), row(2, "database")]))
    assert (total, rows) == (2, [row(5, "database"), row(10, "a")])


def test_rows_no_window_needs_are_trimmed_and_the_count_goes_on(
    shared: SharedCounts,
) -> None:
    keys = shared.keys(CONTROL, user())
    run(shared.seed(keys, [row(1), row(2), row(3)]))
    assert run(shared.append_if_seen(keys, 3, [row(10)], cutoff=2)) == Appended(4)
    total, rows = run(shared.seed(keys, []))
    assert (total, [r.record.ts for r in rows]) == (4, [3, 10])
    # A process whose view starts before what was trimmed loads afresh.
    assert isinstance(run(shared.append_if_seen(keys, 1, [row(11)], 0)), Missing)


def test_amendments_and_targets_survive_the_trip(shared: SharedCounts) -> None:
    keys = shared.keys(CONTROL, user())
    run(shared.seed(keys, []))
    odd = SharedRow("a", Record(7, 0, -1, 0, 0), 'mxc://x/a|b"c\\d')
    run(shared.append(keys, [odd]))
    assert run(shared.seed(keys, []))[1] == [odd]
    run(shared.drop(keys))
    assert isinstance(run(shared.append_if_seen(keys, 1, [row(1)], 0)), Missing)


class Process:
    """One Synapse process's counts for a control, sharing them through Redis."""

    def __init__(self, clock: task.Clock, store: Any, shared: SharedCounts) -> None:
        self.clock = clock
        self.counts = LiveCounts(
            CONTROL,
            HOUR_MS,
            store,
            lambda: now_ms(clock),
            self._not_exempt,
            lambda rows, reason: None,
            shared=shared,
        )

    async def _not_exempt(self, user_id: str) -> bool:
        return False

    def download(self, user_id: str, quota: Quota) -> Decision:
        """Judge one download against `quota` and count it, as a gate does."""
        decisions: list[Decision] = []

        def decide(account: Any) -> Line:
            now = now_ms(self.clock)
            verdict = policy.evaluate(quota, account.history, now, account.marks)
            decisions.append(verdict.decision)
            return Line(user_id, CONTROL, now, verdict.decision, "mxc://x/1", 1)

        account = run(self.counts.account(user_id))
        run(self.counts.count(user_id, account, decide))
        return decisions[-1]


def test_two_processes_never_pass_a_limit_between_them(shared: SharedCounts) -> None:
    clock = task.Clock()
    clock.advance(1_800_000_000)
    store = new_store(clock)
    main = Process(clock, store, shared)
    worker = Process(clock, shared_store(store, clock, "worker1"), shared)
    quota = Quota(limits=(Limit(HOUR_MS, max=5),))
    alice = user()
    decisions = []
    for process in [main, worker, worker, main, worker, main, main, worker]:
        decisions.append(process.download(alice, quota))
        clock.advance(1)
    assert decisions == [Decision.ALLOW] * 5 + [Decision.DENY] * 3
    # Each process's view holds what the other served, whoever counted it.
    for process in (main, worker):
        account = run(process.counts.account(alice))
        assert account.history.served_after(0) == 5


def test_a_reset_drops_the_shared_rows_so_every_process_starts_over(
    shared: SharedCounts,
) -> None:
    clock = task.Clock()
    clock.advance(1_800_000_000)
    store = new_store(clock)
    main = Process(clock, store, shared)
    alice = user()
    quota = Quota(limits=(Limit(HOUR_MS, max=1),))
    assert main.download(alice, quota) is Decision.ALLOW
    assert main.download(alice, quota) is Decision.DENY
    run(main.counts.reset(alice))
    assert isinstance(
        run(shared.append_if_seen(shared.keys(CONTROL, alice), 2, [row(1)], 0)),
        Missing,
    )
