"""The guard's tables as a national homeserver holds them: how its costs grow.

`scripts/bench --scale` seeds the guard's tables of a real Synapse directly in SQL, at
each size: so many accounts, `--lines` window buckets of counted downloads each within
the last day (at most 180: 60 in each of the 1m, 1h and 1d windows, the most a pruned
table holds for a control of three windows) plus 1% older ones for pruning to
remove, a block per 20 accounts (a quarter of them in force), and an audit event per
10 accounts over three months (a tenth past the retention). Then it starts Synapse on
them and measures, from outside and from the guard's own histogram
(`synapse_tchap_guard_hook_seconds`): the start-up (until the guard has loaded its
blocks), the block reload (every second, and the full one at start-up), the first
pruning, a cold account's first counted download (its rows loaded from the
database), a warm account's download, and the process's memory.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.bench.common import SERVER_CPUS, UNLIMITED_GUARD, rss_mb
from harness.homeserver import POSTGRES, Homeserver, postgres_available, wait_until
from harness.stats import histogram_quantile

DAY_MS = 86_400_000
PROBES = 30  # real accounts whose requests are measured, seeded like the others
WARM_REQUESTS = 20  # per probe
RELOADS = 5  # block reloads measured at least (one a second), after pruning


_SPANS = (60_000, 3_600_000, DAY_MS)  # media_downloads' windows in the example
MAX_LINES = 60 * len(_SPANS)  # a window keeps 60 buckets (see `windows`)
_COUNT_COLUMNS = (
    "user_id, session, control, span_ms, bucket_ts, node, served, bytes,"
    " attempts, refusals"
)


def _span(n: str, accounts: int) -> str:
    """The window of the `n`th row: its account's first 60 in the first window..."""
    k = f"(({n} - 1) / {accounts})"
    return (
        f"CASE WHEN {k} / 60 = 0 THEN {_SPANS[0]} WHEN {k} / 60 = 1 THEN {_SPANS[1]}"
        f" ELSE {_SPANS[2]} END"
    )


def _bucket(n: str, accounts: int, now: int) -> str:
    """...and its bucket, the `k % 60`th back from now (1% older than every window)."""
    k = f"(({n} - 1) / {accounts})"
    width = f"({_span(n, accounts)} / 60)"
    old = f"(CASE WHEN {n} % 100 = 0 THEN {DAY_MS + 3_600_000} ELSE 0 END)"
    return f"(({now} / {width}) - ({k} % 60)) * {width} - {old}"


def seed_statements(accounts: int, lines: int, now: int) -> list[tuple[str, int]]:
    """Bulk inserts of the seeded rows, each over the rows `n` of a table `series`
    counting from 1 to the number given with it."""
    user = f"'@seed' || (n % {accounts}) || ':localhost'"
    return [
        # Counted downloads within the day: `lines` window buckets an account (60
        # a window, in the 1m, 1h and 1d windows), and 1% older than the longest.
        (
            f"INSERT INTO tchap_guard_counts ({_COUNT_COLUMNS})"
            f" SELECT {user}, '', 'media_downloads', {_span('n', accounts)},"
            f" {_bucket('n', accounts, now)}, 'main', 1, 4096, 1, 0 FROM series",
            accounts * lines,
        ),
        (
            "INSERT INTO tchap_guard_accounts (user_id, last_attempt_ts)"
            f" SELECT '@seed' || (n - 1) || ':localhost', {now - 60_000} FROM series",
            accounts,
        ),
        # A block per 20 accounts: a quarter in force, the rest ended.
        (
            "INSERT INTO tchap_guard_blocks (user_id, control, reason, blocked_by,"
            " since_ts, until_ts, ended_ts, ended_by)"
            " SELECT '@seed' || (n * 20) || ':localhost', 'media_downloads', 'seeded',"
            f" 'tchap_guard', {now - 3_600_000}, {now + DAY_MS},"
            f" CASE WHEN n % 4 = 0 THEN NULL ELSE {now - 60_000} END,"
            " CASE WHEN n % 4 = 0 THEN NULL ELSE 'expiry' END FROM series",
            accounts // 20,
        ),
        # Audit events over a hundred days, a tenth past the 90-day retention.
        (
            "INSERT INTO tchap_guard_events (ts, user_id, action, document)"
            f" SELECT {now} - ((n * 104729) % {DAY_MS * 100}),"
            " '@seed' || n || ':localhost', 'deny', '{\"seeded\": true}' FROM series",
            accounts // 10,
        ),
    ]


