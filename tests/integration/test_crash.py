"""A Synapse process killed outright (SIGKILL, as a crash or the OOM killer would)
loses at most its last moments of counts, and never what decided a refusal.

The guard writes what it counted every 250 ms, and before it answers a refusal; what
a crash can lose is what was served in the last write interval. Measured here from
the client's side: every download answered more than `LOSS_BOUND_S` before the kill
is counted after the restart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from harness.homeserver import Account, Homeserver, wait_until, window_count
from synapse_tchap_guard.counting import journal
from tests.integration.conftest import running_homeserver

# The write interval, and the time a write may take on a busy 2-core machine.
LOSS_BOUND_S = journal.FLUSH_MS / 1000 + 0.25
LIMIT = 10
GUARD = {
    "media_downloads": {
        "limits": [{"window": "1h", "max": 100_000}, {"window": "1d", "max": LIMIT}],
        "block_at": None,
    },
}


@pytest.fixture
def server(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Homeserver]:
    guard = {
        "media_downloads": {
            "limits": [{"window": "1h", "max": 100_000}],
            "block_at": None,
        },
    }
    with running_homeserver(tmp_path_factory, backend, guard=guard) as homeserver:
        yield homeserver


def test_a_crash_loses_at_most_the_last_write_interval(server: Homeserver) -> None:
    user, admin = server.register(), server.register(admin=True)
    mxc = server.register().upload(b"a small file")
    answered: list[float] = []  # when each download was answered, served
    stop = threading.Event()

    def download_until_the_crash() -> None:
        while not stop.is_set():
            try:
                if user.download(mxc).status_code == 200:
                    answered.append(time.monotonic())
            except Exception:  # the server is gone
                return

    threads = [threading.Thread(target=download_until_the_crash) for _ in range(4)]
    for thread in threads:
        thread.start()
    # A burst under way: more than a write interval of it behind (so written), and
    # its last counts being written behind it.
    wait_until(
        lambda: sum(1 for t in answered if t < time.monotonic() - LOSS_BOUND_S) > 100
    )
    killed_at = time.monotonic()
    server.kill()
    stop.set()
    for thread in threads:
        thread.join()

    server.start()
    counted = window_count(admin, user, "media_downloads", 0)
    surely_written = sum(1 for t in answered if t < killed_at - LOSS_BOUND_S)
    assert surely_written > 50  # the burst was real
    assert surely_written <= counted <= len(answered) + 4  # +4: in flight at the kill


def test_what_decided_a_refusal_survives_a_crash(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with running_homeserver(tmp_path_factory, backend, guard=GUARD) as server:
        user = server.register()
        mxc = server.register().upload(b"a small file")
        statuses = [user.download(mxc).status_code for _ in range(LIMIT + 1)]
        assert statuses == [200] * LIMIT + [429]
        server.kill()  # at once: well within a write interval of the refusal
        server.start()
        assert Account.download(user, mxc).status_code == 429
