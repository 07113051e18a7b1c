"""The guard at work: a hijacked account's burst of public-room joins on a real Synapse.

Starts Synapse on SQLite with example_homeserver.yaml (the guard at its recommended
thresholds), creates public rooms, then joins them all as a scraping script would,
ignoring refusals. Prints what the account got, what the SIEM received, and what an
admin sees.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

from harness.homeserver import ADMIN_API, Homeserver, wait_until


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rooms", type=int, default=70, help="public rooms to create")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="tchap-guard-demo-"))
    server = Homeserver(workdir)
    print("synapse-tchap-guard: a hijacked account against a real Synapse (SQLite)")
    print(f"  Synapse runs in {workdir} with the guard of example_homeserver.yaml:")
    joins = server.guard_config["public_room_joins"]
    print(f"  public_room_joins limits {joins['limits']}, block_at {joins['block_at']}")
    print(
        "  (Synapse's own per-process rc_joins, 0.1/s, is raised so that what you see"
    )
    print("  is the guard; by itself it lets one account join 360 rooms an hour.)")
    server.start()
    try:
        attack(server, args.rooms)
    finally:
        server.stop()
    print(f"\nSynapse stopped; its files, logs and events stay in {workdir}")
    return 0


def attack(server: Homeserver, room_count: int) -> None:
    owner = server.register("forum_owner")
    admin = server.register("admin", admin=True)
    victim = server.register("camille.martin")
    print(f"\nSeeding {room_count} public rooms...", flush=True)
    rooms = [owner.create_room(name=f"Forum {n}") for n in range(1, room_count + 1)]

    print(
        f"\n{victim.user_id}'s credentials were phished. The attacker joins every room:"
    )
    outcomes = []
    for number, room in enumerate(rooms, start=1):
        outcomes.append((number, victim.join(room)))
        if outcomes[-1][1].status_code == 401:  # blocked: its sessions end in a moment
            wait_until(victim.logged_out, timeout=5)
    for first, last, response in runs(outcomes):
        label = f"join {first}" if first == last else f"joins {first}-{last}"
        print(f"  {label:<14} {describe(response)}")
    print(f"  {'its session':<14} {describe(victim.whoami())}")
    print(f"  {'log in again':<14} {describe(server.login(victim.localpart))}")

    print(
        "\nWhat the SIEM received (tchap_guard_events.log, one ECS JSON object a line):"
    )
    print_event_runs(server.events_about(victim.user_id), action_width=15)

    print(f"\nAn admin looks the account up (GET {ADMIN_API}/accounts/...):")
    view = admin.get(f"{ADMIN_API}/accounts/{quote(victim.user_id)}").json()
    block = view["block"]
    print(f"  blocked: {view['blocked']}, by {block['blocked_by']}: {block['reason']}")
    joins = view["counters"]["public_room_joins"]
    for limit in joins["limits"]:
        print(
            f"  {limit['count']}/{limit['max']} public room joins served in {limit['window']}"
        )
    threshold = joins["block_at"]
    print(
        f"  {threshold['attempts']} join attempts towards the next block in"
        f" {threshold['window']} (the count started over at the block)"
    )
    print('  To release it: POST .../accounts/{user_id}/unblock {"reason": "..."}')


def runs(outcomes: list[tuple[int, Any]]) -> list[tuple[int, int, Any]]:
    """Group consecutive joins that got the same answer."""
    grouped: list[tuple[int, int, Any]] = []
    for number, response in outcomes:
        if grouped and same_answer(grouped[-1][2], response):
            grouped[-1] = (grouped[-1][0], number, grouped[-1][2])
        else:
            grouped.append((number, number, response))
    return grouped


def event_runs(
    events: list[dict[str, Any]],
) -> list[tuple[dict[str, Any], dict[str, Any], int]]:
    """Group consecutive events with the same action and message."""
    grouped: list[tuple[dict[str, Any], dict[str, Any], int]] = []
    for event in events:
        if grouped and (
            grouped[-1][0]["event"]["action"],
            grouped[-1][0]["message"],
        ) == (
            event["event"]["action"],
            event["message"],
        ):
            grouped[-1] = (grouped[-1][0], event, grouped[-1][2] + 1)
        else:
            grouped.append((event, event, 1))
    return grouped


def print_event_runs(events: list[dict[str, Any]], action_width: int) -> None:
    """The SIEM's lines for a reader: repeats folded, with the block's end."""
    for opening, closing, count in event_runs(events):
        repeat = (
            f" (x{count}, until {closing['@timestamp'][11:23]})" if count > 1 else ""
        )
        action = opening["event"]["action"]
        print(
            f"  {opening['@timestamp']}  {action:<{action_width}}"
            f" {opening['message']}{repeat}"
        )
        block = opening.get("tchap_guard", {}).get("block")
        if block and action == "block":
            print(f"  {'':24}  {'':{action_width}} blocked until {block['until']}")


def same_answer(a: Any, b: Any) -> bool:
    return bool(a.status_code == b.status_code and errcode(a) == errcode(b))


def errcode(response: Any) -> str:
    try:
        return str(response.json().get("errcode", ""))
    except ValueError:
        return ""


def describe(response: Any) -> str:
    if response.ok:
        return f"{response.status_code} served"
    body = response.json()
    text = f"{response.status_code} {body.get('errcode')}"
    if "retry_after_ms" in body:
        text += f", retry after {round(body['retry_after_ms'] / 60000)} min"
    first_sentence = body.get("error", "").split(". ")[0]
    return f"{text}: {first_sentence}"


if __name__ == "__main__":
    sys.exit(main())
