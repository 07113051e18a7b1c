"""What the guard costs a real Synapse: CPU per request, latency, its own time.

For each database, three copies of the same Synapse run on one core: two without the
module (A1, A2) and one with it (G, limits high enough that nothing is refused). A
keep-alive HTTP client on the other core drives five kinds of request, from many
distinct accounts: `whoami` (authenticated, nothing limits it), a download, a small
thumbnail, a join (of a public room already joined: Synapse answers without a new
event, the guard counts nothing new) and a profile lookup. Batches alternate between
the three servers in a rotating order, round after round, the servers not measured
frozen (SIGSTOP), so that each round compares them within seconds of each other.

Measured per batch: the server's CPU time (every thread, from the kernel's scheduler
statistics, in nanoseconds), the requests per second, each request's latency and,
from G's metrics endpoint, the guard's own time (`synapse_tchap_guard_hook_seconds`).
The guard's cost is the ratio of CPU per request, A over G (a capacity ratio: 0.98
means the guarded core serves 2% fewer requests), as the geometric mean of the rounds'
ratios with a 95% bootstrap interval; the A/A control, A1 against A2, in the same run.
A cold pass first, before the rounds: each account's first request of each kind.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import attr

from harness.bench.common import (
    CLIENT_CPUS,
    SERVER_CPUS,
    UNLIMITED_GUARD,
    cpu_ns,
    drive,
    rss_mb,
)
from harness.homeserver import Account, Homeserver, png, postgres_available
from harness.stats import histogram_quantile, percentile, ratio_interval

# A thawed server first runs the timers it missed while frozen: not this batch's work.
SETTLE_S = 0.1
KINDS = ("whoami", "download", "thumbnail", "join", "profile")
SERVERS = ("A1", "A2", "G")
# The guard's own time, as the hook that judges each kind (a join has its own).
HOOKS = {"join": "join"}

# What the issue asks of the guard, checked against what this run measured.
TARGET_RATIO = 0.98
TARGET_P99_RATIO = 1.10
TARGET_OWN_P99_US = {"whoami": 50.0, "download": 200.0}
CONTROL_TOLERANCE = 0.01


@attr.define
class Targets:
    """What one server serves, the same on every server."""

    media: list[str]
    images: list[str]
    rooms: list[str]
    people: list[str]

    def paths(self, kind: str) -> Iterator[tuple[str, str]]:
        def media_path(mxc: str, thumbnail: bool) -> str:
            server_and_id = mxc.removeprefix("mxc://")
            if thumbnail:
                return (
                    f"/_matrix/client/v1/media/thumbnail/{server_and_id}"
                    "?width=32&height=32&method=scale"
                )
            return f"/_matrix/client/v1/media/download/{server_and_id}"

        if kind == "whoami":
            return itertools.repeat(("GET", "/_matrix/client/v3/account/whoami"))
        if kind == "download":
            return itertools.cycle([("GET", media_path(m, False)) for m in self.media])
        if kind == "thumbnail":
            return itertools.cycle([("GET", media_path(m, True)) for m in self.images])
        if kind == "join":
            return itertools.cycle(
                [("POST", f"/_matrix/client/v3/join/{quote(r)}") for r in self.rooms]
            )
        return itertools.cycle(
            [("GET", f"/_matrix/client/v3/profile/{quote(p)}") for p in self.people]
        )


@attr.define
class Measured:
    """What a server measured, per kind: one value per round (and every latency)."""

    cpu_us: dict[str, list[float]] = attr.Factory(lambda: {k: [] for k in KINDS})
    rps: dict[str, list[float]] = attr.Factory(lambda: {k: [] for k in KINDS})
    latency: dict[str, list[float]] = attr.Factory(lambda: {k: [] for k in KINDS})
    # The guard's own time: cumulative histogram buckets (le -> count), per kind.
    own: dict[str, dict[float, float]] = attr.Factory(lambda: {k: {} for k in KINDS})


@attr.define
class Server:
    name: str
    server: Homeserver
    accounts: list[Account]  # warm: used in every round
    cold: list[Account]  # each used once per kind, in the cold pass
    targets: Targets
    warm: Measured = attr.Factory(Measured)
    first: Measured = attr.Factory(Measured)

    @property
    def pid(self) -> int:
        assert self.server.process is not None
        return self.server.process.pid

    def freeze(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def own_time(self, hook: str) -> dict[float, float]:
        """The guard's own time histogram for a hook (cumulative buckets)."""
        if self.name != "G":
            return {}
        prefix = 'synapse_tchap_guard_hook_seconds_bucket{hook="' + hook + '",le="'
        return {
            float(key[len(prefix) :].split('"')[0]): value
            for key, value in self.server.metrics().items()
            if key.startswith(prefix)
        }

    def batch(
        self,
        kind: str,
        accounts: list[Account],
        count: int,
        concurrency: int,
        into: Measured | None,
    ) -> None:
        """Send one batch of a kind and record its costs into `into`."""
        paths = self.targets.paths(kind)
        tokens = itertools.cycle(account.token for account in accounts)
        requests = [
            (method, path, token)
            for (method, path), token, _ in zip(
                paths, tokens, range(count), strict=False
            )
        ]
        hook = HOOKS.get(kind, "request")
        own_before = self.own_time(hook) if into is not None else {}
        cpu_before = cpu_ns(self.pid)
        seconds, latencies, statuses = asyncio.run(
            drive(self.server.port, requests, concurrency)
        )
        cpu = cpu_ns(self.pid) - cpu_before
        if set(statuses) != {200}:
            raise RuntimeError(f"{self.name} {kind}: not all served: {statuses}")
        if into is None:
            return
        into.cpu_us[kind].append(cpu / 1000 / count)
        into.rps[kind].append(count / seconds)
        into.latency[kind].extend(latencies)
        for bound, value in self.own_time(hook).items():
            delta = value - own_before.get(bound, 0.0)
            into.own[kind][bound] = into.own[kind].get(bound, 0.0) + delta


