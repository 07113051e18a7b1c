"""How much of the database the guard takes, and how long a request waits for it:
lanes on a clock tests move by hand, and statement timeouts on a real SQLite."""

from __future__ import annotations

import sqlite3
import time

import pytest
from synapse.storage.engines import PostgresEngine
from twisted.internet import defer, task
from twisted.python.failure import Failure

from synapse_tchap_guard import _synapse_internals as internals
from synapse_tchap_guard.store.lanes import (
    Lane,
    LaneLimits,
    Lanes,
    Ticket,
    TimedOut,
    stop_waiting_after,
)
from tests.unit.fakes import SqliteTransaction, spawn

LIMITS = LaneLimits(slots=2, statement_timeout_ms=100, deadline_ms=100)
DEADLINE_S = 0.1
SLOW = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?)"
    " SELECT count(*) FROM c"
)


class Work:
    """A transaction in a lane, finished when the test says so."""

    def __init__(self) -> None:
        self.started = False
        self.done: defer.Deferred[str] = defer.Deferred()

    async def __call__(self, ticket: Ticket) -> str:
        self.started = True
        return await self.done


def timed_out(wait: defer.Deferred[str]) -> bool:
    """Whether the caller gave up waiting (its Deferred failed with `TimedOut`)."""
    failures: list[Failure] = []
    wait.addErrback(failures.append)
    return len(failures) == 1 and isinstance(failures[0].value, TimedOut)


def test_a_lane_runs_at_most_its_slots_and_a_late_caller_gives_up() -> None:
    clock = task.Clock()
    lane = Lane(LIMITS, clock, spawn)
    works = [Work() for _ in range(3)]
    waits = [defer.ensureDeferred(lane.run(work)) for work in works]
    assert [work.started for work in works] == [True, True, False]
    assert lane.busy == 2

    works[0].done.callback("first")
    assert waits[0].result == "first"
    assert works[2].started  # its turn came within the deadline
    clock.advance(DEADLINE_S)
    assert all(timed_out(wait) for wait in waits[1:])
    # The work goes on without anyone waiting; its slot is free when it ends.
    works[1].done.callback("late")
    works[2].done.callback("late")
    assert lane.busy == 0


def test_work_abandoned_while_it_waits_for_a_slot_never_runs() -> None:
    clock = task.Clock()
    lane = Lane(LIMITS, clock, spawn)
    works = [Work() for _ in range(3)]
    waits = [defer.ensureDeferred(lane.run(work)) for work in works]
    clock.advance(DEADLINE_S)
    assert all(timed_out(wait) for wait in waits)
    works[0].done.callback("late")
    works[1].done.callback("late")
    assert not works[2].started
    assert lane.busy == 0


def test_a_lane_without_deadline_waits_as_long_as_it_takes() -> None:
    clock = task.Clock()
    lanes = Lanes(clock, spawn)
    assert lanes.current() is lanes.background  # no request here
    work = Work()
    wait = defer.ensureDeferred(lanes.background.run(work))
    second = Work()
    queued = defer.ensureDeferred(lanes.background.run(second))
    assert not second.started  # one slot
    clock.advance(3600)
    assert not wait.called
    work.done.callback("done")
    assert wait.result == "done" and second.started
    second.done.callback("done")
    assert queued.result == "done"


def test_stop_waiting_after_gives_the_result_in_time() -> None:
    clock = task.Clock()
    done: defer.Deferred[int] = defer.Deferred()

    async def work() -> int:
        return await done

    wait = defer.ensureDeferred(stop_waiting_after(clock, spawn, 100, work))
    clock.advance(0.05)
    done.callback(7)
    assert wait.result == 7
    assert clock.getDelayedCalls() == []  # the timer is gone


def test_a_statement_past_its_time_is_cancelled_on_sqlite() -> None:
    connection = sqlite3.connect(":memory:")
    txn = SqliteTransaction(connection.cursor())
    started = time.monotonic()
    with (
        pytest.raises(internals.StatementCancelled),
        internals.statement_timeout(txn, 50),  # type: ignore[arg-type]
    ):
        txn.execute(SLOW, (10**10,))
    assert time.monotonic() - started < 5
    time.sleep(0.06)  # past that deadline: the next statement is not bound by it
    txn.execute(SLOW, (10**5,))
    assert txn.fetchone() == (10**5,)


class PostgresTransaction:
    """Just enough of a LoggingTransaction on PostgreSQL to see what is sent."""

    def __init__(self) -> None:
        self.database_engine = object.__new__(PostgresEngine)
        self.statements: list[str] = []

    def execute(self, sql: str) -> None:
        self.statements.append(sql)


class QueryCanceled(Exception):
    pgcode = "57014"  # as psycopg2 raises it when statement_timeout fires


def test_a_statement_past_its_time_is_cancelled_on_postgresql_and_not_retried() -> None:
    txn = PostgresTransaction()
    with (
        pytest.raises(internals.StatementCancelled),
        internals.statement_timeout(txn, 2000),  # type: ignore[arg-type]
    ):
        raise QueryCanceled("canceling statement due to statement timeout")
    assert txn.statements == ["SET LOCAL statement_timeout = 2000"]
    with (
        pytest.raises(ValueError),  # any other error is left as it is
        internals.statement_timeout(txn, 2000),  # type: ignore[arg-type]
    ):
        raise ValueError("not a timeout")
