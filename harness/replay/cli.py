"""Replay the June 2026 attack against a real Synapse on SQLite, without and with the
guard of example_homeserver.yaml, and report what the hijacked account got away with
and what ordinary users noticed.

A small ministry's server is seeded once (people in the directory, forums with history
and attachments, private team rooms), then copied for each run, so both runs face the
same server. In each, the hijacked account and ordinary users work at the same time.
Synapse's own per-process rate limits are raised in both runs, so that what differs is
the guard alone (by themselves they let one account join 360 rooms an hour).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import attr

from harness.homeserver import Homeserver, wait_until
from harness.replay.attacker import Haul, Scraper
from harness.replay.colleagues import Day, day_at_work
from harness.replay.report import Run, as_json, print_report
from harness.replay.seed import FIRST_NAMES, SURNAMES, Scale, Seeded, copy_server, seed

# As on Tchap, where forums are listed in the public room directory (Synapse lets only
# admins publish rooms there unless told otherwise).
SETTINGS = {"room_list_publication_rules": [{"action": "allow"}]}
# A new database builds its user directory in the background; copies made before it
# is done would start over, with an empty directory. Done faster, without pauses.
BACKGROUND_UPDATES = {
    "background_updates": {"sleep_enabled": False, "default_batch_size": 500}
}


def main(argv: list[str] | None = None) -> int:
    defaults = Scale()
    parser = argparse.ArgumentParser(
        prog="scripts/replay", description=__doc__.split("\n\n")[0]
    )
    for field in attr.fields(Scale):
        flag = "--" + field.name.replace("_", "-")
        parser.add_argument(flag, type=positive, default=getattr(defaults, field.name))
    parser.add_argument(
        "--retries", type=at_least_zero, default=3, help="passes over what was refused"
    )
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    scale = Scale(
        **{field.name: getattr(args, field.name) for field in attr.fields(Scale)}
    )
    if scale.users < 2:
        parser.error("--users: the hijacked account needs colleagues, so 2 or more")

    workdir = Path(tempfile.mkdtemp(prefix="tchap-guard-replay-"))
    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - started:5.0f}s] {message}", flush=True)

    progress(f"Seeding a real Synapse (SQLite) in {workdir}")
    seeder = Homeserver(workdir / "seed", settings={**SETTINGS, **BACKGROUND_UPDATES})
    seeder.config["modules"] = []
    seeder.start()
    try:
        # Users registered while a new database builds its directory can be left out.
        progress("  letting Synapse build its user directory")
        background_updates_done(seeder)
        seeded = seed(seeder, scale, lambda what: progress(f"  seeding {what}"))
        background_updates_done(seeder)
    finally:
        seeder.stop()

    runs = []
    for guarded in (False, True):
        name = "with the guard" if guarded else "without the guard"
        directory = workdir / ("guarded" if guarded else "unguarded")
        copy_server(workdir / "seed", directory)
        server = Homeserver(directory, settings=SETTINGS, metrics=guarded)
        if not guarded:
            server.config["modules"] = []
        progress(
            f"Replaying {name}: the hijacked account and {len(seeded.colleagues)} colleagues"
        )
        server.start()
        try:
            haul, days = replay(server, seeded, args.retries)
            metrics = server.metrics() if guarded else {}
        finally:
            server.stop()  # which also flushes the events file
        events = [e for e in server.events() if e["event"]["action"] != "started"]
        runs.append(Run(haul, days, events, metrics))
        progress(
            f"  done: the attacker sent {haul.requests} requests in {haul.duration_s:.1f} s"
        )

    without, with_ = runs
    print_report(scale, seeded, without, with_)
    print(f"\nBoth servers' files, logs and events stay in {workdir}")
    if args.json:
        args.json.write_text(
            json.dumps(as_json(scale, seeded, without, with_), indent=2)
        )
        print(f"The report, as JSON: {args.json}")
    return 0


def background_updates_done(server: Homeserver) -> None:
    wait_until(lambda: not server.sql("SELECT 1 FROM background_updates"), 600, 0.2)


def at_least_zero(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def replay(server: Homeserver, seeded: Seeded, retries: int) -> tuple[Haul, list[Day]]:
    """The attack and a working day of ordinary users, at the same time."""
    dictionary = [*SURNAMES, *FIRST_NAMES]  # the names a scraper tries, one by one
    scraper = Scraper(server, seeded.victim.localpart, dictionary, retries)
    with ThreadPoolExecutor(1 + len(seeded.colleagues)) as pool:
        attack = pool.submit(scraper.run)
        days = [
            pool.submit(day_at_work, server, person, seeded, number)
            for number, person in enumerate(seeded.colleagues)
        ]
        return attack.result(), [day.result() for day in days]
