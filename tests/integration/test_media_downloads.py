"""Media download quotas on real Synapses: counts, bytes, thumbnails, remote media,
federation, refusals and blocks."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import requests

from harness.homeserver import (
    ADMIN_API,
    Account,
    Homeserver,
    assert_wait,
    png,
    wait_until,
    window_count,
)

SHORT_S = 5
KIB = 1024
GUARD = {
    "media_downloads": {
        "limits": [
            {"window": f"{SHORT_S}s", "max": 4},
            {"window": "1h", "max": 10, "max_bytes": "250K"},
        ],
        "block_at": {"window": "1h", "max": 12},
    },
    "small_thumbnails": {
        "max_size": 100,
        "limits": [{"window": "1h", "max": 3}],
        "block_at": None,
    },
}
# Downloads are counted in memory and written twice a second.
FLUSHED_S = 1.5


@pytest.fixture(scope="module")
def files(server: Homeserver) -> dict[str, str]:
    """A small file, a 100 KiB file and a picture, uploaded by someone."""
    owner = server.register()
    return {
        "small": owner.upload(b"minutes of the meeting"),
        "100k": owner.upload(os.urandom(100 * KIB)),
        "picture": owner.upload(png(64, 64), "image/png"),
    }


def media_counters(admin: Account, user: Account) -> dict[str, Any]:
    response = admin.get(f"{ADMIN_API}/accounts/{quote(user.user_id)}")
    assert response.status_code == 200, response.text
    counters: dict[str, Any] = response.json()["counters"]["media_downloads"]
    return counters


def assert_refused(
    response: requests.Response, expected_wait_ms: float, words: str, window_ms: int
) -> None:
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["errcode"] == "M_LIMIT_EXCEEDED"
    assert words in body["error"]
    assert_wait(body["retry_after_ms"], expected_wait_ms, window_ms)
    assert response.headers["Retry-After"] == str(
        math.ceil(body["retry_after_ms"] / 1000)
    )


def test_downloads_and_large_thumbnails_share_the_quota_until_the_window_moves_on(
    server: Homeserver, admin: Account, files: dict[str, str]
) -> None:
    user = server.register()
    first = time.monotonic()
    assert user.download(files["small"]).status_code == 200
    assert user.thumbnail(files["picture"], size=640).status_code == 200
    assert user.download(files["picture"]).status_code == 200
    assert user.thumbnail(files["picture"], size=800).status_code == 200
    refused = user.thumbnail(files["picture"], size=640)
    elapsed_ms = (time.monotonic() - first) * 1000
    assert_refused(
        refused, SHORT_S * 1000 - elapsed_ms, "the limit is 4 per 5s", SHORT_S * 1000
    )

    # The short window moves on: once it holds less than its max, a download passes.
    wait_until(lambda: window_count(admin, user, "media_downloads", 0) < 4, SHORT_S + 5)
    assert user.download(files["small"]).status_code == 200

    counters = media_counters(admin, user)
    assert counters["limits"][1]["count"] == 5
    (deny,) = server.events_about(user.user_id, "deny")
    assert deny["tchap_guard"]["control"] == "media_downloads"
    assert deny["tchap_guard"]["media"] == "thumbnail"
    assert deny["tchap_guard"]["target"] == files["picture"]


def test_avatar_sized_thumbnails_have_a_quota_of_their_own(
    server: Homeserver, admin: Account, files: dict[str, str]
) -> None:
    user = server.register()
    sizes = [32, 64, 96]
    assert [user.thumbnail(files["picture"], size=s).status_code for s in sizes] == [
        200
    ] * 3
    refused = user.thumbnail(files["picture"], size=64)
    assert refused.status_code == 429
    assert "Too many small thumbnails" in refused.json()["error"]
    # Downloads and larger thumbnails are counted apart.
    assert user.thumbnail(files["picture"], size=640).status_code == 200
    assert user.download(files["small"]).status_code == 200
    assert window_count(admin, user, "small_thumbnails", 0) == 3
    assert window_count(admin, user, "media_downloads", 1) == 2


def test_max_bytes_counts_the_bytes_really_served(
    server: Homeserver, admin: Account, files: dict[str, str]
) -> None:
    user = server.register()
    first = time.monotonic()
    for _ in range(3):
        response = user.download(files["100k"])
        assert response.status_code == 200
        assert len(response.content) == 100 * KIB
    # Bytes are added once each response is sent.
    wait_until(lambda: media_counters(admin, user)["limits"][1]["bytes"] == 300 * KIB)

    refused = user.download(files["small"])
    elapsed_ms = (time.monotonic() - first) * 1000
    # Dropping the oldest 100 KiB gets under 250 KiB: the wait is the first one's.
    assert_refused(
        refused, 3600 * 1000 - elapsed_ms, "the limit is 250KB per 1h", 3_600_000
    )
    counters = media_counters(admin, user)
    assert counters["limits"][1] == {
        "window": "1h",
        "window_ms": 3_600_000,
        "count": 3,
        "max": 10,
        "bytes": 300 * KIB,
        "max_bytes": 250 * KIB,
    }
    (deny,) = server.events_about(user.user_id, "deny")
    assert deny["tchap_guard"]["measure"] == "bytes"
    assert deny["tchap_guard"]["count"] == 300 * KIB
    assert deny["tchap_guard"]["limit"] == 250 * KIB


def test_crossing_block_at_blocks_the_account(
    server: Homeserver, files: dict[str, str]
) -> None:
    user = server.register()
    statuses = [user.download(files["small"]).status_code for _ in range(12)]
    assert statuses == [200] * 4 + [429] * 7 + [401]
    assert user.whoami().status_code == 401  # every session ended
    response = server.login(user.localpart)
    assert response.status_code == 403
    assert "too many media downloads: 12 attempts in 1h" in response.json()["error"]
    (block,) = server.events_about(user.user_id, "block")
    assert block["tchap_guard"]["control"] == "media_downloads"
    assert block["tchap_guard"]["block"]["control"] == "media_downloads"


def test_admins_and_exempt_users_are_not_counted(
    server: Homeserver, admin: Account, files: dict[str, str]
) -> None:
    for _ in range(6):
        assert admin.download(files["small"]).status_code == 200
    assert media_counters(admin, admin)["limits"][0]["count"] == 0


# --- two federating homeservers ------------------------------------------------------


@pytest.fixture(scope="module")
def federation(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Homeserver, Homeserver]]:
    """`here` runs on the backend under test; `there` is another server it federates with."""
    here = Homeserver(
        tmp_path_factory.mktemp(f"here-{backend}"),
        database=backend,
        guard=GUARD,
        federation=True,
    )
    there = Homeserver(tmp_path_factory.mktemp("there"), guard=GUARD, federation=True)
    try:
        here.start()
        there.start()
        yield here, there
    finally:
        here.destroy()
        there.destroy()


def test_remote_media_counts_with_its_bytes(
    federation: tuple[Homeserver, Homeserver],
) -> None:
    here, there = federation
    admin, user = here.register(admin=True), here.register()
    remote_file = there.register().upload(os.urandom(20 * KIB))

    response = user.download(remote_file)
    assert response.status_code == 200 and len(response.content) == 20 * KIB
    wait_until(lambda: media_counters(admin, user)["limits"][1]["bytes"] == 20 * KIB)
    assert media_counters(admin, user)["limits"][1]["count"] == 1


def test_a_refused_remote_download_fetches_nothing(
    federation: tuple[Homeserver, Homeserver],
) -> None:
    here, there = federation
    user = here.register()
    uploader = there.register()
    warm_up = [uploader.upload(f"file {n}".encode()) for n in range(4)]
    never_fetched = uploader.upload(b"the file the scraper wanted")
    for mxc in warm_up:
        assert user.download(mxc).status_code == 200

    assert user.download(never_fetched).status_code == 429
    media_id = never_fetched.rsplit("/", 1)[1]
    assert here.sql(
        "SELECT COUNT(*) FROM remote_media_cache WHERE media_id = ?", (media_id,)
    ) == [(0,)]


def test_other_servers_fetching_our_media_are_not_counted_and_keep_working(
    federation: tuple[Homeserver, Homeserver],
) -> None:
    here, there = federation
    # The reader is an admin over there, so that server's own guard lets it be.
    uploader, reader = here.register(), there.register(admin=True)
    ours = [uploader.upload(f"report {n}".encode()) for n in range(8)]
    admin = here.register(admin=True)
    # An admin's view writes what the process counted in memory into the table.
    window_count(admin, uploader, "media_downloads", 0)
    counted = "SELECT COUNT(*), SUM(served) FROM tchap_guard_counts"
    before = here.sql(counted)

    # More fetches than any of our limits allow one account: each one is a federation
    # request from `there` to `here`, which carries no account of ours.
    for mxc in ours:
        response = reader.download(mxc)
        assert response.status_code == 200, response.text

    window_count(admin, uploader, "media_downloads", 0)
    assert here.sql(counted) == before


def test_a_burst_on_an_account_not_yet_loaded_gets_exactly_the_limit(
    server: Homeserver, files: dict[str, str]
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    user = server.register()
    with ThreadPoolExecutor(16) as pool:
        statuses = list(
            pool.map(lambda _: user.download(files["small"]).status_code, range(10))
        )
    assert sorted(statuses) == [200] * 4 + [429] * 6


def test_an_unblocked_account_downloads_again_at_once(
    server: Homeserver, admin: Account, files: dict[str, str]
) -> None:
    user = server.register()
    statuses = [user.download(files["small"]).status_code for _ in range(12)]
    assert statuses[-1] == 401
    response = admin.post(
        f"{ADMIN_API}/accounts/{quote(user.user_id)}/unblock", {"reason": "ok"}
    )
    assert response.status_code == 200
    session = server.login(user.localpart).json()["access_token"]
    user = Account(server, user.user_id, session, "")
    assert [user.download(files["small"]).status_code for _ in range(5)] == [
        200
    ] * 4 + [429]


def test_a_restart_loses_no_download_counted(
    server: Homeserver, admin: Account, files: dict[str, str]
) -> None:
    user = server.register()
    for _ in range(3):
        assert user.download(files["small"]).status_code == 200
    server.restart()  # at once: the counts are written on the way out
    view = admin.get(f"{ADMIN_API}/accounts/{quote(user.user_id)}").json()
    assert view["counters"]["media_downloads"]["limits"][1]["count"] == 3
