"""Counting in memory and writing behind, on the store's real SQL and a fake clock."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from twisted.internet import defer, task

from synapse_tchap_guard import live_counts
from synapse_tchap_guard.audit import AuditEvent
from synapse_tchap_guard.clock import now_ms
from synapse_tchap_guard.live_counts import LiveCounts
from synapse_tchap_guard.model import Line, Row
from synapse_tchap_guard.policy import Decision
from synapse_tchap_guard.store import GuardStore, StoreUnavailable
from tests.unit.fakes import SqliteDatabase, new_store, run, shared_store

HOUR_MS = 3_600_000
CONTROL = "media_downloads"
ALICE = "@alice:example.org"


class Process:
    """One Synapse process's counts for a control, and what it reported."""

    def __init__(self, clock: task.Clock, store: GuardStore, distinct: bool = False):
        self.clock = clock
        self.store = store
        self.rejected: list[tuple[list[Row], str]] = []
        self.exempt_lookups = 0
        self.exempt_answer: defer.Deferred[bool] | None = None
        self.counts = LiveCounts(
            CONTROL,
            HOUR_MS,
            store,
            lambda: now_ms(clock),
            self._is_exempt,
            lambda rows, reason: self.rejected.append((list(rows), reason)),
            distinct_targets=distinct,
        )

    async def _is_exempt(self, user_id: str) -> bool:
        self.exempt_lookups += 1
        if self.exempt_answer is not None:
            return await self.exempt_answer
        return False

    def count(
        self, target: str | None = "mxc://x/1", decision: Decision = Decision.ALLOW
    ) -> Line:
        account = run(self.counts.account(ALICE))
        line = Line(ALICE, CONTROL, now_ms(self.clock), decision, target, 1)
        self.counts.record(account, line)
        return line

    def served(self) -> int:
        account = run(self.counts.account(ALICE))
        return account.history.served_after(0)

    def bytes(self) -> int:
        account = run(self.counts.account(ALICE))
        return account.history.bytes_after(0)

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
def main(clock: task.Clock) -> Process:
    return Process(clock, new_store(clock))


def stored(process: Process) -> list[tuple[str, int, int, int]]:
    return process.database.rows(
        "SELECT decision, attempts, served, bytes FROM tchap_guard_attempts ORDER BY id"
    )


def test_an_account_is_loaded_once_however_many_requests_wait_for_it(
    main: Process,
) -> None:
    main.exempt_answer = defer.Deferred()
    first = defer.ensureDeferred(main.counts.account(ALICE))
    second = defer.ensureDeferred(main.counts.account(ALICE))
    assert not first.called and not second.called
    main.exempt_answer.callback(False)
    assert first.result is second.result
    assert main.database.transactions.count("load_history") == 1
    assert main.exempt_lookups == 1


def test_counts_are_written_behind_then_read_back_by_another_process(
    clock: task.Clock, main: Process
) -> None:
    for _ in range(3):
        main.count()
    assert stored(main) == []  # counted in memory, not written yet
    run(main.counts.sync())
    assert stored(main) == [("allow", 1, 1, 0)] * 3
    worker = Process(clock, shared_store(main.store, clock, "worker1"))
    assert worker.served() == 3


def test_bytes_fold_into_a_row_not_written_yet_and_follow_it_otherwise(
    main: Process,
) -> None:
    early = main.count()
    main.counts.finish(early, ok=True, sent=100)
    late = main.count()
    run(main.counts.sync())
    main.counts.finish(late, ok=True, sent=40)
    run(main.counts.sync())
    assert stored(main) == [
        ("allow", 1, 1, 100),
        ("allow", 1, 1, 0),
        ("bytes", 0, 0, 40),
    ]
    assert main.bytes() == 140


def test_a_response_that_failed_gives_back_what_it_was_served(
    main: Process,
) -> None:
    early = main.count()
    main.counts.finish(early, ok=False, sent=0)
    late = main.count()
    run(main.counts.sync())
    main.counts.finish(late, ok=False, sent=0)
    run(main.counts.sync())
    assert main.served() == 0
    assert stored(main) == [
        ("allow", 1, 0, 0),
        ("allow", 1, 1, 0),
        ("failed", 0, -1, 0),
    ]
    main.counts.forget(ALICE)  # what the database says agrees
    assert main.served() == 0
    account = run(main.counts.account(ALICE))
    assert account.history.attempts_after(0) == 2  # still two attempts


def test_an_outage_keeps_the_counts_in_memory_and_writes_them_once_back(
    main: Process,
) -> None:
    main.count()
    main.database.out = True
    main.count()
    run(main.counts.sync())
    run(main.counts.sync())
    assert main.served() == 2  # still judged in memory
    main.database.out = False
    run(main.counts.sync())
    run(main.counts.sync())
    assert stored(main) == [("allow", 1, 1, 0)] * 2
    assert main.rejected == []


def test_a_row_the_database_refuses_is_dropped_and_reported_and_the_rest_written(
    main: Process,
) -> None:
    for n in range(5):
        main.count(f"mxc://x/{n}")
    main.count("mxc://x/a\x00b")  # PostgreSQL takes no NUL in text
    for n in range(5, 8):
        main.count(f"mxc://x/{n}")
    run(main.counts.sync())
    targets = main.database.rows("SELECT target FROM tchap_guard_attempts ORDER BY id")
    assert [t for (t,) in targets] == [f"mxc://x/{n}" for n in range(8)]
    ((rows, reason),) = main.rejected
    assert [row.target for row in rows] == ["mxc://x/a\x00b"]
    assert "NUL" in reason
    run(main.counts.sync())  # and it is not retried forever
    assert len(main.rejected) == 1