def prepare(name: str, database: str, args: argparse.Namespace) -> Server:
    workdir = Path(tempfile.mkdtemp(prefix="tchap-guard-bench-"))
    guarded = name == "G"
    server = Homeserver(
        workdir,
        database=database,
        guard=UNLIMITED_GUARD if guarded else None,
        settings={} if guarded else {"modules": []},
        metrics=True,
        cpus=SERVER_CPUS,
    )
    server.start()
    owner = server.register()
    accounts = [server.register() for _ in range(args.accounts)]
    cold = [server.register() for _ in range(args.cold)]
    targets = Targets(
        media=[owner.upload(os.urandom(args.size)) for _ in range(args.media)],
        images=[
            owner.upload(png(256, 256, seed), "image/png") for seed in range(args.media)
        ],
        rooms=[owner.create_room() for _ in range(args.rooms)],
        people=[account.user_id for account in accounts[: args.media]],
    )
    prepared = Server(name, server, accounts, cold, targets)
    # Warm every cache alike; every warm account joins every room once.
    for kind in KINDS:
        count = len(accounts) * (args.rooms if kind == "join" else 1)
        prepared.batch(kind, accounts, max(count, 400), args.concurrency, None)
    return prepared


def measure(database: str, args: argparse.Namespace) -> dict[str, Any]:
    servers: list[Server] = []
    try:
        for name in SERVERS:
            servers.append(prepare(name, database, args))
            servers[-1].freeze()
        # Cold: each account's first request of each kind, once per server.
        for kind in KINDS:
            for server in servers:
                server.thaw()
                time.sleep(SETTLE_S)
                cold = server.cold  # one request each: a join is a real one
                server.batch(kind, cold, len(cold), args.concurrency, server.first)
                server.freeze()
        # The warm accounts sat idle through all that, longer than the guard keeps
        # an idle account's counts in memory: one unmeasured round makes them warm.
        for kind in KINDS:
            for server in servers:
                server.thaw()
                time.sleep(SETTLE_S)
                server.batch(
                    kind, server.accounts, len(server.accounts), args.concurrency, None
                )
                server.freeze()
        orders = list(itertools.permutations(servers))
        for round_number in range(args.rounds):
            for kind in KINDS:
                # A join costs ten times a download: fewer of them.
                count = args.requests // (4 if kind == "join" else 1)
                for server in orders[(round_number + KINDS.index(kind)) % len(orders)]:
                    server.thaw()
                    time.sleep(SETTLE_S)
                    server.batch(
                        kind, server.accounts, count, args.concurrency, server.warm
                    )
                    server.freeze()
            print(f"  {database}: round {round_number + 1}/{args.rounds}", flush=True)
        for server in servers:
            server.thaw()
        memory = {server.name: round(rss_mb(server.pid)) for server in servers}
    finally:
        for server in servers:
            server.thaw()
            server.server.destroy()
    by_name = {server.name: server for server in servers}
    return {
        "memory_mb": memory,
        "warm": summarise({n: s.warm for n, s in by_name.items()}, paired=True),
        "cold": summarise({n: s.first for n, s in by_name.items()}, paired=False),
    }


