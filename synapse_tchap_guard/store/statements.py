"""The statements several stores run inside their own transactions: an account's
marks and row, and the audit events written with what they report."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from synapse.module_api import LoggingTransaction

from synapse_tchap_guard.audit import AuditEvent
from synapse_tchap_guard.policy import AccountMarks

MARKS = "counters_reset_ts, escalation_reset_ts, step_up_ts, step_up_until_ts"


def touch_account_txn(txn: LoggingTransaction, user_id: str, now: int) -> AccountMarks:
    """Write the account's row, so that decisions about it taken in the database
    (opening a block, rate-limiting notices and codes) serialise."""
    txn.execute(
        "INSERT INTO tchap_guard_accounts (user_id, last_attempt_ts) VALUES (?, ?)"
        " ON CONFLICT (user_id) DO UPDATE SET last_attempt_ts = excluded.last_attempt_ts"
        f" RETURNING {MARKS}",
        (user_id, now),
    )
    return AccountMarks(*map(int, one(txn)))


def restart_escalation_txn(txn: LoggingTransaction, user_id: str, now: int) -> None:
    txn.execute(
        "UPDATE tchap_guard_accounts"
        " SET escalation_reset_ts = ?, marks_changed_ts = ? WHERE user_id = ?",
        (now, now, user_id),
    )


def marks_txn(txn: LoggingTransaction, user_id: str) -> AccountMarks:
    txn.execute(
        f"SELECT {MARKS} FROM tchap_guard_accounts WHERE user_id = ?", (user_id,)
    )
    row = txn.fetchone()
    return AccountMarks(*map(int, row)) if row else AccountMarks()


def insert_events_txn(
    txn: LoggingTransaction, node: str, events: Sequence[AuditEvent]
) -> None:
    txn.execute_batch(
        "INSERT INTO tchap_guard_events (ts, user_id, action, document) VALUES (?, ?, ?, ?)",
        [
            (
                event.ts,
                event.user_id,
                event.action,
                json.dumps(event.to_ecs(node), default=str),
            )
            for event in events
        ],
    )


def one(txn: LoggingTransaction) -> tuple[Any, ...]:
    """The row a statement is certain to return (an aggregate, a RETURNING clause)."""
    row = txn.fetchone()
    assert row is not None
    return tuple(row)
