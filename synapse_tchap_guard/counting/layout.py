"""How a key's counts are cut: which windows a quota needs (`Shape`), and where each
window's buckets start (`Layout`); and a request counted in them, awaiting its
response (`Pending`).

A layout is immutable, so that what was counted can be written behind (or amended by
a response) in the buckets it was counted in, even after the state has moved on.
"""

from __future__ import annotations

import attr

from synapse_tchap_guard.counting.records import Entry, StateKey
from synapse_tchap_guard.policy import AccountMarks, Counting, Quota
from synapse_tchap_guard.windows import width_of


@attr.frozen
class Shape:
    """The windows a quota needs."""

    spans: tuple[int, ...]
    tally_span: int | None
    distinct: bool  # it keeps the targets served
    causes: bool  # its threshold counts refusals: it keeps what was refused

    @classmethod
    def of(cls, quota: Quota, distinct: bool) -> Shape:
        block_at = quota.block_at
        return cls(
            spans=quota.spans,
            tally_span=block_at.window_ms if block_at else None,
            distinct=distinct,
            causes=block_at is not None and block_at.counts is Counting.REFUSALS,
        )

    @property
    def longest_span(self) -> int:
        return max((*self.spans, self.tally_span or 0), default=0)


@attr.frozen
class Layout:
    """How a state's buckets are cut: by `Shape`, from the account's marks."""

    shape: Shape
    origin: int  # the limits' windows start over at an admin's reset
    tally_origin: int  # the tally, also at the end of a block

    @classmethod
    def of(cls, shape: Shape, marks: AccountMarks) -> Layout:
        return cls(shape, marks.counters_reset_ts, marks.tally_origin)

    def buckets(self, entry: Entry) -> list[tuple[int, int, int, int, int, int]]:
        """Where an entry falls: (span, bucket start, served, bytes, attempts,
        refusals), for each window and the tally it adds something to."""
        placed = []
        if entry.served or entry.bytes:
            for span in self.shape.spans:
                start = _bucket(entry.ts, span, self.origin)
                placed.append((span, start, entry.served, entry.bytes, 0, 0))
        tally = self.shape.tally_span
        if tally is not None and (entry.attempts or entry.refusals):
            start = _bucket(entry.ts, tally, self.tally_origin)
            placed.append((tally, start, 0, 0, entry.attempts, entry.refusals))
        return placed


def _bucket(ts: int, span: int, origin: int) -> int:
    width = width_of(span)
    return ts - (ts - origin) % width


@attr.frozen(eq=False)
class Pending:
    """A request counted, whose response may still amend it: the bytes it sent, or
    its failure (which gives back what it was served). It keeps the layouts its
    states had, so an amendment is written in the buckets the request was counted
    in even if the states have been let go of meanwhile."""

    keys: tuple[StateKey, ...]
    layouts: tuple[Layout, ...]
    entry: Entry
