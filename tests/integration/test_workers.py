"""Several Synapse processes sharing one PostgreSQL database and Redis: they agree.

A main process and two generic workers, replicating through Redis, all serving the
client API; the account is driven through them, one after the other and at once.
Counts are exact across processes: a burst spread over them gets the limit, not the
limit times the number of processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import pytest

from harness.homeserver import (
    ADMIN_API,
    POSTGRES,
    Account,
    Homeserver,
    Worker,
    wait_until,
)
from synapse_tchap_guard.store.schema import SCHEMA_LOCK_KEY
from tests.services import require_postgres, require_redis

LIMIT = 4
BLOCK_AT = 30
MEDIA_LIMIT = 20
PEOPLE = 10
GUARD = {
    "public_room_joins": {
        "limits": [{"window": "1h", "max": LIMIT}],
        "block_at": {"window": "1h", "max": BLOCK_AT},
    },
    "media_downloads": {
        "limits": [{"window": "1h", "max": MEDIA_LIMIT}],
        "block_at": None,
    },
    "directory": {"free": {"window": "1h", "max_profiles": PEOPLE}, "block_at": None},
    "blocking": {"duration": "0", "end_sessions": False},
}

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Homeserver, Worker, Worker]]:
    require_postgres()
    require_redis()
    server = Homeserver(
        tmp_path_factory.mktemp("synapse-workers"),
        database="postgres",
        guard=GUARD,
        with_workers=True,
    )
    try:
        server.start()
        yield server, server.add_worker("worker1"), server.add_worker("worker2")
    finally:
        server.destroy()


def locked(account: Account) -> bool:
    response = account.whoami()
    return response.status_code == 401 and response.json()["errcode"] == "M_USER_LOCKED"


def test_joins_through_either_process_fill_the_same_quota(
    cluster: tuple[Homeserver, Worker, Worker],
) -> None:
    server, worker, _ = cluster
    owner, user = server.register(), server.register()
    via_worker = worker.on(user)
    rooms = [owner.create_room() for _ in range(LIMIT + 2)]

    assert [user.join(room).status_code for room in rooms[:2]] == [200, 200]
    assert [via_worker.join(room).status_code for room in rooms[2:4]] == [200, 200]
    assert user.join(rooms[4]).status_code == 429
    assert via_worker.join(rooms[5]).status_code == 429


def test_a_burst_at_both_processes_at_once_gets_exactly_the_limit(
    cluster: tuple[Homeserver, Worker, Worker],
) -> None:
    server, worker, _ = cluster
    owner, user = server.register(), server.register()
    sessions = [user, worker.on(user)]
    rooms = [owner.create_room() for _ in range(24)]

    with ThreadPoolExecutor(len(rooms)) as pool:
        statuses = list(
            pool.map(
                lambda i: sessions[i % 2].join(rooms[i]).status_code, range(len(rooms))
            )
        )

    # Exactly the limit, with no attempt left to on_error by exhausted retries.
    assert sorted(statuses) == [200] * LIMIT + [429] * (len(rooms) - LIMIT)
    for process_events in (server.events(), worker.events()):
        assert [
            e for e in process_events if e["event"]["action"] == "database_error"
        ] == []


def test_a_block_set_on_one_process_holds_on_the_other(
    cluster: tuple[Homeserver, Worker, Worker],
) -> None:
    server, worker, _ = cluster
    owner, user, admin = (
        server.register(),
        server.register(),
        server.register(admin=True),
    )
    via_worker = worker.on(user)

    # Blocked by the guard on the worker...
    statuses = [
        via_worker.join(owner.create_room()).status_code for _ in range(BLOCK_AT)
    ]
    assert statuses[-1] == 401 and statuses.count(200) == LIMIT
    assert "block" in [e["event"]["action"] for e in worker.events()]
    # ... refused by the main process within a second (its copy reloads every second).
    wait_until(lambda: locked(user), timeout=3)
    assert user.join(owner.create_room()).status_code == 401

    # Lifted on the main process, the worker lets the account through again.
    response = admin.post(
        f"{ADMIN_API}/accounts/{quote(user.user_id)}/unblock", {"reason": "ok"}
    )
    assert response.status_code == 200, response.text
    wait_until(lambda: via_worker.whoami().status_code == 200, timeout=3)
    assert via_worker.join(owner.create_room()).status_code == 200


def test_processes_starting_together_create_the_tables_once(
    cluster: tuple[Homeserver, Worker, Worker],
) -> None:
    """Both processes reach the schema step at once; neither fails, nothing is lost."""
    import psycopg2

    server, worker, _ = cluster
    worker.stop()
    server.stop()
    for (table,) in server.sql(
        "SELECT tablename FROM pg_tables WHERE tablename LIKE 'tchap_guard_%'"
    ):
        server.sql(f"DROP TABLE {table}")

    # Hold the schema lock so that both processes queue behind it, then let them race.
    holder = psycopg2.connect(dbname=server.postgres_name, **POSTGRES)
    holder.autocommit = True
    with holder.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK_KEY,))
    try:
        server.begin_start()
        worker.begin_start()
        wait_until(lambda: waiting_for_schema_lock(server) == 2, timeout=60)
    finally:
        with holder.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK_KEY,))
        holder.close()
    server.finish_start()
    worker.finish_start()

    owner, user = server.register(), server.register()
    rooms = [owner.create_room() for _ in range(LIMIT + 1)]
    assert [worker.on(user).join(room).status_code for room in rooms] == [
        200
    ] * LIMIT + [429]
    assert "prepare its tables" not in server.output() + worker.output()


def waiting_for_schema_lock(server: Homeserver) -> int:
    ((count,),) = server.sql(
        "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND objid = ?",
        (SCHEMA_LOCK_KEY,),
    )
    return int(count)


def test_downloads_through_either_process_are_counted_by_the_other_at_once(
    cluster: tuple[Homeserver, Worker, Worker],
) -> None:
    server, worker, _ = cluster
    user = server.register()
    mxc = server.register().upload(b"a file")
    via_worker = worker.on(user)
    served = MEDIA_LIMIT - 2
    assert [user.download(mxc).status_code for _ in range(served)] == [200] * served
    assert [via_worker.download(mxc).status_code for _ in range(3)] == [200, 200, 429]


def test_a_burst_of_downloads_over_three_processes_gets_exactly_the_limit(
    cluster: tuple[Homeserver, Worker, Worker],
) -> None:
    server, *workers = cluster
    user = server.register()
    mxc = server.register().upload(b"a file")
    sessions = [user, *(worker.on(user) for worker in workers)]
    with ThreadPoolExecutor(30) as pool:
        statuses = list(
            pool.map(lambda i: sessions[i % 3].download(mxc).status_code, range(90))
        )
    assert statuses.count(200) == MEDIA_LIMIT
    assert statuses.count(429) == 90 - MEDIA_LIMIT


def test_a_burst_of_profile_lookups_over_three_processes_gets_exactly_the_budget(
    cluster: tuple[Homeserver, Worker, Worker],
) -> None:
    server, *workers = cluster
    user = server.register()
    people = [server.register() for _ in range(30)]
    sessions = [user, *(worker.on(user) for worker in workers)]

    def look_up(i: int) -> int:
        path = f"/_matrix/client/v3/profile/{quote(people[i].user_id)}"
        return sessions[i % 3].get(path).status_code

    with ThreadPoolExecutor(30) as pool:
        statuses = list(pool.map(look_up, range(30)))
    assert statuses.count(200) == PEOPLE
    assert sorted(set(statuses)) == [200, 401]  # the rest asked to step up


def test_a_notice_queued_on_a_worker_is_sent_by_the_main_process(
    cluster: tuple[Homeserver, Worker, Worker],
) -> None:
    server, worker, _ = cluster
    admin, user = server.register(admin=True), server.register()
    # Synapse builds server notices only on the main process: the worker queues.
    response = worker.on(admin).post(
        f"{ADMIN_API}/accounts/{quote(user.user_id)}/block",
        {"reason": "set on the worker", "duration": "1h"},
    )
    assert response.status_code == 200, response.text
    (told,) = wait_until(
        lambda: [
            e
            for e in server.events_about(user.user_id, "owner_notified")
            if e["tchap_guard"]["channel"] == "server_notice"
        ]
    )
    assert told["service"]["node"]["name"] == "main"
    assert not [e for e in worker.events() if e["event"]["action"] == "owner_notified"]
    lifted = admin.post(
        f"{ADMIN_API}/accounts/{quote(user.user_id)}/unblock", {"reason": "test"}
    )
    assert lifted.status_code == 200
    (notice,) = wait_until(user.server_notices)
    assert "An administrator blocked it: set on the worker." in notice["body"]
