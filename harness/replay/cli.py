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
from typing import Any

import attr

from harness.homeserver import Homeserver, wait_until
from harness.mail import MailServer
from harness.replay import owner
from harness.replay.attacker import Haul, Scraper
from harness.replay.colleagues import Day, day_at_work, heavy_reader
from harness.replay.report import Run, as_json, print_calibration, print_report
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
    parser.add_argument(
        "--scale",
        type=fraction,
        help="seed a server shaped like the attacked one, at this fraction of it"
        " (0.1: 7,300 people, 60 forums, 64,300 messages, 5,900 attachments)",
    )
    for field in attr.fields(Scale):
        flag = "--" + field.name.replace("_", "-")
        parser.add_argument(
            flag, type=positive, help=f"default {getattr(defaults, field.name)}"
        )
    parser.add_argument(
        "--retries", type=at_least_zero, default=3, help="passes over what was refused"
    )
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="also replay with tighter and looser limits than the example's, and"
        " print the calibration table",
    )
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    base = Scale.of_breach(args.scale) if args.scale else defaults
    given = {
        field.name: getattr(args, field.name)
        for field in attr.fields(Scale)
        if getattr(args, field.name) is not None
    }
    scale = attr.evolve(base, **given)
    if scale.users < scale.ordinary_users + 10:
        parser.error("--users: the accounts must outnumber the ordinary users by 10")

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

    example = Homeserver.example_guard()
    configurations: list[tuple[str, dict[str, Any] | None]] = [
        ("without the guard", None),
        ("with the guard", example),
    ]
    if args.calibrate:
        configurations += [
            ("limits x 1/2", scaled(example, 0.5)),
            ("limits x 2", scaled(example, 2)),
            ("limits x 4", scaled(example, 4)),
        ]
    runs = []
    for number, (name, guard) in enumerate(configurations):
        directory = workdir / f"run{number}"
        copy_server(workdir / "seed", directory)
        guarded = guard is not None
        # With the guard, the owner's mail goes to a real SMTP server on localhost.
        mail = MailServer() if guarded else None
        server = Homeserver(
            directory,
            guard=guard,
            settings=SETTINGS,
            metrics=guarded,
            email=mail.settings() if mail else None,
        )
        if not guarded:
            server.config["modules"] = []
        else:
            owner.give_address(server, seeded.victim.localpart)
        progress(
            f"Replaying {name}: the hijacked account and {len(seeded.colleagues)} colleagues"
        )
        server.start()
        step_up, saw = None, None
        try:
            if guarded:
                step_up = owner.attacker_tries_to_step_up(
                    server, seeded.victim.localpart
                )
            haul, days, heavy = replay(server, seeded, args.retries)
            metrics = server.metrics() if guarded else {}
            if mail is not None:
                saw = owner.after_the_incident(server, mail, seeded.victim.localpart)
        finally:
            server.stop()  # which also flushes the events file
            if mail is not None:
                mail.close()
        events = [e for e in server.events() if e["event"]["action"] != "started"]
        runs.append(Run(name, haul, days, events, metrics, step_up, saw, heavy))
        progress(
            f"  done: the attacker sent {haul.requests} requests in {haul.duration_s:.1f} s"
        )

    print_report(seeded, runs[:2])
    if args.calibrate:
        print("\nCalibration: the same attack and day at work, under other limits")
        print_calibration(seeded, runs[1:])
    print(f"\nEvery server's files, logs and events stay in {workdir}")
    if args.json:
        args.json.write_text(json.dumps(as_json(scale, seeded, runs), indent=2))
        print(f"The report, as JSON: {args.json}")
    return 0


# Not what an account may reach: left as they are.
NOT_SCALED = ("failed_step_ups_block_at", "email_code", "owner_notices")


def scaled(guard: dict[str, Any], factor: float) -> dict[str, Any]:
    """The guard's config with every maximum of what an account may reach (limits and
    block thresholds) times `factor`."""

    def walk(value: Any, key: str = "") -> Any:
        if key in NOT_SCALED:
            return value
        if isinstance(value, dict):
            return {k: walk(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(item) for item in value]
        if key in ("max", "max_profiles") and isinstance(value, int):
            return max(1, round(value * factor))
        return value

    scaled_guard: dict[str, Any] = walk(guard)
    return scaled_guard


def fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 1, not {value}")
    return value


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


def replay(
    server: Homeserver, seeded: Seeded, retries: int
) -> tuple[Haul, list[Day], Day | None]:
    """The attack, a working day of ordinary users and a heavy reader (the first
    colleague, when there are two or more), at the same time."""
    # The names a scraper tries, one by one, then every three letters they begin with
    # (the fewest a search needs).
    names = [*SURNAMES, *FIRST_NAMES]
    prefixes = dict.fromkeys(name[:3].lower() for name in names)
    dictionary = [*names, *prefixes]
    scraper = Scraper(server, seeded.victim.localpart, seeded, dictionary, retries)
    colleagues = list(seeded.colleagues)
    reader = colleagues.pop(0) if len(colleagues) >= 2 else None
    with ThreadPoolExecutor(2 + len(colleagues)) as pool:
        attack = pool.submit(scraper.run)
        days = [
            pool.submit(day_at_work, server, person, seeded, number)
            for number, person in enumerate(colleagues, start=1)
        ]
        heavy = (
            pool.submit(heavy_reader, server, reader, colleagues[0], seeded, 0)
            if reader is not None
            else None
        )
        return (
            attack.result(),
            [day.result() for day in days],
            heavy.result() if heavy is not None else None,
        )
