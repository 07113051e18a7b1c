"""The blocks in force, as this process knows them: what the per-request check reads,
a dictionary lookup (see `blocks` for how it is kept up to date)."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from synapse_tchap_guard.model import Block


class BlockRegistry:
    """The blocks in force, as this process knows them."""

    def __init__(self) -> None:
        self._blocks: dict[str, Block] = {}
        # Changes made here since the last reload began, which that reload may miss.
        self._recent: dict[str, tuple[int, Block | None]] = {}

    def __contains__(self, user_id: str) -> bool:
        """Whether the account has a block here, in force or not (cheaper than
        `in_force`, which needs the time)."""
        return user_id in self._blocks

    def in_force(self, user_id: str, now: int) -> Block | None:
        block = self._blocks.get(user_id)
        return block if block is not None and block.in_force(now) else None

    def remember(self, block: Block, now: int) -> None:
        self._blocks[block.user_id] = block
        self._recent[block.user_id] = (now, block)

    def forget(self, user_id: str, now: int) -> None:
        self._blocks.pop(user_id, None)
        self._recent[user_id] = (now, None)

    def replace_all(self, blocks: Collection[Block], read_started: int) -> None:
        """Take a fresh copy from the database, keeping changes newer than the read."""
        fresh = {block.user_id: block for block in blocks}
        recent = {}
        for user_id, (changed, block) in self._recent.items():
            if changed < read_started:
                continue
            recent[user_id] = (changed, block)
            if block is None:
                fresh.pop(user_id, None)
            else:
                fresh[user_id] = block
        self._blocks = fresh
        self._recent = recent

    def apply(self, changed: Sequence[Block], read_started: int, now: int) -> None:
        """Take the blocks opened or ended lately (oldest first), keeping changes made
        here since the read began. (A block that runs out is not in force any more
        for `in_force`; the next full read drops it.)"""
        for block in changed:
            user_id = block.user_id
            local = self._recent.get(user_id)
            if local is not None and local[0] >= read_started:
                continue  # changed here since: this process knows better
            current = self._blocks.get(user_id)
            if current is not None and current.id > block.id:
                continue  # an older block of the same account
            if block.in_force(now):
                self._blocks[user_id] = block
            else:
                self._blocks.pop(user_id, None)
        self._recent = {
            user_id: change
            for user_id, change in self._recent.items()
            if change[0] >= read_started
        }

    def __len__(self) -> int:
        return len(self._blocks)

    def count_in_force(self, now: int) -> int:
        return sum(1 for block in self._blocks.values() if block.in_force(now))
