"""The replay's report: side by side for a reader, as JSON for a script."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attr

from harness.demo import print_event_runs
from harness.replay.attacker import Haul
from harness.replay.colleagues import Day
from harness.replay.seed import Scale, Seeded


@attr.frozen
class Run:
    """One run of both workloads against one server."""

    haul: Haul
    days: list[Day]
    events: list[dict[str, Any]]  # what the SIEM received
    metrics: dict[str, float]  # the guard's series on Synapse's metrics endpoint

    @property
    def ordinary_requests(self) -> int:
        return sum(day.requests for day in self.days)

    @property
    def ordinary_refusals(self) -> list[str]:
        return [refusal for day in self.days for refusal in day.refused]


def megabytes(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def print_report(scale: Scale, seeded: Seeded, without: Run, with_: Run) -> None:
    total_media = sum(len(media) for media in seeded.attachments.values())
    rows: list[tuple[str, Callable[[Run], str]]] = [
        (
            "public rooms joined",
            lambda r: f"{len(r.haul.rooms_joined)} of {scale.forums}",
        ),
        ("messages read", lambda r: str(r.haul.messages)),
        (
            "attachments downloaded",
            lambda r: f"{len(r.haul.media_files)} of {total_media}",
        ),
        ("bytes downloaded", lambda r: megabytes(r.haul.media_bytes)),
        (
            "people enumerated (directory)",
            lambda r: f"{len(r.haul.people)} of {scale.users - 1}",
        ),
        ("requests sent", lambda r: str(r.haul.requests)),
        ("requests refused", lambda r: str(sum(r.haul.refusals.values()))),
        ("first refusal after", lambda r: seconds(r.haul.first_refusal_s)),
        ("blocked after", lambda r: seconds(r.haul.blocked_s)),
        ("ran for", lambda r: seconds(r.haul.duration_s)),
    ]
    print(f"\n{'':34}{'without the guard':>20}{'with the guard':>20}")
    print(f"The hijacked account ({seeded.victim.user_id})")
    for label, cell in rows:
        print(f"  {label:<32}{cell(without):>20}{cell(with_):>20}")
    print(f"Ordinary users ({len(seeded.colleagues)}, working at the same time)")
    ordinary_rows: list[tuple[str, Callable[[Run], str]]] = [
        ("requests sent", lambda r: str(r.ordinary_requests)),
        ("requests refused", lambda r: str(len(r.ordinary_refusals))),
    ]
    for label, ordinary in ordinary_rows:
        print(f"  {label:<32}{ordinary(without):>20}{ordinary(with_):>20}")
    for refusal in with_.ordinary_refusals:
        print(f"    refused with the guard: {refusal}")

    print("\nWhat the hijacked account was told, with the guard:")
    for what, count in with_.haul.refusals.most_common():
        print(f"  {count:>5} x {what}")

    print("\nWhat the SIEM received, with the guard (tchap_guard_events.log):")
    print_event_runs(with_.events, action_width=17)

    print("\nWhat Prometheus scraped from Synapse's metrics endpoint, with the guard:")
    for series, value in sorted(with_.metrics.items()):
        if value:
            print(f"  {series} {value:g}")


def as_json(scale: Scale, seeded: Seeded, without: Run, with_: Run) -> dict[str, Any]:
    def run(result: Run) -> dict[str, Any]:
        return {
            "attacker": result.haul.as_json(),
            "ordinary_users": {
                "users": len(result.days),
                "requests": result.ordinary_requests,
                "refused": len(result.ordinary_refusals),
                "refusals": result.ordinary_refusals,
            },
        }

    return {
        "scale": attr.asdict(scale),
        "server": {
            "attachments": sum(len(media) for media in seeded.attachments.values()),
            "attachment_bytes": seeded.media_bytes,
        },
        "without_guard": run(without),
        "with_guard": {
            **run(with_),
            "siem_events": with_.events,
            "metrics": with_.metrics,
        },
    }
