"""The guard's own store on an in-memory SQLite, and a clock tests move by hand.

`SqliteDatabase` runs the store's real transaction functions (its real SQL) on a
SQLite connection, synchronously, the way Synapse's `LoggingTransaction` would; a
test can cut it (`out`) or stall some of its transactions (`stalled`), and like
PostgreSQL it refuses text holding a NUL. `run` drives a coroutine that must finish
without the reactor.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from twisted.internet import defer, task

from synapse_tchap_guard import _synapse_internals as internals
from synapse_tchap_guard.readiness import Readiness
from synapse_tchap_guard.store import GuardStore
from synapse_tchap_guard.store.database import (
    Database,
    StoreTimedOut,
    StoreUnavailable,
)
from synapse_tchap_guard.store.lanes import Lanes
from synapse_tchap_guard.timing import HookTimes

T = TypeVar("T")


class SqliteTransaction:
    """What the store's transaction functions use of Synapse's LoggingTransaction."""

    database_engine = None  # not PostgreSQL

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor
        self.txn = cursor  # as LoggingTransaction.txn: the DB-API cursor

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        _like_postgres(params)
        self._cursor.execute(sql, params)

    def execute_batch(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        for params in rows:
            _like_postgres(params)
        self._cursor.executemany(sql, rows)

    def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    def fetchone(self) -> Any:
        return self._cursor.fetchone()

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount


class SqliteDatabase(Database):
    def __init__(self, clock: task.Clock, node: str = "main") -> None:
        self.node = node
        self.readiness = Readiness(clock, "its tables")
        self.times = HookTimes("unit.test")
        self.readiness.set_ready()
        self.lanes = Lanes(clock, spawn)
        self._errors = (sqlite3.Error,)
        self.connection = sqlite3.connect(":memory:")
        self.out = False  # the database does not answer at all
        self.stalled: set[str] = set()  # transactions that time out (others answer)
        self.transactions: list[str] = []

    async def run_now(self, desc: str, func: Callable[..., T]) -> T:
        if self.out:
            raise StoreUnavailable("the database is out (test)")
        if desc in self.stalled:
            raise StoreTimedOut(f"{desc} timed out (test)")
        self.transactions.append(desc)
        cursor = self.connection.cursor()
        try:
            result = func(SqliteTransaction(cursor))
        except internals.StatementCancelled as error:
            self.connection.rollback()
            raise StoreTimedOut(str(error)) from error
        except sqlite3.Error as error:
            self.connection.rollback()
            raise StoreUnavailable(str(error)) from error
        except BaseException:
            self.connection.rollback()
            raise
        self.connection.commit()
        return result

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self.connection.execute(sql, params).fetchall()


def spawn(work: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """A background process, as Synapse runs one: started now, not waited for."""
    defer.ensureDeferred(work())


def _like_postgres(params: Sequence[Any]) -> None:
    """psycopg2 refuses NUL in text before the statement reaches the server."""
    if any(isinstance(value, str) and "\x00" in value for value in params):
        raise ValueError("A string literal cannot contain NUL (0x00) characters.")


def new_store(clock: task.Clock, node: str = "main") -> GuardStore:
    """A store with its tables prepared."""
    store = GuardStore(SqliteDatabase(clock, node))
    run(store.prepare())
    return store


def shared_store(store: GuardStore, clock: task.Clock, node: str) -> GuardStore:
    """Another process's store on the same database."""
    database = SqliteDatabase(clock, node)
    assert isinstance(store.database, SqliteDatabase)
    database.connection = store.database.connection
    return GuardStore(database)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that completes without the reactor."""
    deferred = defer.ensureDeferred(coroutine)
    results: list[T] = []
    failures: list[Any] = []
    deferred.addCallbacks(results.append, failures.append)
    if failures:
        failures[0].raiseException()
    assert results, "the coroutine is still waiting"
    return results[0]
