"""Old rows are pruned in the background: the tables stay bounded."""

from __future__ import annotations

import time

from harness.homeserver import ADMIN_API, Homeserver, wait_until

DAY_MS = 86_400_000
GUARD = {
    "public_room_joins": {
        "limits": [{"window": "1h", "max": 10}],
        "block_at": {"window": "1d", "max": 250},  # above the 240 a day 10/1h serve
    },
    "retention": "7d",
}


def count(server: Homeserver, table: str, user_id: str) -> int:
    (row,) = server.sql(f"SELECT COUNT(*) FROM {table} WHERE user_id = ?", (user_id,))
    return int(row[0])


def test_rows_past_every_window_and_the_retention_are_pruned(
    server: Homeserver,
) -> None:
    owner, admin = server.register(), server.register(admin=True)
    fresh, stale = server.register(), server.register()
    assert fresh.join(owner.create_room()).status_code == 200
    assert admin.post(f"{ADMIN_API}/accounts/{fresh.user_id}/block", {"reason": "r"}).ok
    assert admin.post(
        f"{ADMIN_API}/accounts/{fresh.user_id}/unblock", {"reason": "r"}
    ).ok

    now = int(time.time() * 1000)
    past_windows, past_retention = now - 2 * DAY_MS, now - 8 * DAY_MS
    server.sql(
        "INSERT INTO tchap_guard_counts (user_id, session, control, span_ms,"
        " bucket_ts, node, served) VALUES (?, '', ?, ?, ?, 'main', 1)",
        (stale.user_id, "public_room_joins", DAY_MS, past_windows),
    )
    server.sql(
        "INSERT INTO tchap_guard_targets (user_id, session, control, target, ts)"
        " VALUES (?, '', ?, ?, ?)",
        (stale.user_id, "public_room_joins", "!old:localhost", past_windows),
    )
    server.sql(
        "INSERT INTO tchap_guard_accounts (user_id, last_attempt_ts) VALUES (?, ?)",
        (stale.user_id, past_windows),
    )
    server.sql(
        "INSERT INTO tchap_guard_events (ts, user_id, action, document) VALUES (?, ?, ?, ?)",
        (past_retention, stale.user_id, "deny", "{}"),
    )
    server.sql(
        "INSERT INTO tchap_guard_blocks (user_id, control, reason, blocked_by, since_ts,"
        " until_ts, ended_ts, ended_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            stale.user_id,
            "admin",
            "old",
            "@a:localhost",
            past_retention,
            None,
            past_retention,
            "@a:localhost",
        ),
    )
    # Rows past the windows but within the retention stay: the audit trail keeps them.
    server.sql(
        "INSERT INTO tchap_guard_events (ts, user_id, action, document) VALUES (?, ?, ?, ?)",
        (past_windows, stale.user_id, "deny", "{}"),
    )

    server.restart()  # pruning runs at start-up, then every ten minutes

    tables = (
        "tchap_guard_counts",
        "tchap_guard_targets",
        "tchap_guard_accounts",
        "tchap_guard_blocks",
    )
    wait_until(
        lambda: all(count(server, table, stale.user_id) == 0 for table in tables)
    )
    assert count(server, "tchap_guard_events", stale.user_id) == 1
    for table in (*tables, "tchap_guard_events"):
        assert count(server, table, fresh.user_id) >= 1, table
