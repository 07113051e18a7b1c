"""Database trouble on a real Synapse: the guard's tables vanish under it for a while.

`on_error` decides what gated requests get, no request becomes a 500, counters are
not corrupted, and accounts already blocked stay blocked either way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import pytest

from harness.homeserver import ADMIN_API, Account, Homeserver, wait_until
from tests.integration.conftest import running_homeserver

GUARD = {
    "public_room_joins": {
        "limits": [{"window": "1h", "max": 5}],
        "block_at": {"window": "1h", "max": 20},
    },
    "blocking": {"duration": "0", "end_sessions": False},
}
TABLES = ("tchap_guard_counts", "tchap_guard_targets", "tchap_guard_blocks")


@pytest.fixture(scope="module", params=["allow", "deny"])
def server(
    request: pytest.FixtureRequest,
    backend: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Homeserver]:
    guard = {**GUARD, "on_error": request.param}
    with running_homeserver(tmp_path_factory, backend, guard=guard) as homeserver:
        yield homeserver


@contextmanager
def tables_missing(server: Homeserver) -> Iterator[None]:
    for table in TABLES:
        server.sql(f"ALTER TABLE {table} RENAME TO {table}_away")
    try:
        yield
    finally:
        for table in TABLES:
            server.sql(f"ALTER TABLE {table}_away RENAME TO {table}")


def downloads_counted(admin: Account, user: Account) -> int:
    view = admin.get(f"{ADMIN_API}/accounts/{quote(user.user_id)}").json()
    return int(view["counters"]["media_downloads"]["limits"][0]["count"])


def counted(admin: Account, user: Account) -> int:
    view = admin.get(f"{ADMIN_API}/accounts/{quote(user.user_id)}").json()
    return int(view["counters"]["public_room_joins"]["limits"][0]["count"])


def test_on_error_decides_and_nothing_is_lost(server: Homeserver) -> None:
    on_error = server.guard_config["on_error"]
    admin, owner, user, newcomer = (
        server.register(admin=True),
        server.register(),
        server.register(),
        server.register(),  # nothing of it is in memory when the trouble starts
    )
    blocked = server.register()
    assert admin.post(
        f"{ADMIN_API}/accounts/{quote(blocked.user_id)}/block", {"reason": "r"}
    ).ok
    rooms = [owner.create_room() for _ in range(4)]
    mxc = owner.upload(b"a file")
    downloader = server.register()  # its counts are in memory before the trouble
    assert downloader.download(mxc).status_code == 200
    assert user.join(rooms[0]).status_code == 200
    assert user.join(rooms[1]).status_code == 200
    assert counted(admin, user) == 2

    with tables_missing(server):
        for response in (newcomer.join(rooms[2]), newcomer.download(mxc)):
            if on_error == "allow":
                assert response.status_code == 200, response.text
            else:
                assert response.status_code == 503, response.text
                assert response.headers["Retry-After"] == "5"
                assert "cannot check this request right now" in response.json()["error"]
        # Whatever on_error says, a known block stays in force, and never a 500, even
        # after the per-second reload of the blocks has failed.
        wait_until(lambda: "cannot reload blocks" in server.output())
        locked = blocked.whoami()
        assert locked.status_code == 401
        assert locked.json()["errcode"] == "M_USER_LOCKED"
        assert server.login(blocked.localpart).status_code == 403
        # Requests the guard does not gate are untouched.
        assert user.whoami().status_code == 200
        # Counts already in memory go on being judged there, whatever on_error says;
        # they are written once the tables are back.
        assert downloader.download(mxc).status_code == 200
        assert user.join(rooms[2]).status_code == 200

    troubles = server.events_about(newcomer.user_id, "database_error")
    for trouble in troubles:
        assert trouble["event"]["outcome"] == "unknown"
        assert trouble["tchap_guard"]["on_error"] == on_error
        assert trouble["tchap_guard"]["decision"] == on_error
    paths = {t["tchap_guard"]["control"]: t["url"]["path"] for t in troubles}
    assert paths["public_room_joins"].startswith("/_matrix/client/v3/join/")
    assert paths["media_downloads"].startswith("/_matrix/client/v1/media/download/")
    if on_error == "allow":  # the join went on to count the members it shows
        assert paths["directory"].startswith("/_matrix/client/v3/join/")
    assert len(troubles) == len(paths)

    # The tables are back: nothing counted meanwhile is lost, and counting goes on.
    assert server.events_about(user.user_id, "database_error") == []
    assert counted(admin, user) == 3
    assert user.join(rooms[3]).status_code == 200
    assert counted(admin, user) == 4
    assert blocked.whoami().status_code == 401
    wait_until(lambda: downloads_counted(admin, downloader) == 2)
