"""Element-shaped users against example_homeserver.yaml's guard, on PostgreSQL: a
working day of Element is refused nothing (the replay shows the same on SQLite).

A small ministry is seeded without the guard (seeding joins more rooms an hour than
the guard lets one account), then Synapse restarts with it, as an admin enables it
on a server already in use; five colleagues then work through their day at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness.homeserver import Homeserver
from harness.replay.cli import BACKGROUND_UPDATES, SETTINGS, background_updates_done
from harness.replay.colleagues import Day, day_at_work
from harness.replay.seed import Scale, Seeded, seed
from tests.services import require_postgres

pytestmark = pytest.mark.postgres

DECISIONS = ("deny", "step_up_required", "block", "login_refused")

SMALL = Scale(
    users=300,
    in_forums=300,
    forums=8,
    messages=200,
    media=60,
    private_rooms=4,
    ordinary_users=5,
)


@pytest.fixture(scope="module")
def ministry(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Homeserver, Seeded]]:
    require_postgres()
    server = Homeserver(
        tmp_path_factory.mktemp("synapse-element"),
        database="postgres",
        settings={**SETTINGS, **BACKGROUND_UPDATES},
    )
    guard = server.config["modules"]
    server.config["modules"] = []
    try:
        server.start()
        background_updates_done(server)
        seeded = seed(server, SMALL, lambda _: None)
        background_updates_done(server)
        server.stop()
        server.config["modules"] = guard
        server.start()
        yield server, seeded
    finally:
        server.destroy()


def test_a_day_of_element_is_refused_nothing_under_the_example_config(
    ministry: tuple[Homeserver, Seeded],
) -> None:
    server, seeded = ministry
    assert server.config["modules"][0]["config"] == Homeserver.example_guard()
    with ThreadPoolExecutor(len(seeded.colleagues)) as pool:
        days: list[Day] = list(
            pool.map(
                lambda numbered: day_at_work(server, numbered[1], seeded, numbered[0]),
                enumerate(seeded.colleagues),
            )
        )

    # A real day's worth: every keystroke a search, avatars by the dozen, rooms read.
    assert all(day.usage.searches > 20 for day in days)
    assert all(day.usage.thumbnails > 20 for day in days)
    assert all(day.requests > 150 for day in days)
    assert [refusal for day in days for refusal in day.refused] == []
    # Nor did the guard decide anything against them, not even a search left short.
    colleagues = {day.user_id for day in days}
    assert [
        event
        for event in server.events()
        if event.get("user", {}).get("id") in colleagues
        and event["event"]["action"] in DECISIONS
    ] == []
