"""The guard's share of a guarded Synapse's GIL time, from a sampling profile.

Timing two servers against each other resolves a few per cent on a 2-core machine at
best (see `harness.bench`); a profile of one server resolves far less. For each kind
of request, a guarded Synapse (limits so high nothing is refused) serves a steady
load while py-spy samples the thread that holds the GIL, the process paused at each
sample so that its stack is read whole (without pausing, a stack is read while it
changes: Synapse's frames turned up under the guard's, and the guard's callers went
missing). Each sample whose
innermost frames are the guard's code (or what it calls outside Synapse: the
standard library, Prometheus) is the guard's, and so is Synapse's database code the
guard runs (counts written behind). Samples where the guard calls back into Synapse
for Synapse's own work (the end of each response, which it wraps) are Synapse's.

The share is binomial: it comes with its 95% interval. It is a share of the time
spent holding the GIL, the resource a busy Synapse process runs out of (one thread
runs Python at a time; the work done outside it, SQLite's own, reading files, TLS,
runs beside it on another core): 1 - share is the capacity ratio of such a process,
the requests per second it serves with the guard over without. Of all the CPU the
guard's share is lower, as that work outside the GIL is mostly Synapse's.
"""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from harness.bench.common import UNLIMITED_GUARD, drive
from harness.homeserver import Homeserver, png

KINDS = ("whoami", "download", "thumbnail", "join", "profile")
GUARD = "synapse_tchap_guard/"
# Synapse's own work, when the guard's frame above it only wraps it.
WRAPPED = "finished_processing"
TARGET = 0.98  # the capacity ratio asked of every kind of request
RATE = 100  # samples per second; each pauses the server while its stack is read


def profile(kind: str, seconds: float, database: str) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="tchap-guard-profile-"))
    server = Homeserver(workdir, database=database, guard=UNLIMITED_GUARD)
    server.start()
    try:
        owner = server.register()
        accounts = [server.register() for _ in range(50)]
        files = [owner.upload(os.urandom(4096)) for _ in range(10)]
        images = [owner.upload(png(256, 256, n), "image/png") for n in range(10)]
        rooms = [owner.create_room() for _ in range(2)]
        requests = [
            (
                "POST" if kind == "join" else "GET",
                _path(kind, n, files, images, rooms, accounts[(n * 7) % 50].user_id),
                accounts[n % 50].token,
            )
            for n in range(3000)
        ]
        # Every account warm (and in both rooms: a join repeated, as the benchmark's).
        asyncio.run(drive(server.port, requests, 8))
        assert server.process is not None
        out = workdir / "profile.txt"
        spy = subprocess.Popen(
            [
                *(str(Path(sys.executable).parent / "py-spy"), "record", "--gil"),
                *("-p", str(server.process.pid), "-r", str(RATE)),
                *("-d", str(math.ceil(seconds))),
                *("-f", "raw", "-o", str(out)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        served = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            _, _, statuses = asyncio.run(drive(server.port, requests, 8))
            assert set(statuses) == {200}, statuses
            served += len(requests)
        spy.wait(60)
        return {"kind": kind, "requests": served, **shares(out.read_text())}
    finally:
        server.destroy()


def shares(raw: str) -> dict[str, Any]:
    """Samples by whose work they are (py-spy's raw format: `frame;frame;... n`)."""
    total = guard = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count:
            continue  # py-spy ends its output with an empty line
        samples = int(count)
        total += samples
        frames = stack.split(";")
        ours = [i for i, frame in enumerate(frames) if GUARD in frame]
        if not ours:
            continue
        below = frames[ours[-1] + 1 :]
        synapse_below = any(_synapse(frame) for frame in below)
        if synapse_below and WRAPPED in frames[ours[-1]]:
            continue  # Synapse ending its response, inside the guard's wrapper
        guard += samples
    share = guard / total if total else 0.0
    half = 1.96 * math.sqrt(share * (1 - share) / total) if total else 0.0
    return {"samples": total, "guard_samples": guard, "share": share, "ci": half}


def _synapse(frame: str) -> bool:
    return ("synapse/" in frame and GUARD not in frame) or "twisted/" in frame


def _path(
    kind: str,
    n: int,
    files: list[str],
    images: list[str],
    rooms: list[str],
    person: str,
) -> str:
    if kind == "whoami":
        return "/_matrix/client/v3/account/whoami"
    if kind == "join":
        return f"/_matrix/client/v3/join/{quote(rooms[n % len(rooms)])}"
    if kind == "profile":
        return f"/_matrix/client/v3/profile/{quote(person)}"
    mxc = (images if kind == "thumbnail" else files)[n % 10]
    server_name, media_id = mxc.removeprefix("mxc://").split("/")
    if kind == "thumbnail":
        return (
            f"/_matrix/client/v1/media/thumbnail/{server_name}/{media_id}"
            "?width=32&height=32&method=scale"
        )
    return f"/_matrix/client/v1/media/download/{server_name}/{media_id}"


def main(seconds: float, databases: list[str]) -> int:
    print(
        f"The guard's share of a guarded Synapse's GIL time ({seconds:.0f} s of"
        f" load per kind, py-spy at {RATE} Hz on the thread holding the GIL), with its"
        " 95% interval; 1 - share is the capacity ratio of a process its GIL bounds"
    )
    for database in databases:
        for kind in KINDS:
            result = profile(kind, seconds, database)
            share, half = result["share"], result["ci"]
            low, high = 1 - share - half, 1 - share + half
            verdict = "met" if low >= TARGET else "missed" if high < TARGET else "?"
            print(
                f"  {database:<9}{kind:<10} {100 * share:5.2f}% ± {100 * half:.2f}"
                f"  capacity ratio {1 - share:.3f} [{low:.3f}, {high:.3f}]"
                f" (≥ {TARGET}: {verdict})"
                f"  ({result['guard_samples']} of {result['samples']} samples,"
                f" {result['requests']} requests)",
                flush=True,
            )
    return 0
