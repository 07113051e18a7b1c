"""Throughput of the same real Synapse without the guard and with it.

For each database, Synapse runs alternately without the module and with it (limits
high enough that nothing is refused), and a small keep-alive HTTP client drives
authenticated downloads of small media, spread over several accounts, with some
concurrency. Also measured: a plain authenticated request (`/account/whoami`), which
only pays the per-request block check. Prints requests per second and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attr

from harness.homeserver import Account, Homeserver, postgres_available

# High enough that nothing is refused, so both servers do the same work (no block
# threshold: one above limits this high could never be reached, and the config
# refuses it).
UNLIMITED_GUARD = {
    "public_room_joins": {"limits": [{"window": "1h", "max": 10**9}], "block_at": None},
    "media_downloads": {
        "limits": [
            {"window": "1m", "max": 10**9},
            {"window": "1h", "max": 10**9, "max_bytes": "1T"},
            {"window": "1d", "max": 10**9, "max_bytes": "1T"},
        ],
        "block_at": None,
    },
}


# Synapse serves from one thread (the GIL), so it gets a core of its own and the
# client the other: neither steals the other's time, and runs vary far less.
SERVER_CPUS = {0}
CLIENT_CPUS = {1}


class Client:
    """Just enough HTTP/1.1 over one keep-alive connection to measure a server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def get(self, path: str, token: str) -> int:
        self.writer.write(
            f"GET {path} HTTP/1.1\r\nHost: localhost\r\n"
            f"Authorization: Bearer {token}\r\n\r\n".encode()
        )
        status = int((await self.reader.readline()).split()[1])
        length, chunked = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding":
                chunked = value == "chunked"
        if not chunked:
            await self.reader.readexactly(length)
            return status
        # Synapse streams JSON bodies in chunks.
        while size := int((await self.reader.readline()).split(b";")[0], 16):
            await self.reader.readexactly(size + 2)
        await self.reader.readline()
        return status

    def close(self) -> None:
        self.writer.close()


async def drive(
    port: int, requests: Sequence[tuple[str, str]], concurrency: int
) -> tuple[float, dict[int, int]]:
    """Send the requests over `concurrency` connections; seconds taken, status counts."""
    queue = iter(requests)
    statuses: dict[int, int] = {}

    async def one_connection() -> None:
        client = await Client.connect(port)
        try:
            for path, token in queue:
                status = await client.get(path, token)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            client.close()

    started = time.perf_counter()
    await asyncio.gather(*(one_connection() for _ in range(concurrency)))
    return time.perf_counter() - started, statuses


def workload(
    kind: str, accounts: list[Account], media: list[str], count: int
) -> list[tuple[str, str]]:
    paths: Iterator[str]
    if kind == "whoami":
        paths = itertools.repeat("/_matrix/client/v3/account/whoami")
    else:
        paths = itertools.cycle(
            "/_matrix/client/v1/media/download/" + mxc.removeprefix("mxc://")
            for mxc in media
        )
    tokens = itertools.cycle(account.token for account in accounts)
    return [
        (path, token)
        for path, token, _ in zip(paths, tokens, range(count), strict=False)
    ]


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process and all its threads, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


WORKLOADS = ("whoami", "download")


@attr.define
class Prepared:
    """A running server with accounts and media ready, and what it measured."""

    server: Homeserver
    accounts: list[Account]
    media: list[str]
    rps: dict[str, list[float]] = attr.Factory(lambda: {k: [] for k in WORKLOADS})
    cpu_us: dict[str, list[float]] = attr.Factory(lambda: {k: [] for k in WORKLOADS})


def even_and_positive(text: str) -> int:
    value = int(text)
    if value < 2 or value % 2:
        raise argparse.ArgumentTypeError(
            f"must be an even number of 2 or more, not {value}"
        )
    return value


def prepare(database: str, guarded: bool, args: argparse.Namespace) -> Prepared:
    workdir = Path(tempfile.mkdtemp(prefix="tchap-guard-bench-"))
    server = Homeserver(
        workdir,
        database=database,
        guard=UNLIMITED_GUARD if guarded else None,
        settings={} if guarded else {"modules": []},
        cpus=SERVER_CPUS,
    )
    server.start()
    accounts = [server.register() for _ in range(args.accounts)]
    media = [accounts[0].upload(os.urandom(args.size)) for _ in range(args.media)]
    prepared = Prepared(server, accounts, media)
    for kind in WORKLOADS:  # warm the caches of both servers alike
        batch(prepared, kind, args.concurrency * 50, args.concurrency, record=False)
    return prepared


def freeze(prepared: Prepared) -> None:
    assert prepared.server.process is not None
    prepared.server.process.send_signal(signal.SIGSTOP)


def thaw(prepared: Prepared) -> None:
    assert prepared.server.process is not None
    prepared.server.process.send_signal(signal.SIGCONT)


