"""The guard's tables, created and upgraded in Synapse's database.

Tables (all prefixed `tchap_guard_`):
- `accounts`: the marks that change how an account is counted (resets, step-ups,
  blocks), and the row that decisions taken in the database about one account (a
  block, a notice's or a code's rate limit) write first, which serialises them
  across processes (`last_attempt_ts`: when one last did). An account whose marks
  are all older than every window is counted as one without a row, so the row is
  pruned then.
- `counts`: what each account (and session) counted, a row per window bucket and
  Synapse process, summed as it is written (`counting.journal`).
- `targets`: the rooms and people each was served (once per window).
- `blocks`: blocks in force and their history.
- `events`: the audit trail, as the ECS documents sent to the SIEM.
- `step_up_codes`: the one-time codes mailed for step-ups (hashed), their tries.
- `notices`: what the owners of accounts were told, or are about to be (the outbox
  the main process delivers), which also bounds how often they are told.
- `schema_versions`: the migrations applied.
"""

from __future__ import annotations

from synapse.module_api import LoggingTransaction

from synapse_tchap_guard import _synapse_internals as internals
from synapse_tchap_guard.store.database import Database
from synapse_tchap_guard.store.statements import one

# Serialises schema changes when several processes start at once (PostgreSQL; a
# SQLite database has one Synapse process).
SCHEMA_LOCK_KEY = 0x7463_6770  # "tcgp"