def seed(server: Homeserver, accounts: int, lines: int, probes: list[str]) -> float:
    """Seed the tables (Synapse stopped); returns the seconds it took."""
    started = time.monotonic()
    now = int(time.time() * 1000)
    statements = seed_statements(accounts, lines, now)
    probe_rows = [row for probe in probes for row in _probe_rows(probe, lines, now)]
    insert_probe = (
        f"INSERT INTO tchap_guard_counts ({_COUNT_COLUMNS}) VALUES"
        " (?, '', 'media_downloads', ?, ?, 'main', 1, 4096, 1, 0)"
    )
    if server.database == "postgres":
        import psycopg2

        connection = psycopg2.connect(dbname=server.postgres_name, **POSTGRES)
        with connection, connection.cursor() as cursor:
            for statement, count in statements:
                cursor.execute(
                    statement.replace(
                        "FROM series",
                        f"FROM generate_series(1::bigint, {count}) series(n)",
                    )
                )
            cursor.executemany(insert_probe.replace("?", "%s"), probe_rows)
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
        connection.close()
    else:
        connection = sqlite3.connect(server.workdir / "homeserver.db")
        with connection:
            for statement, count in statements:
                connection.execute(
                    "WITH RECURSIVE series(n) AS (SELECT 1 UNION ALL SELECT n + 1"
                    f" FROM series WHERE n < {count}) {statement}"
                )
            connection.executemany(insert_probe, probe_rows)
        connection.execute("ANALYZE")
        connection.close()
    return time.monotonic() - started