def summarise(measured: dict[str, Measured], paired: bool) -> dict[str, Any]:
    a1, a2, g = measured["A1"], measured["A2"], measured["G"]
    summary: dict[str, Any] = {}
    for kind in KINDS:
        # CPU per request of the unguarded pair, round by round, against the guarded.
        baseline = [
            (x * y) ** 0.5
            for x, y in zip(a1.cpu_us[kind], a2.cpu_us[kind], strict=True)
        ]
        guard = [b / c for b, c in zip(baseline, g.cpu_us[kind], strict=True)]
        control = [x / y for x, y in zip(a2.cpu_us[kind], a1.cpu_us[kind], strict=True)]
        latency = {
            name: {q: percentile(m.latency[kind], q / 100) * 1e3 for q in (50, 95, 99)}
            for name, m in measured.items()
        }
        unguarded_p99 = (latency["A1"][99] * latency["A2"][99]) ** 0.5
        own = sorted(g.own[kind].items())
        summary[kind] = {
            "ratio": ratio_interval(guard) if paired else (guard[0],) * 3,
            "control": ratio_interval(control) if paired else (control[0],) * 3,
            "cpu_us": {n: _median(m.cpu_us[kind]) for n, m in measured.items()},
            "rps": {n: _median(m.rps[kind]) for n, m in measured.items()},
            "latency_ms": latency,
            "p99_ratio": latency["G"][99] / unguarded_p99,
            "own_us": {q: histogram_quantile(own, q / 100) * 1e6 for q in (50, 99)},
        }
    return summary


