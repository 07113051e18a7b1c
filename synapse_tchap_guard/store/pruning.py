"""Deleting what no rule and no retention period needs any more, in small batches."""

from __future__ import annotations

from synapse.module_api import LoggingTransaction

from synapse_tchap_guard.store.database import Database

BATCH = 5000

# (table, key, condition); every `?` of a condition takes the same cut-off.
_COUNTS = ("tchap_guard_counts", "id", "bucket_ts < ?")
_TARGETS = ("tchap_guard_targets", "id", "ts < ?")
_EVENTS = ("tchap_guard_events", "id", "ts < ?")
_ENDED_BLOCKS = ("tchap_guard_blocks", "id", "ended_ts IS NOT NULL AND ended_ts < ?")
_NOTICES = ("tchap_guard_notices", "id", "ts < ?")
_CODES = ("tchap_guard_step_up_codes", "id", "sent_ts < ?")
_IDLE_ACCOUNTS = (
    "tchap_guard_accounts",
    "user_id",
    "last_attempt_ts < ? AND counters_reset_ts < ? AND escalation_reset_ts < ?"
    " AND step_up_until_ts < ?",
)


async def prune(
    database: Database, counts_before: int, history_before: int, codes_before: int
) -> int:
    """Delete counts older than `counts_before` (and the accounts left without any),
    audit events, ended blocks and notices older than `history_before`, step-up codes
    sent before `codes_before`. Returns how many rows."""
    removed = 0
    for (table, key, condition), before in (
        (_COUNTS, counts_before),
        (_TARGETS, counts_before),
        (_EVENTS, history_before),
        (_ENDED_BLOCKS, history_before),
        (_NOTICES, history_before),
        (_CODES, codes_before),
        (_IDLE_ACCOUNTS, counts_before),
    ):
        arguments = (before,) * condition.count("?")
        while True:
            count = await database.run(
                "prune", _prune_batch_txn, table, key, condition, arguments
            )
            removed += count
            if count < BATCH:
                break
    return removed


def _prune_batch_txn(
    txn: LoggingTransaction,
    table: str,
    key: str,
    condition: str,
    arguments: tuple[int, ...],
) -> int:
    txn.execute(
        f"DELETE FROM {table} WHERE {key} IN"
        f" (SELECT {key} FROM {table} WHERE {condition} LIMIT {BATCH})",
        arguments,
    )
    return int(txn.rowcount)