def test_a_write_that_fails_as_an_outage_ends_is_not_taken_for_a_bad_row(
    main: Process,
) -> None:
    main.count()
    write = main.store.attempts.write
    failures: list[Sequence[Row]] = []

    async def fails_once(rows: Sequence[Row], events: Sequence[AuditEvent]) -> None:
        if not failures:  # the tables are missing; back by the time it is checked
            failures.append(rows)
            raise StoreUnavailable("no such table: tchap_guard_attempts (test)")
        await write(rows, events)

    main.store.attempts.write = fails_once  # type: ignore[method-assign]
    run(main.counts.sync())
    assert failures and main.rejected == []
    assert stored(main) == [("allow", 1, 1, 0)]


def test_a_write_that_times_out_is_kept_and_not_taken_for_a_bad_row(
    main: Process,
) -> None:
    main.count()
    main.count()
    # The guard's tables are stalled while the database answers otherwise.
    main.database.stalled.add("write_attempts")
    run(main.counts.sync())
    assert main.rejected == []
    assert stored(main) == []
    main.database.stalled.clear()
    run(main.counts.sync())
    assert stored(main) == [("allow", 1, 1, 0)] * 2


def test_an_account_whose_marks_changed_elsewhere_is_loaded_afresh(
    clock: task.Clock, main: Process
) -> None:
    main.count()
    assert main.served() == 1
    now = now_ms(clock)
    run(main.store.accounts.record_step_up(ALICE, now, now + HOUR_MS, []))
    main.count()  # not written yet when the reload comes
    run(main.counts.sync())  # too early to look for changes
    assert not run(main.counts.account(ALICE)).marks.stepped_up(now)
    clock.advance(live_counts.CHECK_MS / 1000)
    run(main.counts.sync())
    account = run(main.counts.account(ALICE))
    assert account.marks.stepped_up(now_ms(clock))
    assert account.history.served_after(0) == 2


def test_an_account_left_idle_is_dropped_from_memory(
    clock: task.Clock, main: Process
) -> None:
    main.count()
    clock.advance(live_counts.IDLE_MS / 1000 + 1)
    run(main.counts.sync())
    assert main.counts.loaded(ALICE, now_ms(clock)) is None
    assert main.served() == 1  # loaded again from the database


def test_an_outage_too_long_gives_up_the_oldest_rows_and_says_so(
    main: Process, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live_counts, "MAX_UNWRITTEN", 3)
    main.count()
    main.database.out = True
    for _ in range(4):
        main.count()
    assert sum(len(rows) for rows, _ in main.rejected) == 2  # the two oldest
    assert all("out too long" in reason for _, reason in main.rejected)
    main.database.out = False
    run(main.counts.sync())
    assert len(stored(main)) == 3


def test_distinct_targets_count_once_and_a_failed_one_is_forgotten(
    clock: task.Clock,
) -> None:
    people = Process(clock, new_store(clock), distinct=True)
    people.count("@bob:example.org")
    account = run(people.counts.account(ALICE))
    start = now_ms(clock) - HOUR_MS
    assert account.counted_since("@bob:example.org", start)
    carol = people.count("@carol:example.org")
    people.counts.finish(carol, ok=False, sent=0)
    assert not account.counted_since("@carol:example.org", start)
    run(people.counts.sync())
    people.counts.forget(ALICE)
    reloaded = run(people.counts.account(ALICE))
    assert reloaded.counted_since("@bob:example.org", start)
    assert not reloaded.counted_since("@carol:example.org", start)


def test_loading_from_a_database_that_is_out_raises_store_unavailable(
    main: Process,
) -> None:
    main.database.out = True
    with pytest.raises(StoreUnavailable):
        run(main.counts.account(ALICE))
    main.database.out = False
    assert main.served() == 0


def test_an_account_in_use_for_longer_than_the_window_holds_only_the_window(
    clock: task.Clock,
) -> None:
    """Memory is bounded by what the longest window holds, however long an account
    has been active (and an idle one is dropped altogether, above)."""
    people = Process(clock, new_store(clock), distinct=True)
    for hour in range(5):
        for _ in range(HOUR_MS // 50_000):  # in use all along, never idle
            clock.advance(50)
            run(people.counts.account(ALICE))
            run(people.counts.sync())
        for person in range(10):
            people.count(f"@p{hour}.{person}:example.org", Decision.ALLOW)
            people.count(f"@r{hour}.{person}:example.org", Decision.DENY)
    clock.advance(live_counts.CHECK_MS / 1000)
    run(people.counts.sync())
    account = run(people.counts.account(ALICE))
    assert account.targets is not None
    assert len(account.targets) == 10  # the last hour's, not the 50 of five hours
    assert len(account.refused) == 10
    assert len(account.history) <= 20


@pytest.mark.parametrize("decision", list(Decision))
@pytest.mark.parametrize("counts", [True, False])
@pytest.mark.parametrize("failed", [True, False])
def test_a_line_counts_in_memory_what_its_row_will_say(
    decision: Decision, counts: bool, failed: bool
) -> None:
    line = Line(ALICE, CONTROL, 5, decision, "mxc://x/y", 3, bytes=7, failed=failed)
    line.counts_towards_block = counts
    assert line.record == line.row().record
