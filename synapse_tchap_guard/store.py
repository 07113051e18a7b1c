"""Everything the guard keeps, in Synapse's own database: schema and every SQL statement.

Tables (all prefixed `tchap_guard_`):
- `accounts`: one row per account the guard has counted; the row every judgement of
  that account writes first, which serialises them across processes.
- `attempts`: one row per counted action (a join, a download...) and its decision.
- `blocks`: blocks in force and their history.
- `events`: the audit trail, as the ECS documents sent to the SIEM.

Transaction functions may run several times (Synapse retries on serialisation
failures), so they only read and write the database; logging happens after commit.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import attr
from synapse.module_api import LoggingTransaction, ModuleApi

from synapse_tchap_guard import _synapse_internals as internals
from synapse_tchap_guard.audit import AuditEvent
from synapse_tchap_guard.policy import AccountMarks, Attempt, Decision, Verdict

# Serialises schema changes when several processes start at once (PostgreSQL).
SCHEMA_LOCK_KEY = 0x7463_6770  # "tcgp"

_MIGRATIONS: list[list[str]] = [
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
]

_BLOCK_COLUMNS = (
    "id, user_id, control, reason, blocked_by, since_ts, until_ts,"
    " ended_ts, ended_by, end_reason"
)
_ACTIVE = "ended_ts IS NULL AND (until_ts IS NULL OR until_ts > ?)"
_PRUNE_BATCH = 5000


@attr.frozen
class Block:
    id: int
    user_id: str
    control: str
    reason: str
    blocked_by: str
    since_ts: int
    until_ts: int | None
    ended_ts: int | None = None
    ended_by: str | None = None
    end_reason: str | None = None

    def in_force(self, now: int) -> bool:
        return self.ended_ts is None and (self.until_ts is None or self.until_ts > now)


@attr.frozen
class NewBlock:
    control: str
    reason: str
    blocked_by: str
    until_ts: int | None


Describe = Callable[["Block | None"], Sequence[AuditEvent]]


@attr.frozen
class Ruling:
    """What a gate decided about one attempt: what to record, what block to open,
    and how to report it (given the block once opened)."""

    decision: Decision
    verdict: Verdict
    block: NewBlock | None = None
    describe: Describe = lambda block: ()


@attr.frozen
class Judgement:
    """The result of judging an attempt. `already_blocked` means nothing was counted."""

    ruling: Ruling | None = None
    attempt_id: int | None = None
    block: Block | None = None
    already_blocked: bool = False
    events: tuple[AuditEvent, ...] = ()


@attr.frozen
class StoredAttempt:
    id: int
    control: str
    ts: int
    decision: str
    bytes: int
    target: str | None


class AttemptRecord(NamedTuple):
    """An attempt counted in memory, on its way to the database (see live_counts)."""

    user_id: str
    control: str
    ts: int
    decision: str
    target: str | None
    bytes: int


Decide = Callable[[list[Attempt], AccountMarks], Ruling]


class AlreadyBlocked(Exception):
    def __init__(self, block: Block) -> None:
        super().__init__(f"{block.user_id} is already blocked")
        self.block = block


class GuardStore:
    def __init__(self, api: ModuleApi, node: str) -> None:
        self._api = api
        self._node = node

    async def _run(self, desc: str, func: Callable[..., Any], *args: Any) -> Any:
        return await internals.run_interaction(
            self._api, f"tchap_guard_{desc}", func, *args
        )

    # --- schema ------------------------------------------------------------------

    async def prepare(self) -> int:
        """Create or upgrade the tables; safe when several processes start together."""
        return int(await self._run("prepare", self._prepare_txn))

    def _prepare_txn(self, txn: LoggingTransaction) -> int:
        postgres = internals.is_postgres(txn)
        if postgres:
            txn.execute("SELECT pg_advisory_xact_lock(?)", (SCHEMA_LOCK_KEY,))
        serial = "BIGSERIAL PRIMARY KEY" if postgres else "INTEGER PRIMARY KEY"
        txn.execute(
            "CREATE TABLE IF NOT EXISTS tchap_guard_schema_versions"
            " (version INTEGER NOT NULL PRIMARY KEY)"
        )
        txn.execute("SELECT COALESCE(MAX(version), 0) FROM tchap_guard_schema_versions")
        current = int(_one(txn)[0])
        for version, statements in enumerate(_MIGRATIONS, start=1):
            if version <= current:
                continue
            # Every statement is idempotent: a process racing this one may have run it.
            for statement in statements:
                txn.execute(statement.format(serial=serial))
            txn.execute(
                "INSERT INTO tchap_guard_schema_versions (version) VALUES (?)"
                " ON CONFLICT (version) DO NOTHING",
                (version,),
            )
        return len(_MIGRATIONS)

    # --- judging attempts -----------------------------------------------------

    async def judge(
        self,
        user_id: str,
        control: str,
        target: str | None,
        now: int,
        history_since: int,
        decide: Decide,
    ) -> Judgement:
        """Count one attempt atomically: read the account's history, decide, record."""
        result: Judgement = await self._run(
            "judge",
            self._judge_txn,
            user_id,
            control,
            target,
            now,
            history_since,
            decide,
        )
        return result

    def _judge_txn(
        self,
        txn: LoggingTransaction,
        user_id: str,
        control: str,
        target: str | None,
        now: int,
        history_since: int,
        decide: Decide,
    ) -> Judgement:
        marks = self._touch_account_txn(txn, user_id, now)
        block = self._block_in_force_txn(txn, user_id, now)
        if block is not None:
            return Judgement(block=block, already_blocked=True)
        since = max(history_since, marks.counters_reset_ts)
        txn.execute(
            "SELECT ts, decision, bytes FROM tchap_guard_attempts"
            " WHERE user_id = ? AND control = ? AND ts > ?",
            (user_id, control, since),
        )
        history = [
            Attempt(ts=ts, served=decision == Decision.ALLOW.value, bytes=size)
            for ts, decision, size in txn.fetchall()
        ]
        ruling = decide(history, marks)
        txn.execute(
            "INSERT INTO tchap_guard_attempts (user_id, control, ts, decision, target, node)"
            " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            (user_id, control, now, ruling.decision.value, target, self._node),
        )
        attempt_id = int(_one(txn)[0])
        if ruling.decision.escalates:
            txn.execute(
                "UPDATE tchap_guard_accounts"
                " SET escalation_reset_ts = ?, marks_changed_ts = ? WHERE user_id = ?",
                (now, now, user_id),
            )
        opened = None
        if ruling.block is not None:
            opened = self._open_block_txn(txn, user_id, ruling.block, now)
        events = tuple(ruling.describe(opened))
        self._insert_events_txn(txn, events)
        return Judgement(ruling, attempt_id, opened, events=events)

    def _touch_account_txn(
        self, txn: LoggingTransaction, user_id: str, now: int
    ) -> AccountMarks:
        """Write the account's row, so that concurrent judgements of it serialise."""
        txn.execute(
            "INSERT INTO tchap_guard_accounts (user_id, last_attempt_ts) VALUES (?, ?)"
            " ON CONFLICT (user_id) DO UPDATE SET last_attempt_ts = excluded.last_attempt_ts"
            " RETURNING counters_reset_ts, escalation_reset_ts, step_up_ts, step_up_until_ts",
            (user_id, now),
        )
        return AccountMarks(*map(int, _one(txn)))

    # --- attempts counted in memory (live_counts) --------------------------------

    async def load_history(
        self, user_id: str, control: str, since: int
    ) -> tuple[list[tuple[Attempt, str | None]], AccountMarks]:
        """The account's attempts after `since` (and its last reset), oldest first,
        each with its target, and the account's marks."""

        def txn_func(
            txn: LoggingTransaction,
        ) -> tuple[list[tuple[Attempt, str | None]], AccountMarks]:
            marks = self._account_marks_txn(txn, user_id)
            txn.execute(
                "SELECT ts, decision, bytes, target FROM tchap_guard_attempts"
                " WHERE user_id = ? AND control = ? AND ts > ? ORDER BY ts",
                (user_id, control, max(since, marks.counters_reset_ts)),
            )
            history = [
                (
                    Attempt(ts=ts, served=decision == Decision.ALLOW.value, bytes=size),
                    target,
                )
                for ts, decision, size, target in txn.fetchall()
            ]
            return history, marks

        result: tuple[list[tuple[Attempt, str | None]], AccountMarks] = await self._run(
            "load_history", txn_func
        )
        return result

    async def record_step_up(
        self, user_id: str, now: int, until: int, events: Sequence[AuditEvent]
    ) -> None:
        """The account re-authenticated: its larger budget holds until `until`."""

        def txn_func(txn: LoggingTransaction) -> None:
            self._touch_account_txn(txn, user_id, now)
            txn.execute(
                "UPDATE tchap_guard_accounts SET step_up_ts = ?, step_up_until_ts = ?,"
                " marks_changed_ts = ? WHERE user_id = ?",
                (now, until, now, user_id),
            )
            self._insert_events_txn(txn, events)

        await self._run("record_step_up", txn_func)

    async def write_attempts(
        self,
        finished: Sequence[AttemptRecord],
        unfinished: Sequence[AttemptRecord],
        late_bytes: Sequence[tuple[int, int]],
        events: Sequence[AuditEvent],
    ) -> list[int]:
        """Write a batch counted in memory: attempts whose response has finished (in
        one statement), attempts still being answered (one by one, returning their
        ids, for the bytes they send later), those later bytes, and the events."""

        def txn_func(txn: LoggingTransaction) -> list[int]:
            columns = "(user_id, control, ts, decision, target, bytes, node)"
            rows = [(*record, self._node) for record in finished]
            if internals.is_postgres(txn):  # one multi-row statement
                txn.execute_values(
                    f"INSERT INTO tchap_guard_attempts {columns} VALUES ?",
                    rows,
                    fetch=False,
                )
            else:
                txn.execute_batch(
                    f"INSERT INTO tchap_guard_attempts {columns} VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
            ids = []
            for record in unfinished:
                txn.execute(
                    f"INSERT INTO tchap_guard_attempts {columns}"
                    " VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    (*record, self._node),
                )
                ids.append(int(_one(txn)[0]))
            last_seen: dict[str, int] = {}
            for record in (*finished, *unfinished):
                last_seen[record.user_id] = max(
                    record.ts, last_seen.get(record.user_id, 0)
                )
            txn.execute_batch(
                "INSERT INTO tchap_guard_accounts (user_id, last_attempt_ts)"
                " VALUES (?, ?) ON CONFLICT (user_id) DO UPDATE"
                " SET last_attempt_ts = excluded.last_attempt_ts"
                " WHERE excluded.last_attempt_ts > tchap_guard_accounts.last_attempt_ts",
                sorted(last_seen.items()),  # always the same order: no deadlocks
            )
            txn.execute_batch(
                "UPDATE tchap_guard_attempts SET bytes = bytes + ? WHERE id = ?",
                [(size, attempt_id) for attempt_id, size in late_bytes],
            )
            self._insert_events_txn(txn, events)
            return ids

        result: list[int] = await self._run("write_attempts", txn_func)
        return result

    async def changed_accounts(self, control: str, since: int) -> set[str]:
        """Accounts with attempts counted by another process, or counters reset, since."""

        def txn_func(txn: LoggingTransaction) -> set[str]:
            txn.execute(
                "SELECT DISTINCT user_id FROM tchap_guard_attempts"
                " WHERE ts > ? AND control = ? AND node <> ?",
                (since, control, self._node),
            )
            changed = {user_id for (user_id,) in txn.fetchall()}
            txn.execute(
                "SELECT user_id FROM tchap_guard_accounts WHERE marks_changed_ts > ?",
                (since,),
            )
            return changed | {user_id for (user_id,) in txn.fetchall()}

        result: set[str] = await self._run("changed_accounts", txn_func)
        return result

    # --- blocks ------------------------------------------------------------------

    async def blocks_in_force(self, now: int) -> list[Block]:
        def txn_func(txn: LoggingTransaction) -> list[Block]:
            txn.execute(
                f"SELECT {_BLOCK_COLUMNS} FROM tchap_guard_blocks WHERE {_ACTIVE}",
                (now,),
            )
            return [Block(*row) for row in txn.fetchall()]

        result: list[Block] = await self._run("blocks_in_force", txn_func)
        return result

    async def block_in_force(self, user_id: str, now: int) -> Block | None:
        result: Block | None = await self._run(
            "block_in_force", self._block_in_force_txn, user_id, now
        )
        return result

    def _block_in_force_txn(
        self, txn: LoggingTransaction, user_id: str, now: int
    ) -> Block | None:
        txn.execute(
            f"SELECT {_BLOCK_COLUMNS} FROM tchap_guard_blocks"
            f" WHERE user_id = ? AND {_ACTIVE} ORDER BY id DESC LIMIT 1",
            (user_id, now),
        )
        row = txn.fetchone()
        return Block(*row) if row else None

    def _open_block_txn(
        self, txn: LoggingTransaction, user_id: str, new: NewBlock, now: int
    ) -> Block:
        txn.execute(
            "INSERT INTO tchap_guard_blocks"
            " (user_id, control, reason, blocked_by, since_ts, until_ts)"
            " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            (user_id, new.control, new.reason, new.blocked_by, now, new.until_ts),
        )
        block_id = int(_one(txn)[0])
        return Block(
            block_id,
            user_id,
            new.control,
            new.reason,
            new.blocked_by,
            now,
            new.until_ts,
        )

    async def open_block(
        self,
        user_id: str,
        new: NewBlock,
        now: int,
        events: Callable[[Block], Sequence[AuditEvent]],
    ) -> Block:
        """Block an account by hand; raises `AlreadyBlocked` if a block is in force."""

        def txn_func(txn: LoggingTransaction) -> Block:
            self._touch_account_txn(txn, user_id, now)
            current = self._block_in_force_txn(txn, user_id, now)
            if current is not None:
                raise AlreadyBlocked(current)
            block = self._open_block_txn(txn, user_id, new, now)
            self._insert_events_txn(txn, events(block))
            return block

        result: Block = await self._run("open_block", txn_func)
        return result

    async def lift_block(
        self,
        user_id: str,
        lifted_by: str,
        reason: str,
        now: int,
        events: Callable[[Block], Sequence[AuditEvent]],
    ) -> Block | None:
        """End the block in force, if any, and let the account start over."""

        def txn_func(txn: LoggingTransaction) -> Block | None:
            self._touch_account_txn(txn, user_id, now)
            current = self._block_in_force_txn(txn, user_id, now)
            if current is None:
                return None
            txn.execute(
                "UPDATE tchap_guard_blocks SET ended_ts = ?, ended_by = ?, end_reason = ?"
                " WHERE id = ? AND ended_ts IS NULL",
                (now, lifted_by, reason, current.id),
            )
            txn.execute(
                "UPDATE tchap_guard_accounts SET counters_reset_ts = ?,"
                " escalation_reset_ts = ?, marks_changed_ts = ? WHERE user_id = ?",
                (now, now, now, user_id),
            )
            lifted = attr.evolve(
                current, ended_ts=now, ended_by=lifted_by, end_reason=reason
            )
            self._insert_events_txn(txn, events(lifted))
            return lifted

        result: Block | None = await self._run("lift_block", txn_func)
        return result

    async def close_expired_blocks(
        self, now: int, events: Callable[[Block], Sequence[AuditEvent]]
    ) -> list[Block]:
        """Mark blocks whose time is up as ended by expiry, each exactly once."""

        def txn_func(txn: LoggingTransaction) -> list[Block]:
            txn.execute(
                f"SELECT {_BLOCK_COLUMNS} FROM tchap_guard_blocks"
                " WHERE ended_ts IS NULL AND until_ts <= ?",
                (now,),
            )
            expired = [Block(*row) for row in txn.fetchall()]
            closed = []
            for block in expired:
                assert block.until_ts is not None
                txn.execute(
                    "UPDATE tchap_guard_blocks SET ended_ts = ?, ended_by = 'expiry'"
                    " WHERE id = ? AND ended_ts IS NULL",
                    (block.until_ts, block.id),
                )
                if txn.rowcount != 1:
                    continue  # lifted by an admin meanwhile
                ended = attr.evolve(block, ended_ts=block.until_ts, ended_by="expiry")
                self._insert_events_txn(txn, events(ended))
                closed.append(ended)
            return closed

        result: list[Block] = await self._run("close_expired_blocks", txn_func)
        return result

    async def list_blocks(
        self, now: int, limit: int, before_id: int | None
    ) -> tuple[list[Block], int]:
        """Blocks in force, newest first, from `before_id`; and how many there are."""

        def txn_func(txn: LoggingTransaction) -> tuple[list[Block], int]:
            txn.execute(
                f"SELECT COUNT(*) FROM tchap_guard_blocks WHERE {_ACTIVE}", (now,)
            )
            total = int(_one(txn)[0])
            txn.execute(
                f"SELECT {_BLOCK_COLUMNS} FROM tchap_guard_blocks"
                f" WHERE {_ACTIVE} AND id < ? ORDER BY id DESC LIMIT ?",
                (now, before_id if before_id is not None else 2**62, limit),
            )
            return [Block(*row) for row in txn.fetchall()], total

        result: tuple[list[Block], int] = await self._run("list_blocks", txn_func)
        return result

    # --- what the admin API shows about an account ------------------------------

    async def account_marks(self, user_id: str) -> AccountMarks:
        result: AccountMarks = await self._run(
            "account_marks", self._account_marks_txn, user_id
        )
        return result

    def _account_marks_txn(self, txn: LoggingTransaction, user_id: str) -> AccountMarks:
        txn.execute(
            "SELECT counters_reset_ts, escalation_reset_ts, step_up_ts, step_up_until_ts"
            " FROM tchap_guard_accounts WHERE user_id = ?",
            (user_id,),
        )
        row = txn.fetchone()
        return AccountMarks(*map(int, row)) if row else AccountMarks()

    async def history(self, user_id: str, control: str, since: int) -> list[Attempt]:
        def txn_func(txn: LoggingTransaction) -> list[Attempt]:
            txn.execute(
                "SELECT ts, decision, bytes FROM tchap_guard_attempts"
                " WHERE user_id = ? AND control = ? AND ts > ?",
                (user_id, control, since),
            )
            return [
                Attempt(ts=ts, served=decision == Decision.ALLOW.value, bytes=size)
                for ts, decision, size in txn.fetchall()
            ]

        result: list[Attempt] = await self._run("history", txn_func)
        return result

    async def recent_attempts(self, user_id: str, limit: int) -> list[StoredAttempt]:
        def txn_func(txn: LoggingTransaction) -> list[StoredAttempt]:
            txn.execute(
                "SELECT id, control, ts, decision, bytes, target FROM tchap_guard_attempts"
                " WHERE user_id = ? ORDER BY id DESC LIMIT ?",
                (user_id, limit),
            )
            return [StoredAttempt(*row) for row in txn.fetchall()]

        result: list[StoredAttempt] = await self._run("recent_attempts", txn_func)
        return result

    async def recent_events(self, user_id: str, limit: int) -> list[dict[str, Any]]:
        def txn_func(txn: LoggingTransaction) -> list[dict[str, Any]]:
            txn.execute(
                "SELECT document FROM tchap_guard_events"
                " WHERE user_id = ? ORDER BY id DESC LIMIT ?",
                (user_id, limit),
            )
            return [json.loads(document) for (document,) in txn.fetchall()]

        result: list[dict[str, Any]] = await self._run("recent_events", txn_func)
        return result

    async def block_history(self, user_id: str, limit: int) -> list[Block]:
        def txn_func(txn: LoggingTransaction) -> list[Block]:
            txn.execute(
                f"SELECT {_BLOCK_COLUMNS} FROM tchap_guard_blocks"
                " WHERE user_id = ? ORDER BY id DESC LIMIT ?",
                (user_id, limit),
            )
            return [Block(*row) for row in txn.fetchall()]

        result: list[Block] = await self._run("block_history", txn_func)
        return result

    # --- audit trail and pruning ------------------------------------------------

    async def insert_events(self, events: Sequence[AuditEvent]) -> None:
        await self._run("insert_events", self._insert_events_txn, events)

    def _insert_events_txn(
        self, txn: LoggingTransaction, events: Sequence[AuditEvent]
    ) -> None:
        for event in events:
            txn.execute(
                "INSERT INTO tchap_guard_events (ts, user_id, action, document)"
                " VALUES (?, ?, ?, ?)",
                (
                    event.ts,
                    event.user_id,
                    event.action,
                    json.dumps(event.to_ecs(self._node), default=str),
                ),
            )

    async def prune(self, attempts_before: int, history_before: int) -> int:
        """Delete what no rule or retention needs any more, in small batches."""
        deletions = (
            ("tchap_guard_attempts", "ts < ?", attempts_before),
            ("tchap_guard_events", "ts < ?", history_before),
            (
                "tchap_guard_blocks",
                "ended_ts IS NOT NULL AND ended_ts < ?",
                history_before,
            ),
            (
                "tchap_guard_accounts",
                "last_attempt_ts < ? AND counters_reset_ts < ?"
                " AND escalation_reset_ts < ? AND step_up_until_ts < ?",
                attempts_before,
            ),
        )
        removed = 0
        for table, condition, before in deletions:
            arguments = (before,) * condition.count("?")
            while True:
                count = await self._run(
                    "prune", self._prune_batch_txn, table, condition, arguments
                )
                removed += count
                if count < _PRUNE_BATCH:
                    break
        return removed

    def _prune_batch_txn(
        self,
        txn: LoggingTransaction,
        table: str,
        condition: str,
        arguments: tuple[int, ...],
    ) -> int:
        key = "user_id" if table == "tchap_guard_accounts" else "id"
        txn.execute(
            f"DELETE FROM {table} WHERE {key} IN"
            f" (SELECT {key} FROM {table} WHERE {condition} LIMIT {_PRUNE_BATCH})",
            arguments,
        )
        return int(txn.rowcount)


def _one(txn: LoggingTransaction) -> tuple[Any, ...]:
    """The row a statement is certain to return (an aggregate, a RETURNING clause)."""
    row = txn.fetchone()
    assert row is not None
    return row
