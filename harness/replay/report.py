"""The replay's report: route by route, side by side for a reader, as JSON for a script."""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from typing import Any

import attr

from harness.demo import print_event_runs
from harness.replay.attacker import Haul
from harness.replay.colleagues import Day
from harness.replay.owner import OwnerSaw, StepUpTry, print_owner
from harness.replay.seed import Scale, Seeded


@attr.frozen
class Run:
    """One run of both workloads against one server."""

    name: str
    haul: Haul
    days: list[Day]
    events: list[dict[str, Any]]  # what the SIEM received
    metrics: dict[str, float]  # the guard's series on Synapse's metrics endpoint
    step_up: StepUpTry | None = None  # the attacker's try with the phished password
    owner: OwnerSaw | None = None  # what the account's owner received
    heavy: Day | None = None  # the heavy reader on two devices

    def heavy_blocked(self) -> bool:
        heavy = self.heavy
        return heavy is not None and any(
            event["event"]["action"] == "block"
            and event.get("user", {}).get("id") == heavy.user_id
            for event in self.events
        )

    @property
    def ordinary_requests(self) -> int:
        return sum(day.requests for day in self.days)

    @property
    def ordinary_refusals(self) -> list[str]:
        return [refusal for day in self.days for refusal in day.refused]

    def ordinary_blocked(self) -> int:
        colleagues = {day.user_id for day in self.days}
        return len(
            {
                event["user"]["id"]
                for event in self.events
                if event["event"]["action"] == "block"
                and event.get("user", {}).get("id") in colleagues
            }
        )

    def ordinary_searches_left_short(self) -> int:
        """Searches of the ordinary users that left someone out (past a budget)."""
        colleagues = {day.user_id for day in self.days}
        return sum(
            1
            for event in self.events
            if event.get("tchap_guard", {}).get("withheld")
            and event.get("user", {}).get("id") in colleagues
        )


def share(part: int, whole: int) -> str:
    return f"{part} of {whole} ({100 * part / whole:.0f}%)" if whole else str(part)


