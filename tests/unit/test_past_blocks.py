"""The listing of ended blocks on the store's real SQL: which blocks are past, their
order, the filters, and pages that neither repeat nor skip a block."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from twisted.internet import task

from synapse_tchap_guard.model import Block, NewBlock
from synapse_tchap_guard.store import GuardStore
from synapse_tchap_guard.store.blocks import EXPIRY, LIFTED, PastFilter, PastKey
from tests.unit.fakes import SqliteDatabase, SqliteTransaction, new_store, run

ADMIN = "@admin:example.org"
OTHER_ADMIN = "@other:example.org"
START = 1_800_000_000_000
MIN = 60_000


def user(n: int) -> str:
    return f"@user{n}:example.org"


def store() -> GuardStore:
    clock = task.Clock()
    clock.advance(START / 1000)
    return new_store(clock)


def open_block(
    guard: GuardStore,
    user_id: str,
    at: int,
    until: int | None,
    control: str = "admin",
) -> Block:
    new = NewBlock(control, "why", ADMIN, until)
    return run(guard.blocks.open(user_id, new, at, lambda b: []))


def lift(guard: GuardStore, user_id: str, at: int, by: str = ADMIN) -> Block:
    lifted = run(guard.blocks.lift(user_id, by, "verified", at, lambda b: []))
    assert lifted is not None
    return lifted


def past(
    guard: GuardStore,
    now: int,
    wanted: PastFilter | None = None,
    limit: int = 100,
    after: PastKey | None = None,
) -> tuple[list[Block], int, bool]:
    return run(guard.blocks.past(now, limit, wanted or PastFilter(), after))


def ids(blocks: list[Block]) -> list[int]:
    return [block.id for block in blocks]


def test_only_ended_blocks_are_past_the_last_ended_first() -> None:
    guard = store()
    lifted = open_block(guard, user(1), START, START + 60 * MIN)
    lift(guard, user(1), START + 10 * MIN)
    expired = open_block(guard, user(2), START + MIN, START + 20 * MIN)
    open_block(guard, user(3), START + 2 * MIN, None)  # in force, until lifted
    open_block(guard, user(4), START + 3 * MIN, START + 90 * MIN)  # in force

    blocks, total, more = past(guard, START + 30 * MIN)
    assert ids(blocks) == [expired.id, lifted.id]
    assert (total, more) == (2, False)
    # Expired, though the job that marks it so has not come by: shown as it will be.
    assert blocks[0].ended_ts == START + 20 * MIN
    assert blocks[0].ended_by == EXPIRY
    assert blocks[1].ended_by == ADMIN and blocks[1].end_reason == "verified"
    # Before the expiry, only the lifted one had ended.
    assert ids(past(guard, START + 15 * MIN)[0]) == [lifted.id]


def test_the_expiry_job_changes_nothing_of_the_listing() -> None:
    guard = store()
    open_block(guard, user(1), START, START + 5 * MIN)
    before = past(guard, START + 10 * MIN)
    run(guard.blocks.close_expired(START + 10 * MIN, lambda b: []))
    assert past(guard, START + 10 * MIN) == before


def test_filters() -> None:
    guard = store()
    # user1: an admin's block lifted by ADMIN, at minute 10.
    a = open_block(guard, user(1), START, None)
    lift(guard, user(1), START + 10 * MIN)
    # user2: the guard's block, expired at minute 30.
    b = open_block(guard, user(2), START + 20 * MIN, START + 30 * MIN, "directory")
    # user1 again: lifted by OTHER_ADMIN at minute 50.
    c = open_block(guard, user(1), START + 40 * MIN, START + 100 * MIN, "directory")
    lift(guard, user(1), START + 50 * MIN, OTHER_ADMIN)
    now = START + 200 * MIN

    def found(**wanted: object) -> list[int]:
        blocks, total, _ = past(guard, now, PastFilter(**wanted))  # type: ignore[arg-type]
        assert total == len(blocks)
        return ids(blocks)

    assert found() == [c.id, b.id, a.id]
    assert found(user_id=user(1)) == [c.id, a.id]
    assert found(user_id=user(9)) == []
    assert found(control="directory") == [c.id, b.id]
    assert found(control="admin") == [a.id]
    assert found(ended_by=EXPIRY) == [b.id]
    assert found(ended_by=LIFTED) == [c.id, a.id]
    assert found(ended_by=OTHER_ADMIN) == [c.id]
    assert found(user_id=user(1), control="directory", ended_by=ADMIN) == []
    # In force at some time in the range: ended after `since`, began before `until`.
    assert found(since=START + 10 * MIN) == [c.id, b.id]  # `a` ended exactly then
    assert found(since=START + 9 * MIN) == [c.id, b.id, a.id]
    assert found(until=START + 20 * MIN) == [a.id]  # `b` began exactly then
    assert found(since=START + 25 * MIN, until=START + 45 * MIN) == [c.id, b.id]
    assert found(since=START + 31 * MIN, until=START + 39 * MIN) == []


def test_pages_follow_each_other_without_repeating_or_skipping() -> None:
    guard = store()
    made = []
    # Ten blocks, some ending at the same millisecond (ties go by id, newest first).
    for n in range(10):
        made.append(open_block(guard, user(n), START + n, START + MIN + (n // 3) * MIN))
    now = START + 10 * MIN
    expected = sorted(made, key=lambda b: (b.until_ts, b.id), reverse=True)

    seen: list[int] = []
    after = None
    pages = 0
    while True:
        blocks, total, more = past(guard, now, limit=3, after=after)
        pages += 1
        assert total == 10
        seen += ids(blocks)
        if not more:
            break
        last = blocks[-1]
        assert last.ended_ts is not None
        after = PastKey(last.ended_ts, last.id)
    assert seen == ids(expected)
    assert pages == 4  # 3 + 3 + 3 + 1, and no empty page at the end
    # A page that ends exactly with the last block says that none follows.
    blocks, _, more = past(guard, now, limit=10)
    assert len(blocks) == 10 and more is False


def test_a_page_seeks_the_index_of_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    """A page is read from the index, where the previous page stopped: no scan of
    every ended block, nor a sort of them."""
    guard = store()
    database = guard.database
    assert isinstance(database, SqliteDatabase)
    statements: list[tuple[str, Sequence[Any]]] = []
    execute = SqliteTransaction.execute

    def recording(
        self: SqliteTransaction, sql: str, params: Sequence[Any] = ()
    ) -> None:
        statements.append((sql, params))
        execute(self, sql, params)

    monkeypatch.setattr(SqliteTransaction, "execute", recording)
    past(guard, START, after=PastKey(START, 5))
    ((sql, params),) = [s for s in statements if "ORDER BY" in s[0]]
    plan = str(database.rows(f"EXPLAIN QUERY PLAN {sql}", params))
    assert (
        "SEARCH tchap_guard_blocks USING INDEX tchap_guard_blocks_by_end_time" in plan
    )
    assert "TEMP B-TREE" not in plan
