"""What every benchmark shares: the guard's config that refuses nothing, the cores
the servers and the client run on, a minimal HTTP client and the process readings."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

BIG = 10**9
# High enough that nothing is refused, so all servers do the same work (no block
# threshold: one above limits this high could never be reached, and the config
# refuses it). The windows are the example's: a day's counts are kept.
UNLIMITED_GUARD: dict[str, Any] = {
    "public_room_joins": {
        "limits": [{"window": "1h", "max": BIG}, {"window": "1d", "max": BIG}],
        "block_at": None,
    },
    "media_downloads": {
        "limits": [
            {"window": "1m", "max": BIG},
            {"window": "1h", "max": BIG, "max_bytes": "1T"},
            {"window": "1d", "max": BIG, "max_bytes": "1T"},
        ],
        "block_at": None,
    },
    "small_thumbnails": {
        "max_size": 400,
        "limits": [{"window": "1m", "max": BIG}, {"window": "1d", "max": BIG}],
        "block_at": None,
    },
    "directory": {
        "free": {"window": "1d", "max_profiles": BIG},
        "after_step_up": {"window": "1d", "max_profiles": BIG},
        "block_at": None,
    },
}

# Synapse serves from one thread (the GIL): the servers share a core, the client has
# the other; neither steals the other's time.
SERVER_CPUS = {0}
CLIENT_CPUS = {1}

Request = tuple[str, str, str]  # method, path, token


class Client:
    """Just enough HTTP/1.1 over one keep-alive connection to measure a server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, method: str, path: str, token: str) -> int:
        body = b"{}" if method == "POST" else b""
        self.writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n"
            f"Authorization: Bearer {token}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
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
    port: int, requests: list[Request], concurrency: int
) -> tuple[float, list[float], dict[int, int]]:
    """Send the requests over `concurrency` connections: seconds taken, each
    request's latency, status counts."""
    queue = iter(requests)
    statuses: dict[int, int] = {}
    latencies: list[float] = []

    async def one_connection() -> None:
        client = await Client.connect(port)
        try:
            for method, path, token in queue:
                started = time.perf_counter()
                status = await client.send(method, path, token)
                latencies.append(time.perf_counter() - started)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            client.close()

    started = time.perf_counter()
    await asyncio.gather(*(one_connection() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies, statuses


def cpu_ns(pid: int) -> int:
    """CPU time of a process, every thread, in nanoseconds (the scheduler's own
    accounting: far finer than /proc's clock ticks)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
    return total


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0
