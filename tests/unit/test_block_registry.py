"""The per-process copy of the blocks in force."""

from __future__ import annotations

from synapse_tchap_guard.block_registry import BlockRegistry
from synapse_tchap_guard.model import Block


def block(user_id: str, until: int | None, block_id: int = 1) -> Block:
    return Block(block_id, user_id, "public_room_joins", "why", "tchap_guard", 0, until)


def test_a_block_is_in_force_until_it_expires() -> None:
    registry = BlockRegistry()
    registry.remember(block("@a:x", until=100), now=0)
    registry.remember(block("@b:x", until=None), now=0)
    assert registry.in_force("@a:x", 99) is not None
    assert registry.in_force("@a:x", 100) is None
    assert registry.in_force("@b:x", 10**15) is not None
    assert registry.in_force("@c:x", 0) is None
    assert "@a:x" in registry and "@c:x" not in registry


def test_a_reload_replaces_the_copy() -> None:
    registry = BlockRegistry()
    registry.remember(block("@a:x", None), now=0)
    registry.replace_all([block("@b:x", None)], read_started=10)
    assert registry.in_force("@a:x", 20) is None
    assert registry.in_force("@b:x", 20) is not None
    assert len(registry) == 1


def test_a_reload_that_began_before_a_local_change_does_not_undo_it() -> None:
    registry = BlockRegistry()
    registry.remember(block("@blocked:x", None), now=0)
    # Blocked and unblocked here while a reload, begun at 5, was reading the table.
    registry.remember(block("@new:x", None, block_id=2), now=6)
    registry.forget("@blocked:x", now=7)
    registry.replace_all([block("@blocked:x", None)], read_started=5)
    assert registry.in_force("@new:x", 8) is not None
    assert registry.in_force("@blocked:x", 8) is None
    # The next reload, begun after those changes, is the truth again.
    registry.replace_all([block("@blocked:x", None)], read_started=9)
    assert registry.in_force("@new:x", 10) is None
    assert registry.in_force("@blocked:x", 10) is not None


def ended(b: Block, at: int) -> Block:
    return Block(b.id, b.user_id, b.control, b.reason, b.blocked_by, 0, b.until_ts, at)


def test_the_blocks_opened_or_ended_lately_update_the_copy() -> None:
    registry = BlockRegistry()
    lifted, kept = block("@lifted:x", None, 1), block("@kept:x", None, 2)
    registry.replace_all([lifted, kept], read_started=0)
    registry.apply(
        [ended(lifted, at=8), block("@new:x", None, 3)], read_started=10, now=10
    )
    assert registry.in_force("@lifted:x", 11) is None
    assert registry.in_force("@kept:x", 11) == kept
    assert registry.in_force("@new:x", 11) is not None


def test_an_older_block_of_the_account_does_not_undo_a_newer_one() -> None:
    registry = BlockRegistry()
    old, new = block("@a:x", None, 1), block("@a:x", None, 2)
    # Read oldest first: the first block ended, then the second opened.
    registry.apply([ended(old, at=5), new], read_started=10, now=10)
    assert registry.in_force("@a:x", 11) == new
    # A later read that still finds the first one ended leaves the second alone.
    registry.apply([ended(old, at=5)], read_started=12, now=12)
    assert registry.in_force("@a:x", 13) == new


def test_a_read_begun_before_a_local_change_does_not_undo_it() -> None:
    registry = BlockRegistry()
    stale = block("@a:x", None, 1)
    registry.remember(block("@a:x", None, 2), now=11)  # blocked here at 11
    registry.apply([ended(stale, at=9)], read_started=10, now=12)
    assert registry.in_force("@a:x", 12) is not None
    registry.forget("@a:x", now=13)  # and lifted here at 13
    registry.apply([block("@a:x", None, 2)], read_started=12, now=14)
    assert registry.in_force("@a:x", 14) is None