def _median(values: list[float]) -> float:
    return percentile(values, 0.5)


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        "\nCapacity ratio: Synapse's CPU per request without the guard over with it"
        " (1.00: no cost),\ngeometric mean of the rounds with its 95% interval; A/A:"
        " the two unguarded servers, same run.\nLatency in ms (p50/p95/p99), the"
        " guard's own time in µs (its `request` hook; `join` for joins)."
    )
    header = (
        f"{'db':<8} {'request':<16} {'ratio [95% CI]':<20} {'A/A [95% CI]':<20}"
        f" {'CPU µs A→G':<12} {'req/s A→G':<11} {'latency A (ms)':<16}"
        f" {'latency G (ms)':<16} {'p99 ratio':<9} {'own p50/p99 µs':<14}"
    )
    targets: list[tuple[str, str, bool]] = []
    for database, result in results.items():
        print(f"\n{header}")
        for phase in ("warm", "cold"):
            for kind, f in result[phase].items():
                label = kind if phase == "warm" else f"{kind} (cold)"
                ratio, control = f["ratio"], f["control"]
                lat_a, lat_g = f["latency_ms"]["A1"], f["latency_ms"]["G"]
                cpu, rps, own = f["cpu_us"], f["rps"], f["own_us"]
                a_cpu = (cpu["A1"] * cpu["A2"]) ** 0.5
                a_rps = (rps["A1"] * rps["A2"]) ** 0.5
                print(
                    f"{database:<8} {label:<16}"
                    f" {ratio[0]:.3f} [{ratio[1]:.3f}, {ratio[2]:.3f}]"
                    f"  {control[0]:.3f} [{control[1]:.3f}, {control[2]:.3f}]"
                    f"  {a_cpu:>4.0f}→{cpu['G']:<5.0f}"
                    f"  {a_rps:>4.0f}→{rps['G']:<4.0f}"
                    f"  {lat_a[50]:.1f}/{lat_a[95]:.1f}/{lat_a[99]:.1f}".ljust(17)
                    + f"  {lat_g[50]:.1f}/{lat_g[95]:.1f}/{lat_g[99]:.1f}".ljust(17)
                    + f"  {f['p99_ratio']:<8.2f}  {own[50]:.0f}/{own[99]:.0f}"
                )
                if phase == "cold":
                    continue
                where = f"{database} {kind}"
                targets.append(
                    (
                        f"{where}: ratio ≥ {TARGET_RATIO}",
                        f"{ratio[0]:.3f} [{ratio[1]:.3f}, {ratio[2]:.3f}]",
                        ratio[0] >= TARGET_RATIO,
                    )
                )
                targets.append(
                    (
                        f"{where}: p99 latency ratio ≤ {TARGET_P99_RATIO}",
                        f"{f['p99_ratio']:.2f}",
                        f["p99_ratio"] <= TARGET_P99_RATIO,
                    )
                )
                targets.append(
                    (
                        f"{where}: A/A within 1.00 ± {CONTROL_TOLERANCE}",
                        f"{control[0]:.3f} [{control[1]:.3f}, {control[2]:.3f}]",
                        abs(control[0] - 1) <= CONTROL_TOLERANCE,
                    )
                )
                if kind in TARGET_OWN_P99_US:
                    limit = TARGET_OWN_P99_US[kind]
                    targets.append(
                        (
                            f"{where}: guard's own time p99 ≤ {limit:.0f} µs",
                            f"{own[99]:.0f} µs",
                            own[99] <= limit,
                        )
                    )
        print(f"memory (MB, after the run): {result['memory_mb']}")
    print("\nTargets")
    for name, value, ok in targets:
        print(f"  {name:<48} {value:<24} {verdict(ok)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench outside", description=__doc__)
    parser.add_argument("--requests", type=int, default=300, help="per batch")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--accounts", type=int, default=200, help="warm accounts")
    parser.add_argument("--cold", type=int, default=200, help="cold accounts")
    parser.add_argument("--media", type=int, default=50, help="distinct files")
    parser.add_argument("--rooms", type=int, default=2, help="public rooms joined")
    parser.add_argument("--size", type=int, default=4096, help="bytes per file")
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--quick", action="store_true", help="6 rounds of 150 requests, 50 accounts"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.requests, args.accounts, args.cold = 6, 150, 50, 50
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, CLIENT_CPUS)
    # The same hash seed for every server: dictionaries laid out alike.
    os.environ["PYTHONHASHSEED"] = "0"

    print(
        f"{args.rounds} rounds of {args.requests}-request batches per kind and server,"
        f" {args.concurrency} connections, {args.accounts} warm and {args.cold} cold"
        f" accounts; {os.cpu_count()} cores"
    )
    results: dict[str, dict[str, Any]] = {}
    for database in args.databases.split(","):
        if database == "postgres" and not postgres_available():
            print("postgres: skipped, no PostgreSQL on 127.0.0.1:5432")
            continue
        results[database] = measure(database, args)
    report(results, args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0
