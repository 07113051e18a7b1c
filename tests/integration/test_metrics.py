"""The guard's metrics on Synapse's own metrics endpoint, after real requests."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import pytest

from harness.homeserver import ADMIN_API, PASSWORD, STEP_UP, Homeserver, wait_until
from tests.integration.conftest import running_homeserver
from tests.integration.test_database_trouble import tables_missing

GUARD = {
    "public_room_joins": {
        "limits": [{"window": "1h", "max": 1}],
        "block_at": {"window": "1h", "max": 3},
    },
    "directory": {
        "free": {"window": "1h", "max_profiles": 1},
        "after_step_up": {"window": "1h", "max_profiles": 10},
        # This server sends no mail: step up with the password, to count it.
        "step_up_methods": ["password"],
    },
    "blocking": {"duration": "0", "end_sessions": False},
}


@pytest.fixture(scope="module")
def server(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Homeserver]:
    with running_homeserver(
        tmp_path_factory, backend, guard=GUARD, metrics=True
    ) as homeserver:
        yield homeserver


def series(name: str, **labels: str) -> str:
    labels = {"server_name": "localhost", **labels}
    inner = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    return f"synapse_tchap_guard_{name}{{{inner}}}"


def test_decisions_blocks_step_ups_and_errors_are_counted(server: Homeserver) -> None:
    before = server.metrics()
    assert before[series("blocked_accounts")] == 0
    assert before[series("logins_refused_total")] == 0

    owner, admin = server.register(), server.register(admin=True)
    rooms = [owner.create_room() for _ in range(3)]
    scraper = server.register()
    assert scraper.join(rooms[0]).status_code == 200
    assert scraper.join(rooms[1]).status_code == 429
    assert scraper.join(rooms[2]).status_code == 401  # the third attempt blocks
    assert server.login(scraper.localpart).status_code == 403

    searcher = server.register()
    for person in (owner, admin):
        searcher.get(f"/_matrix/client/v3/profile/{quote(person.user_id)}")
    session = searcher.post(STEP_UP, {}).json()["session"]
    auth = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": searcher.localpart},
        "session": session,
    }
    assert (
        searcher.post(STEP_UP, {"auth": {**auth, "password": "wrong"}}).status_code
        == 401
    )
    assert (
        searcher.post(STEP_UP, {"auth": {**auth, "password": PASSWORD}}).status_code
        == 200
    )

    with tables_missing(server):  # on_error: allow lets the join through, counted
        assert server.register().join(rooms[0]).status_code == 200

    joins = "public_room_joins"
    expected = {
        series("decisions_total", control=joins, decision="deny"): 1,
        series("decisions_total", control=joins, decision="block"): 1,
        series("decisions_total", control="directory", decision="deny"): 1,
        series("step_ups_total", outcome="required"): 1,
        series("step_ups_total", outcome="failed"): 1,
        series("step_ups_total", outcome="succeeded"): 1,
        series("logins_refused_total"): 1,
        series("database_errors_total", control=joins, decision="allow"): 1,
        series("blocked_accounts"): 1,
    }
    after = server.metrics()
    assert {key: after.get(key) for key in expected} == expected

    unblocked = admin.post(
        f"{ADMIN_API}/accounts/{quote(scraper.user_id)}/unblock", {"reason": "checked"}
    )
    assert unblocked.status_code == 200
    assert wait_until(lambda: server.metrics()[series("blocked_accounts")] == 0)
    assert server.metrics()[series("admin_actions_total", action="unblock")] == 1


def test_the_guards_own_time_is_timed_by_hook(server: Homeserver) -> None:
    owner = server.register()
    room = owner.create_room()
    assert owner.whoami().status_code == 200
    assert server.register().join(room).status_code == 200
    owner.get(f"/_matrix/client/v3/profile/{quote(owner.user_id)}")

    after = server.metrics()
    for hook in (
        "request",
        "join",
        "response",
        "db:load_counts",
        "db:blocks_in_force",
    ):
        assert after[series("hook_seconds_count", hook=hook)] > 0, hook
    # Buckets fine enough for the microseconds of the per-request check.
    assert series("hook_seconds_bucket", hook="request", le="1e-05") in after
