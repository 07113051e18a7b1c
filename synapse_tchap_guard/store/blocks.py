"""Blocks: opened by a judgement or an admin, ended by expiry or an admin."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attr
from synapse.module_api import LoggingTransaction

from synapse_tchap_guard.audit import AuditEvent
from synapse_tchap_guard.model import AlreadyBlocked, Block, NewBlock
from synapse_tchap_guard.store.database import Database
from synapse_tchap_guard.store.statements import (
    insert_events_txn,
    one,
    restart_escalation_txn,
    touch_account_txn,
)

COLUMNS = (
    "id, user_id, control, reason, blocked_by, since_ts, until_ts,"
    " ended_ts, ended_by, end_reason"
)
_ACTIVE = "ended_ts IS NULL AND (until_ts IS NULL OR until_ts > ?)"
# When a block ended: lifted, or expired (a block whose time is up ends then, though
# the background job that marks it so may not have come by yet).
_END = "COALESCE(ended_ts, until_ts)"
_ENDED = "(ended_ts IS NOT NULL OR until_ts <= ?)"
EXPIRY = "expiry"  # `ended_by` of the blocks that ran their course
LIFTED = "admin"  # as `PastFilter.ended_by`: lifted by an admin, whoever

Events = Callable[[Block], Sequence[AuditEvent]]


@attr.frozen
class PastFilter:
    """Which ended blocks a listing wants; None leaves a criterion out."""

    user_id: str | None = None
    control: str | None = None
    # EXPIRY, LIFTED (by any admin), or the admin who lifted them.
    ended_by: str | None = None
    # In force at some time from `since` to `until`: ended after `since`, began
    # before `until`.
    since: int | None = None
    until: int | None = None


@attr.frozen
class PastKey:
    """Where a page of ended blocks stops: its last block's end and id."""

    ended_ts: int
    id: int


class BlockStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def in_force(self, now: int) -> list[Block]:
        def txn_func(txn: LoggingTransaction) -> list[Block]:
            txn.execute(
                f"SELECT {COLUMNS} FROM tchap_guard_blocks WHERE {_ACTIVE}", (now,)
            )
            return [Block(*row) for row in txn.fetchall()]

        return await self._db.run("blocks_in_force", txn_func)

    async def changed(self, since: int) -> list[Block]:
        """Blocks opened or ended after `since`, oldest first: what a reload of the
        blocks in force needs, once it has them all (two indexed ranges)."""

        def txn_func(txn: LoggingTransaction) -> list[Block]:
            # Sorted here: ORDER BY would turn SQLite's use of both indexes into a
            # scan of the table.
            txn.execute(
                f"SELECT {COLUMNS} FROM tchap_guard_blocks"
                " WHERE since_ts > ? OR ended_ts > ?",
                (since, since),
            )
            return sorted((Block(*row) for row in txn.fetchall()), key=_by_id)

        return await self._db.run("blocks_changed", txn_func)

    async def in_force_for(self, user_id: str, now: int) -> Block | None:
        return await self._db.run("block_in_force", block_in_force_txn, user_id, now)

    async def open(
        self,
        user_id: str,
        new: NewBlock,
        now: int,
        events: Events,
        by_guard: bool = False,
    ) -> Block:
        """Block an account; raises `AlreadyBlocked` if a block is in force. A block
        the guard decides also restarts the account's count towards the next one."""

        def txn_func(txn: LoggingTransaction) -> Block:
            touch_account_txn(txn, user_id, now)
            current = block_in_force_txn(txn, user_id, now)
            if current is not None:
                raise AlreadyBlocked(current)
            block = open_block_txn(txn, user_id, new, now)
            if by_guard:
                restart_escalation_txn(txn, user_id, now)
            insert_events_txn(txn, self._db.node, events(block))
            return block

        return await self._db.run("open_block", txn_func)

    async def lift(
        self, user_id: str, lifted_by: str, reason: str, now: int, events: Events
    ) -> Block | None:
        """End the block in force, if any, and let the account start over."""

        def txn_func(txn: LoggingTransaction) -> Block | None:
            touch_account_txn(txn, user_id, now)
            current = block_in_force_txn(txn, user_id, now)
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
            insert_events_txn(txn, self._db.node, events(lifted))
            return lifted

        return await self._db.run("lift_block", txn_func)

    async def close_expired(self, now: int, events: Events) -> list[Block]:
        """Mark blocks whose time is up as ended by expiry, each exactly once."""

        def txn_func(txn: LoggingTransaction) -> list[Block]:
            txn.execute(
                f"SELECT {COLUMNS} FROM tchap_guard_blocks"
                " WHERE ended_ts IS NULL AND until_ts <= ?",
                (now,),
            )
            closed = []
            for block in [Block(*row) for row in txn.fetchall()]:
                txn.execute(
                    "UPDATE tchap_guard_blocks SET ended_ts = ?, ended_by = ?"
                    " WHERE id = ? AND ended_ts IS NULL",
                    (block.until_ts, EXPIRY, block.id),
                )
                if txn.rowcount != 1:
                    continue  # lifted by an admin meanwhile
                ended = attr.evolve(block, ended_ts=block.until_ts, ended_by=EXPIRY)
                insert_events_txn(txn, self._db.node, events(ended))
                closed.append(ended)
            return closed

        return await self._db.run("close_expired_blocks", txn_func)

    async def page(
        self, now: int, limit: int, before_id: int | None
    ) -> tuple[list[Block], int]:
        """Blocks in force, newest first, from `before_id`; and how many there are."""

        def txn_func(txn: LoggingTransaction) -> tuple[list[Block], int]:
            txn.execute(
                f"SELECT COUNT(*) FROM tchap_guard_blocks WHERE {_ACTIVE}", (now,)
            )
            total = int(one(txn)[0])
            txn.execute(
                f"SELECT {COLUMNS} FROM tchap_guard_blocks"
                f" WHERE {_ACTIVE} AND id < ? ORDER BY id DESC LIMIT ?",
                (now, before_id if before_id is not None else 2**62, limit),
            )
            return [Block(*row) for row in txn.fetchall()], total

        return await self._db.run("list_blocks", txn_func)

    async def past(
        self, now: int, limit: int, wanted: PastFilter, after: PastKey | None
    ) -> tuple[list[Block], int, bool]:
        """Ended blocks, the last ended first (then the newest), from after `after`:
        at most `limit`, how many match in all, and whether more follow. A block whose
        time is up is shown as the expiry that the background job will soon write."""

        def txn_func(txn: LoggingTransaction) -> tuple[list[Block], int, bool]:
            where, params = _past_where(now, wanted)
            txn.execute(
                f"SELECT COUNT(*) FROM tchap_guard_blocks WHERE {where}", params
            )
            total = int(one(txn)[0])
            if after is not None:
                # The form both SQLite and PostgreSQL seek an index with.
                where += f" AND {_END} <= ? AND ({_END} < ? OR id < ?)"
                params += [after.ended_ts, after.ended_ts, after.id]
            txn.execute(
                f"SELECT {COLUMNS} FROM tchap_guard_blocks WHERE {where}"
                f" ORDER BY {_END} DESC, id DESC LIMIT ?",
                [*params, limit + 1],
            )
            blocks = [_as_ended(Block(*row)) for row in txn.fetchall()]
            return blocks[:limit], total, len(blocks) > limit

        return await self._db.run("past_blocks", txn_func)

    async def history(self, user_id: str, limit: int) -> list[Block]:
        def txn_func(txn: LoggingTransaction) -> list[Block]:
            txn.execute(
                f"SELECT {COLUMNS} FROM tchap_guard_blocks"
                " WHERE user_id = ? ORDER BY id DESC LIMIT ?",
                (user_id, limit),
            )
            return [Block(*row) for row in txn.fetchall()]

        return await self._db.run("block_history", txn_func)