MIGRATIONS: list[list[str]] = [
    # 1: accounts, attempts, blocks, audit events.
    [
        """CREATE TABLE IF NOT EXISTS tchap_guard_accounts (
            user_id TEXT NOT NULL PRIMARY KEY,
            counters_reset_ts BIGINT NOT NULL DEFAULT 0,
            escalation_reset_ts BIGINT NOT NULL DEFAULT 0,
            marks_changed_ts BIGINT NOT NULL DEFAULT 0,
            step_up_ts BIGINT NOT NULL DEFAULT 0,
            step_up_until_ts BIGINT NOT NULL DEFAULT 0,
            last_attempt_ts BIGINT NOT NULL DEFAULT 0
        )""",
        """CREATE INDEX IF NOT EXISTS tchap_guard_accounts_by_marks_change
            ON tchap_guard_accounts (marks_changed_ts)""",
        """CREATE TABLE IF NOT EXISTS tchap_guard_attempts (
            id {serial},
            user_id TEXT NOT NULL,
            control TEXT NOT NULL,
            ts BIGINT NOT NULL,
            decision TEXT NOT NULL,
            bytes BIGINT NOT NULL DEFAULT 0,
            target TEXT,
            node TEXT NOT NULL DEFAULT ''
        )""",
        """CREATE INDEX IF NOT EXISTS tchap_guard_attempts_by_account
            ON tchap_guard_attempts (user_id, control, ts)""",
        """CREATE INDEX IF NOT EXISTS tchap_guard_attempts_by_ts
            ON tchap_guard_attempts (ts)""",
        """CREATE TABLE IF NOT EXISTS tchap_guard_blocks (
            id {serial},
            user_id TEXT NOT NULL,
            control TEXT NOT NULL,
            reason TEXT NOT NULL,
            blocked_by TEXT NOT NULL,
            since_ts BIGINT NOT NULL,
            until_ts BIGINT,
            ended_ts BIGINT,
            ended_by TEXT,
            end_reason TEXT
        )""",
        """CREATE INDEX IF NOT EXISTS tchap_guard_blocks_open
            ON tchap_guard_blocks (user_id) WHERE ended_ts IS NULL""",
        """CREATE INDEX IF NOT EXISTS tchap_guard_blocks_by_account
            ON tchap_guard_blocks (user_id, id)""",
        """CREATE TABLE IF NOT EXISTS tchap_guard_events (
            id {serial},
            ts BIGINT NOT NULL,
            user_id TEXT,
            action TEXT NOT NULL,
            document TEXT NOT NULL
        )""",
        """CREATE INDEX IF NOT EXISTS tchap_guard_events_by_account
            ON tchap_guard_events (user_id, id)""",
        """CREATE INDEX IF NOT EXISTS tchap_guard_events_by_ts
            ON tchap_guard_events (ts)""",
    ],
    # 2: lines that amend a request (its bytes, its failure after it was allowed) and
    # requests that weigh more than one unit. Applied once, under the lock above.
    [
        "ALTER TABLE tchap_guard_attempts ADD COLUMN attempts INTEGER NOT NULL DEFAULT 1",
        "ALTER TABLE tchap_guard_attempts ADD COLUMN served BIGINT NOT NULL DEFAULT 0",
        "UPDATE tchap_guard_attempts SET served = 1 WHERE decision = 'allow'",
    ],
    # 3: step-up codes sent by email, and notices to the owners of accounts.
    [
        """CREATE TABLE IF NOT EXISTS tchap_guard_step_up_codes (
            id {serial},
            user_id TEXT NOT NULL,
            session_id TEXT NOT NULL,
            code_hash TEXT NOT NULL,
            sent_ts BIGINT NOT NULL,
            expires_ts BIGINT NOT NULL,
            tries INTEGER NOT NULL DEFAULT 0,
            used_ts BIGINT
        )""",
        """CREATE INDEX IF NOT EXISTS tchap_guard_step_up_codes_by_session
            ON tchap_guard_step_up_codes (user_id, session_id, id)""",
        """CREATE INDEX IF NOT EXISTS tchap_guard_step_up_codes_by_sent
            ON tchap_guard_step_up_codes (user_id, sent_ts)""",
        """CREATE TABLE IF NOT EXISTS tchap_guard_notices (
            id {serial},
            user_id TEXT NOT NULL,
            ts BIGINT NOT NULL,
            about TEXT NOT NULL,
            channel TEXT NOT NULL,
            content TEXT NOT NULL,
            state TEXT NOT NULL,
            done_ts BIGINT,
            node TEXT NOT NULL
        )""",
        """CREATE INDEX IF NOT EXISTS tchap_guard_notices_by_account
            ON tchap_guard_notices (user_id, channel, ts)""",
        """CREATE INDEX IF NOT EXISTS tchap_guard_notices_pending
            ON tchap_guard_notices (id) WHERE state = 'pending'""",
        """CREATE INDEX IF NOT EXISTS tchap_guard_notices_by_ts
            ON tchap_guard_notices (ts)""",
    ],
    # 4: the blocks opened or ended lately, read every second (`BlockStore.changed`).
    [
        """CREATE INDEX IF NOT EXISTS tchap_guard_blocks_by_start
            ON tchap_guard_blocks (since_ts)""",
        """CREATE INDEX IF NOT EXISTS tchap_guard_blocks_by_end
            ON tchap_guard_blocks (ended_ts)""",
    ],
    # 5: counts as aggregates (a row per window bucket) instead of a line per
    # request. The lines of the last day carry over: as buckets of a minute in
    # hour-long windows (every window reads them, at that precision, until they
    # leave it), and the rooms and people served as targets.
    [
        """CREATE TABLE IF NOT EXISTS tchap_guard_counts (
            id {serial},
            user_id TEXT NOT NULL,
            session TEXT NOT NULL,
            control TEXT NOT NULL,
            span_ms BIGINT NOT NULL,
            bucket_ts BIGINT NOT NULL,
            node TEXT NOT NULL,
            served BIGINT NOT NULL DEFAULT 0,
            bytes BIGINT NOT NULL DEFAULT 0,
            attempts BIGINT NOT NULL DEFAULT 0,
            refusals BIGINT NOT NULL DEFAULT 0
        )""",
        """CREATE UNIQUE INDEX IF NOT EXISTS tchap_guard_counts_key
            ON tchap_guard_counts (user_id, session, control, span_ms, bucket_ts, node)""",
        """CREATE INDEX IF NOT EXISTS tchap_guard_counts_by_bucket
            ON tchap_guard_counts (bucket_ts)""",
        """CREATE TABLE IF NOT EXISTS tchap_guard_targets (
            id {serial},
            user_id TEXT NOT NULL,
            session TEXT NOT NULL,
            control TEXT NOT NULL,
            target TEXT NOT NULL,
            ts BIGINT NOT NULL
        )""",
        """CREATE UNIQUE INDEX IF NOT EXISTS tchap_guard_targets_key
            ON tchap_guard_targets (user_id, session, control, target)""",
        """CREATE INDEX IF NOT EXISTS tchap_guard_targets_by_ts
            ON tchap_guard_targets (ts)""",
        """INSERT INTO tchap_guard_counts (user_id, session, control, span_ms,
            bucket_ts, node, served, bytes, attempts, refusals)
            SELECT user_id, '', control, 3600000, (ts / 60000) * 60000, 'upgrade',
                SUM(served), SUM(bytes), SUM(attempts),
                SUM(CASE WHEN decision <> 'allow' AND attempts > 0 THEN 1 ELSE 0 END)
            FROM tchap_guard_attempts
            GROUP BY user_id, control, (ts / 60000) * 60000""",
        """INSERT INTO tchap_guard_targets (user_id, session, control, target, ts)
            SELECT user_id, '', control, target, MAX(ts)
            FROM tchap_guard_attempts
            WHERE target IS NOT NULL AND control IN ('public_room_joins', 'directory')
            GROUP BY user_id, control, target HAVING SUM(served) > 0""",
        "DROP TABLE tchap_guard_attempts",
    ],
    # 6: the ended blocks, the last ended first, a page at a time (`BlockStore.past`):
    # a block's end is when it was lifted or, not lifted, when its time was up.
    [
        """CREATE INDEX IF NOT EXISTS tchap_guard_blocks_by_end_time
            ON tchap_guard_blocks ((COALESCE(ended_ts, until_ts)), id)""",
    ],
]


async def prepare(database: Database) -> int:
    """Create or upgrade the tables; safe when several processes start together.
    Returns the schema version now in place."""
    return await database.migrate("prepare", _prepare_txn)


def _prepare_txn(txn: LoggingTransaction) -> int:
    postgres = internals.is_postgres(txn)
    if postgres:
        txn.execute("SELECT pg_advisory_xact_lock(?)", (SCHEMA_LOCK_KEY,))
    serial = "BIGSERIAL PRIMARY KEY" if postgres else "INTEGER PRIMARY KEY"
    txn.execute(
        "CREATE TABLE IF NOT EXISTS tchap_guard_schema_versions"
        " (version INTEGER NOT NULL PRIMARY KEY)"
    )
    txn.execute("SELECT COALESCE(MAX(version), 0) FROM tchap_guard_schema_versions")
    current = int(one(txn)[0])
    for version, statements in enumerate(MIGRATIONS, start=1):
        if version <= current:
            continue
        for statement in statements:
            txn.execute(statement.format(serial=serial))
        txn.execute(
            "INSERT INTO tchap_guard_schema_versions (version) VALUES (?)"
            " ON CONFLICT (version) DO NOTHING",
            (version,),
        )
    return len(MIGRATIONS)