def _probe_rows(probe: str, lines: int, now: int) -> list[tuple[Any, ...]]:
    rows = []
    for k in range(lines):
        width = _SPANS[k // 60] // 60
        rows.append((probe, _SPANS[k // 60], (now // width - k % 60) * width))
    return rows


def hook_buckets(server: Homeserver, hook: str) -> dict[float, float]:
    prefix = 'synapse_tchap_guard_hook_seconds_bucket{hook="' + hook + '",le="'
    return {
        float(key[len(prefix) :].split('"')[0]): value
        for key, value in server.metrics().items()
        if key.startswith(prefix)
    }


def hook_total(server: Homeserver, hook: str) -> tuple[float, float]:
    """(seconds, count) observed so far for a hook."""
    metrics = server.metrics()
    labels = f'{{hook="{hook}",server_name="localhost"}}'
    return (
        metrics.get(f"synapse_tchap_guard_hook_seconds_sum{labels}", 0.0),
        metrics.get(f"synapse_tchap_guard_hook_seconds_count{labels}", 0.0),
    )


def quantile_us(
    before: dict[float, float], after: dict[float, float], q: float
) -> float:
    delta = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    return histogram_quantile(delta, q) * 1e6


def measure(database: str, accounts: int, lines: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="tchap-guard-scale-"))
    server = Homeserver(
        workdir,
        database=database,
        guard=UNLIMITED_GUARD,
        metrics=True,
        cpus=SERVER_CPUS,
    )
    try:
        server.start()
        owner = server.register()
        media = [owner.upload(os.urandom(4096)) for _ in range(10)]
        probes = [server.register() for _ in range(PROBES)]
        server.stop()
        seeded_s = seed(server, accounts, lines, [p.user_id for p in probes])

        before_start = len(server.output())
        started = time.monotonic()
        server.start(timeout=600)
        startup_s = time.monotonic() - started
        rss_start = rss_mb(_pid(server))
        # Pruning runs at start-up: its first pass removes the old rows.
        assert wait_until(
            lambda: "tchap_guard pruned" in server.output()[before_start:], timeout=900
        )
        prune_s, prune_batches = hook_total(server, "db:prune")
        # The block reload every second, once pruning is over (meanwhile, it waits
        # behind it); the full one, at start-up.
        reload_before = hook_total(server, "db:blocks_changed")
        full_sum, full_count = hook_total(server, "db:blocks_in_force")

        cold_before = hook_buckets(server, "request")
        load_before = hook_buckets(server, "db:load_counts")
        for probe, mxc in zip(probes, media * PROBES, strict=False):
            assert probe.download(mxc).status_code == 200
        cold_after = hook_buckets(server, "request")
        load_after = hook_buckets(server, "db:load_counts")
        for _ in range(WARM_REQUESTS):
            for probe, mxc in zip(probes, media * PROBES, strict=False):
                assert probe.download(mxc).status_code == 200
        warm_after = hook_buckets(server, "request")
        assert wait_until(
            lambda: (
                hook_total(server, "db:blocks_changed")[1] >= reload_before[1] + RELOADS
            )
        )
        reload_sum, reload_count = (
            after - before
            for after, before in zip(
                hook_total(server, "db:blocks_changed"), reload_before, strict=True
            )
        )
        rows = server.sql("SELECT COUNT(*) FROM tchap_guard_counts")[0][0]
        return {
            "accounts": accounts,
            "lines": int(rows),
            "seeded_s": round(seeded_s, 1),
            "startup_s": round(startup_s, 1),
            "rss_start_mb": round(rss_start),
            "rss_mb": round(rss_mb(_pid(server))),
            "block_reload_ms": round(reload_sum / max(reload_count, 1) * 1e3, 2),
            "full_reload_ms": round(full_sum / max(full_count, 1) * 1e3, 2),
            "prune_s": round(prune_s, 2),
            "prune_batches": int(prune_batches),
            "cold_p50_us": round(quantile_us(cold_before, cold_after, 0.5)),
            "cold_load_p50_us": round(quantile_us(load_before, load_after, 0.5)),
            "warm_p50_us": round(quantile_us(cold_after, warm_after, 0.5)),
            "warm_p99_us": round(quantile_us(cold_after, warm_after, 0.99)),
        }
    finally:
        server.destroy()


def _pid(server: Homeserver) -> int:
    assert server.process is not None
    return server.process.pid


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench scale")
    parser.add_argument("--sizes", default="1000,10000,100000", help="accounts")
    parser.add_argument(
        "--lines", type=int, default=MAX_LINES, help="buckets per account"
    )
    parser.add_argument("--databases", default="postgres,sqlite")
    args = parser.parse_args(argv)
    if not 1 <= args.lines <= MAX_LINES:
        parser.error(f"--lines: from 1 to {MAX_LINES} (60 buckets in each window)")
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {1})
    columns = (
        "accounts",
        "lines",
        "seeded_s",
        "startup_s",
        "rss_start_mb",
        "rss_mb",
        "block_reload_ms",
        "full_reload_ms",
        "prune_s",
        "prune_batches",
        "cold_p50_us",
        "cold_load_p50_us",
        "warm_p50_us",
        "warm_p99_us",
    )
    for database in args.databases.split(","):
        if database == "postgres" and not postgres_available():
            print("postgres: skipped, no PostgreSQL on 127.0.0.1:5432")
            continue
        print(f"\n{database}")
        print(" ".join(f"{c:>14}" for c in columns), flush=True)
        results = []
        for size in (int(s) for s in args.sizes.split(",")):
            result = measure(database, size, args.lines)
            results.append(result)
            print(" ".join(f"{result[c]:>14}" for c in columns), flush=True)
        if len(results) > 1:
            first, last = results[0], results[-1]
            growth = last["accounts"] / first["accounts"]
            print(
                f"from {first['accounts']} to {last['accounts']} accounts (x{growth:.0f}):"
            )
            for c in (
                "startup_s",
                "rss_mb",
                "block_reload_ms",
                "cold_p50_us",
                "warm_p99_us",
            ):
                if first[c]:
                    print(f"  {c:<16} x{last[c] / first[c]:.2f}")
    return 0