def block_in_force_txn(txn: LoggingTransaction, user_id: str, now: int) -> Block | None:
    txn.execute(
        f"SELECT {COLUMNS} FROM tchap_guard_blocks"
        f" WHERE user_id = ? AND {_ACTIVE} ORDER BY id DESC LIMIT 1",
        (user_id, now),
    )
    row = txn.fetchone()
    return Block(*row) if row else None


def open_block_txn(
    txn: LoggingTransaction, user_id: str, new: NewBlock, now: int
) -> Block:
    txn.execute(
        "INSERT INTO tchap_guard_blocks"
        " (user_id, control, reason, blocked_by, since_ts, until_ts)"
        " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
        (user_id, new.control, new.reason, new.blocked_by, now, new.until_ts),
    )
    block_id = int(one(txn)[0])
    return Block(
        block_id, user_id, new.control, new.reason, new.blocked_by, now, new.until_ts
    )


def _past_where(now: int, wanted: PastFilter) -> tuple[str, list[object]]:
    where = [_ENDED]
    params: list[object] = [now]
    if wanted.user_id is not None:
        where.append("user_id = ?")
        params.append(wanted.user_id)
    if wanted.control is not None:
        where.append("control = ?")
        params.append(wanted.control)
    if wanted.ended_by == EXPIRY:
        where.append("(ended_by = ? OR ended_ts IS NULL)")
        params.append(EXPIRY)
    elif wanted.ended_by == LIFTED:
        where.append("ended_ts IS NOT NULL AND ended_by <> ?")
        params.append(EXPIRY)
    elif wanted.ended_by is not None:
        where.append("ended_by = ?")
        params.append(wanted.ended_by)
    if wanted.since is not None:
        where.append(f"{_END} > ?")
        params.append(wanted.since)
    if wanted.until is not None:
        where.append("since_ts < ?")
        params.append(wanted.until)
    return " AND ".join(where), params


def _as_ended(block: Block) -> Block:
    if block.ended_ts is not None or block.until_ts is None:
        return block
    return attr.evolve(block, ended_ts=block.until_ts, ended_by=EXPIRY)


def _by_id(block: Block) -> int:
    return block.id