def batch(
    prepared: Prepared, kind: str, count: int, concurrency: int, record: bool = True
) -> None:
    """Send one batch of a workload and record its throughput and CPU cost."""
    process = prepared.server.process
    assert process is not None
    requests = workload(kind, prepared.accounts, prepared.media, count)
    cpu_before = cpu_seconds(process.pid)
    seconds, statuses = asyncio.run(drive(prepared.server.port, requests, concurrency))
    cpu = cpu_seconds(process.pid) - cpu_before
    if set(statuses) != {200}:
        raise RuntimeError(f"{kind}: not every request was served: {statuses}")
    if record:
        prepared.rps[kind].append(count / seconds)
        prepared.cpu_us[kind].append(cpu / count * 1e6)


def compare(database: str, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Compare the servers with and without the guard on one database.

    Both servers stay up and short batches alternate A B B A, so each pair of batches
    compared ran within seconds of each other, whatever the machine did meanwhile. The
    server not being measured is frozen (SIGSTOP): its background work never runs on
    the other's time, and catches up in its own batches. An A/A run (two identical
    servers) showed the server started second running a few per cent faster, so the
    comparison runs twice, starting them in both orders, and takes the geometric
    mean: the order's effect cancels out.
    """
    sessions = []
    for guarded_first in (False, True):
        # With --control both servers run without the guard: the noise floor.
        first = prepare(database, guarded=guarded_first and not args.control, args=args)
        freeze(first)
        second = prepare(
            database, guarded=not guarded_first and not args.control, args=args
        )
        freeze(second)
        without, with_guard = (second, first) if guarded_first else (first, second)
        try:
            for round_number in range(args.rounds // 2):
                order = (
                    (without, with_guard)
                    if round_number % 2 == 0
                    else (with_guard, without)
                )
                for kind in WORKLOADS:
                    for prepared in order:
                        thaw(prepared)
                        batch(prepared, kind, args.requests, args.concurrency)
                        freeze(prepared)
            print(
                f"  {database}: started {'guarded' if guarded_first else 'unguarded'}"
                " first: done",
                flush=True,
            )
        finally:
            for prepared in (without, with_guard):
                thaw(prepared)
                prepared.server.destroy()
        sessions.append((without, with_guard))

    summary = {}
    for kind in WORKLOADS:
        per_session = []
        for without, with_guard in sessions:
            ratios = [
                g / w
                for g, w in zip(with_guard.rps[kind], without.rps[kind], strict=True)
            ]
            per_session.append(statistics.median(ratios))
        rps = {
            name: [r for pair in sessions for r in pair[index].rps[kind]]
            for index, name in enumerate(("without", "with"))
        }
        cpu = {
            name: [c for pair in sessions for c in pair[index].cpu_us[kind]]
            for index, name in enumerate(("without", "with"))
        }
        summary[kind] = {
            "without_guard_rps": round(statistics.median(rps["without"])),
            "with_guard_rps": round(statistics.median(rps["with"])),
            "ratio": round(math.sqrt(per_session[0] * per_session[1]), 3),
            "ratio_by_start_order": [round(r, 3) for r in per_session],
            "without_guard_cpu_us": round(statistics.median(cpu["without"])),
            "with_guard_cpu_us": round(statistics.median(cpu["with"])),
        }
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=500, help="per batch")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--media", type=int, default=50, help="distinct files")
    parser.add_argument("--size", type=int, default=4096, help="bytes per file")
    parser.add_argument(
        "--rounds",
        type=even_and_positive,
        default=40,
        help="batches of each, over both start orders (an even number)",
    )
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--control",
        action="store_true",
        help="A/A run: both servers without the guard, to see the method's noise",
    )
    args = parser.parse_args(argv)
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, CLIENT_CPUS)

    if args.control:
        print("Control run: both servers are WITHOUT the guard (A/A).")
    print(
        f"{args.rounds} rounds of {args.requests}-request batches per workload and"
        f" server, {args.concurrency} connections, {args.accounts} accounts,"
        f" {args.media} files of {args.size} bytes; {os.cpu_count()} cores"
    )
    report: dict[str, Any] = {}
    for database in args.databases.split(","):
        if database == "postgres" and not postgres_available():
            print("postgres: skipped, no PostgreSQL on 127.0.0.1:5432")
            continue
        report[database] = compare(database, args)

    print(
        "\nRequests/s (median batch); with/without ratio: geometric mean of the two"
        " start orders\n(median of paired batches in each); Synapse's CPU per request:"
    )
    print(
        f"{'database':<9} {'workload':<9} {'without':>8} {'with':>8} {'ratio':>6}"
        f" {'by order':>13} {'cpu without':>12} {'with':>7}"
    )
    for database, workloads in report.items():
        for kind, f in workloads.items():
            first, second = f["ratio_by_start_order"]
            print(
                f"{database:<9} {kind:<9} {f['without_guard_rps']:>6}/s"
                f" {f['with_guard_rps']:>6}/s {f['ratio']:>6.3f}"
                f"   {first:.3f} {second:.3f}"
                f" {f['without_guard_cpu_us']:>10}us {f['with_guard_cpu_us']:>5}us"
            )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