def megabytes(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


Row = tuple[str, Callable[[Run], str]]


def attacker_rows(seeded: Seeded) -> list[Row]:
    people = len(seeded.people) - 1
    routes = sorted({route for route in ROOM_ROUTES})

    def rooms(route: str) -> Callable[[Run], str]:
        return lambda r: str(len(r.haul.rooms.get(route, ())))

    def of(kind: str, route: str) -> Callable[[Run], str]:
        return lambda r: str(len(getattr(r.haul, kind).get(route, ())))

    reachable = seeded.public_rooms - len(seeded.victim_rooms)
    rows: list[Row] = [
        (
            "public rooms reached",
            lambda r: share(len(r.haul.every_room()), reachable),
        )
    ]
    rows += [(f"  {route}", rooms(route)) for route in routes]
    rows.append(("people learned", lambda r: share(len(r.haul.everyone()), people)))
    rows += [(f"  by {route}", of("people", route)) for route in PEOPLE_ROUTES]
    rows.append(
        (
            "messages read",
            lambda r: share(len(r.haul.every_message()), seeded.total_messages),
        )
    )
    rows += [(f"  by {route}", of("messages", route)) for route in MESSAGE_ROUTES]
    rows += [
        (
            "attachments downloaded",
            lambda r: share(len(r.haul.media_files), seeded.total_media),
        ),
        ("bytes downloaded", lambda r: megabytes(r.haul.media_bytes)),
        ("requests sent", lambda r: str(r.haul.requests)),
        ("requests refused", lambda r: str(sum(r.haul.refusals.values()))),
        ("first refusal after", lambda r: seconds(r.haul.first_refusal_s)),
        ("blocked after", lambda r: seconds(r.haul.blocked_s)),
        ("ran for", lambda r: seconds(r.haul.duration_s)),
    ]
    return rows


ROOM_ROUTES = ("joined", "joined through the space", "read without joining")
PEOPLE_ROUTES = ("directory", "member lists", "message authors", "profiles")
MESSAGE_ROUTES = ("history (/messages)", "around events (/context)", "full-text search")

HEAVY_ROWS: list[Row] = [
    ("requests sent", lambda r: str(r.heavy.requests if r.heavy else "-")),
    ("requests refused", lambda r: str(len(r.heavy.refused) if r.heavy else "-")),
    ("blocked", lambda r: "yes" if r.heavy_blocked() else "no"),
]

ORDINARY_ROWS: list[Row] = [
    ("requests sent", lambda r: str(r.ordinary_requests)),
    ("requests refused", lambda r: str(len(r.ordinary_refusals))),
    ("accounts blocked", lambda r: str(r.ordinary_blocked())),
    ("searches that left people out", lambda r: str(r.ordinary_searches_left_short())),
]


def print_table(title: str, rows: Sequence[Row], runs: Sequence[Run]) -> None:
    print(title)
    for label, cell in rows:
        print(f"  {label:<32}" + "".join(f"{cell(run):>22}" for run in runs))


def print_report(seeded: Seeded, runs: Sequence[Run]) -> None:
    guarded = runs[-1]
    print(f"\n{'':34}" + "".join(f"{run.name:>22}" for run in runs))
    print_table(
        f"The hijacked account ({seeded.victim.user_id})", attacker_rows(seeded), runs
    )
    print_table(
        f"Ordinary users ({len(guarded.days)} on Element, working at the same time)",
        ORDINARY_ROWS,
        runs,
    )
    for refusal in guarded.ordinary_refusals:
        print(f"    refused with the guard: {refusal}")
    if guarded.heavy is not None:
        print_table(
            "A heavy reader (every room, ten pages back, then a second device whose"
            " Element fetches every thread on its own)",
            HEAVY_ROWS,
            runs,
        )
        refused = collections.Counter(guarded.heavy.refused)
        for refusal, count in refused.most_common():
            print(f"    refused with the guard: {count} x {refusal}")

    print("\nWhat the hijacked account was told, with the guard:")
    for what, count in guarded.haul.refusals.most_common():
        print(f"  {count:>5} x {what}")

    print_owner(guarded.step_up, guarded.owner)

    print("\nWhat the SIEM received, with the guard (tchap_guard_events.log):")
    print_event_runs(guarded.events, action_width=17)

    print("\nWhat Prometheus scraped from Synapse's metrics endpoint, with the guard:")
    for series, value in sorted(guarded.metrics.items()):
        if value and "_hook_seconds" not in series:  # the guard's time: see Speed
            print(f"  {series} {value:g}")


def print_calibration(seeded: Seeded, runs: Sequence[Run]) -> None:
    """One line per configuration: what the attacker got, what Element users met."""
    people = len(seeded.people) - 1
    reachable = seeded.public_rooms - len(seeded.victim_rooms)
    print(
        "\n| configuration | rooms reached | people learned | messages read |"
        " attachments | Element users refused | blocked | searches left short |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for run in runs:
        haul = run.haul
        print(
            f"| {run.name} | {share(len(haul.every_room()), reachable)}"
            f" | {share(len(haul.everyone()), people)}"
            f" | {share(len(haul.every_message()), seeded.total_messages)}"
            f" | {share(len(haul.media_files), seeded.total_media)}"
            f" | {len(run.ordinary_refusals)} | {run.ordinary_blocked()}"
            f" | {run.ordinary_searches_left_short()} |"
        )


def as_json(scale: Scale, seeded: Seeded, runs: Sequence[Run]) -> dict[str, Any]:
    def run(result: Run) -> dict[str, Any]:
        return {
            "name": result.name,
            "attacker": result.haul.as_json(),
            "ordinary_users": {
                "users": len(result.days),
                "requests": result.ordinary_requests,
                "refused": len(result.ordinary_refusals),
                "refusals": result.ordinary_refusals,
                "blocked": result.ordinary_blocked(),
                "searches_left_short": result.ordinary_searches_left_short(),
                "searches": sum(day.usage.searches for day in result.days),
                "thumbnails": sum(day.usage.thumbnails for day in result.days),
            },
            "siem_events": result.events,
            "metrics": result.metrics,
            "step_up_with_the_password": (
                result.step_up.as_json() if result.step_up else None
            ),
            "owner_received": result.owner.as_json() if result.owner else None,
            "heavy_reader": (
                {
                    "user_id": result.heavy.user_id,
                    "requests": result.heavy.requests,
                    "refused": len(result.heavy.refused),
                    "refusals": result.heavy.refused,
                    "blocked": result.heavy_blocked(),
                }
                if result.heavy
                else None
            ),
        }

    return {
        "scale": attr.asdict(scale),
        "server": {
            "people": len(seeded.people),
            "public_rooms": seeded.public_rooms,
            "public_rooms_the_account_was_in": len(seeded.victim_rooms),
            "largest_room": max(seeded.members.values()),
            "messages": seeded.total_messages,
            "attachments": seeded.total_media,
            "attachment_bytes": seeded.media_bytes,
        },
        "runs": [run(result) for result in runs],
    }
