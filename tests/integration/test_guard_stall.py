"""A stall of the guard's own tables, on a real Synapse on PostgreSQL: the rest of
Synapse goes on serving, and the requests the guard judges get `on_error` in time.

The stall is a transaction of the test holding an ACCESS EXCLUSIVE lock on the
guard's tables, and on nothing else: every query of the guard waits, Synapse's own
queries do not. The pool is small (`cp_max: 5`, as the harness configures it), so
a guard that took every connection would stall Synapse too.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import pytest
import requests

from harness.homeserver import (
    POSTGRES,
    Account,
    Homeserver,
    counters,
    wait_until,
)
from synapse_tchap_guard.store.lanes import BACKGROUND, REQUESTS
from tests.integration.conftest import running_homeserver
from tests.services import require_postgres

GUARD = {
    "on_error": "deny",
    "public_room_joins": {"limits": [{"window": "1h", "max": 100}], "block_at": None},
    "blocking": {"end_sessions": False},
}
TABLES = (
    "tchap_guard_accounts",
    "tchap_guard_counts",
    "tchap_guard_targets",
    "tchap_guard_blocks",
    "tchap_guard_events",
)
# What the guard may make a request wait, and what the test allows on top of it for
# a loaded 2-core machine.
assert REQUESTS.deadline_ms is not None
DEADLINE_S = REQUESTS.deadline_ms / 1000
SLACK_S = 2.5
# Synapse's own requests, while the guard's tables are stalled.
FAST_S = 2.5


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Homeserver]:
    require_postgres()
    with running_homeserver(tmp_path_factory, "postgres", guard=GUARD) as homeserver:
        yield homeserver


@contextmanager
def guard_tables_locked(server: Homeserver) -> Iterator[None]:
    """Hold an ACCESS EXCLUSIVE lock on the guard's tables until the block ends."""
    import psycopg2

    connection = psycopg2.connect(dbname=server.postgres_name, **POSTGRES)
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {', '.join(TABLES)} IN ACCESS EXCLUSIVE MODE")
        yield
    finally:
        connection.rollback()
        connection.close()


def waiting_on_the_lock(server: Homeserver) -> int:
    """Connections of Synapse stalled by the lock in a query of the guard's tables.

    (Synapse's own background updates may wait too, behind the test's transaction:
    a `CREATE INDEX CONCURRENTLY` waits for every transaction open when it started.)
    """
    rows = server.sql(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        " AND query LIKE '%tchap_guard_%'"
    )
    return int(rows[0][0])


class Sampler:
    """Watches how many connections the guard holds stalled, until stopped."""

    def __init__(self, server: Homeserver) -> None:
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(server,))

    def _run(self, server: Homeserver) -> None:
        while not self._stop.is_set():
            self.most = max(self.most, waiting_on_the_lock(server))
            self._stop.wait(0.05)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def timed(call: Callable[[], requests.Response]) -> tuple[int, float, Any]:
    started = time.monotonic()
    response = call()
    return response.status_code, time.monotonic() - started, response.headers


def test_a_stalled_guard_table_leaves_synapse_serving(
    server: Homeserver, admin: Account
) -> None:
    owner, talker = server.register(), server.register()
    # A room each: Synapse makes joins of one room wait for each other.
    rooms = [owner.create_room() for _ in range(17)]
    mxc = owner.upload(b"a file")
    room = talker.create_room(public=False)
    since = talker.get("/_matrix/client/v3/sync?timeout=0").json()["next_batch"]
    # Accounts the guard has not loaded yet: each request of theirs needs its tables.
    scrapers = [server.register() for _ in range(6)]

    def gated(index: int) -> tuple[int, float, Any]:
        scraper = scrapers[index % len(scrapers)]
        kind = index % 3
        if kind == 0:
            return timed(lambda: scraper.join(rooms[index]))
        if kind == 1:
            return timed(lambda: scraper.download(mxc))
        profile = f"/_matrix/client/v3/profile/{quote(owner.user_id)}"
        return timed(lambda: scraper.get(profile))

    def synapse_serves() -> list[tuple[str, float]]:
        txn = uuid.uuid4().hex
        return [
            (
                "send",
                timed(
                    lambda: talker.put(
                        f"/_matrix/client/v3/rooms/{quote(room)}/send/m.room.message/{txn}",
                        {"msgtype": "m.text", "body": "still here"},
                    )
                )[1],
            ),
            (
                "sync",
                timed(
                    lambda: talker.get(
                        f"/_matrix/client/v3/sync?timeout=0&since={since}"
                    )
                )[1],
            ),
            (
                "createRoom",
                timed(lambda: talker.post("/_matrix/client/v3/createRoom"))[1],
            ),
        ]

    with (
        guard_tables_locked(server),
        Sampler(server) as sampler,
        ThreadPoolExecutor(max_workers=16) as pool,
    ):
        # More gated requests at once than the guard lets through to the database.
        futures = [pool.submit(gated, index) for index in range(8)]
        wait_until(lambda: waiting_on_the_lock(server) >= 2)
        # More of them while Synapse's own requests are timed, to keep it stalled.
        futures += [pool.submit(gated, index) for index in range(8, 16)]
        durations = synapse_serves()
        outcomes = [future.result(timeout=90) for future in futures]
        # Still stalled, but nothing waits on it any more: the database cancels the
        # guard's statements and gives its connections back (all but the
        # background's, which tries again).
        wait_until(
            lambda: waiting_on_the_lock(server) <= BACKGROUND.slots,
            timeout=2 * REQUESTS.statement_timeout_ms / 1000 + SLACK_S,
        )

    for status, seconds, headers in outcomes:
        assert status == 503, (status, seconds)
        assert headers["Retry-After"] == "5"
        assert seconds < DEADLINE_S + SLACK_S, seconds
    for name, seconds in durations:
        assert seconds < FAST_S, (name, seconds)
    # The guard never held more connections stalled than it may hold at all.
    assert 2 <= sampler.most <= REQUESTS.slots + BACKGROUND.slots

    refusals = [e for e in server.events() if e["event"]["action"] == "database_error"]
    assert len(refusals) >= len(outcomes)
    assert {e["tchap_guard"]["decision"] for e in refusals} == {"deny"}

    # The tables are back: the guard judges and counts again.
    wait_until(lambda: waiting_on_the_lock(server) == 0)
    late = server.register()
    assert late.join(rooms[-1]).status_code == 200
    assert counters(admin, late, "public_room_joins")["limits"][0]["count"] == 1
