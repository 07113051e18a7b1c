"""Blocks, as the rest of the package sees them: plain values, no Synapse and no SQL
(the store builds them from rows; the gates and the admin API read them)."""

from __future__ import annotations

import attr

GUARD = "tchap_guard"  # `blocked_by` of the blocks the guard sets itself


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

    @property
    def by_guard(self) -> bool:
        return self.blocked_by == GUARD

    def in_force(self, now: int) -> bool:
        return self.ended_ts is None and (self.until_ts is None or self.until_ts > now)


@attr.frozen
class NewBlock:
    """A block about to be opened (the store gives it its id and start)."""

    control: str
    reason: str
    blocked_by: str
    until_ts: int | None


class AlreadyBlocked(Exception):
    def __init__(self, block: Block) -> None:
        super().__init__(f"{block.user_id} is already blocked")
        self.block = block
