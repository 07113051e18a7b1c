"""What the guard keeps about accounts, as the rest of the package sees it.

Plain values, no Synapse and no SQL: the store builds them from rows, gates and the
admin API read them.
"""

from __future__ import annotations

from typing import NamedTuple

import attr

from synapse_tchap_guard.policy import Decision, Record


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
    """A block about to be opened (the store gives it its id and start)."""

    control: str
    reason: str
    blocked_by: str
    until_ts: int | None


class AlreadyBlocked(Exception):
    def __init__(self, block: Block) -> None:
        super().__init__(f"{block.user_id} is already blocked")
        self.block = block


class Row(NamedTuple):
    """One line of the attempts log, as written: a request and its decision, or a
    later amendment of one (`decision` "bytes" or "failed", `attempts` 0)."""

    user_id: str
    control: str
    ts: int
    decision: str
    target: str | None
    attempts: int
    served: int
    bytes: int

    @property
    def record(self) -> Record:
        refused = self.attempts and self.decision != Decision.ALLOW.value
        return Record(self.ts, self.attempts, self.served, self.bytes, int(refused))


@attr.define(eq=False)
class Line:
    """A request counted in memory, until its row is taken to be written.

    A response that finishes before then folds its bytes, or its failure, into the
    request's own row; after, they become rows of their own.
    """

    user_id: str
    control: str
    ts: int
    decision: Decision
    target: str | None
    units: int  # what the request weighs: its served units, if it is served
    bytes: int = 0
    failed: bool = False
    taken: bool = False
    # False for a refusal repeating one already counted (see `policy.evaluate`).
    counts_towards_block: bool = True

    @property
    def served(self) -> int:
        return self.units if self.decision.served and not self.failed else 0

    @property
    def record(self) -> Record:
        """As `row().record`, without building the row (on every counted request)."""
        attempts = 1 if self.counts_towards_block else 0
        refused = attempts if self.decision is not Decision.ALLOW else 0
        return Record(self.ts, attempts, self.served, self.bytes, refused)

    def row(self) -> Row:
        return Row(
            self.user_id,
            self.control,
            self.ts,
            self.decision.value,
            self.target,
            1 if self.counts_towards_block else 0,
            self.served,
            self.bytes,
        )

    def take(self) -> Row:
        """The row to write; from now on, amendments are rows of their own."""
        self.taken = True
        return self.row()


@attr.frozen
class StoredLine:
    """A line of the attempts log as the admin API lists it."""

    id: int
    control: str
    ts: int
    decision: str
    attempts: int
    served: int
    bytes: int
    target: str | None
