"""Rolling windows kept as sub-window counters: O(1) to judge, O(1) to count.

A window of span S is kept as buckets of S/60 (its `width`), each holding the sums of
what was counted in it. At time t the window is every bucket that starts at or after
the start of t's bucket less S: 61 buckets, whose oldest began at or before t - S. So:

- counts are exact (every unit counted is in one bucket, and sums are kept running);
- an event leaves the window between S and S + S/60 after it happened: never before S
  (a limit of `max` per S is never passed in any S), at most 1/60 of S later;
- judging costs the same for an account that made three requests or three million:
  buckets leave as time moves on, each once (amortised O(1)), and a window holds at
  most 61 of them, whatever the traffic.

Buckets are aligned on an `origin` (the time the window was last started over: an
admin's reset, the end of a block), so that a reset falls on a bucket's edge and what
came before it is left out exactly.

Each bucket holds two measures: a limit's window counts units served and bytes sent;
a block threshold's tally counts attempts and refusals. Plain Python, no Synapse.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

SUBWINDOWS = 60
# What `_oldest` and `_newest` hold while there is no bucket.
_NO_OLDEST = 2**62
_NO_NEWEST = -(2**62)


def width_of(span_ms: int) -> int:
    """The width of a window's buckets."""
    return max(1, span_ms // SUBWINDOWS)


class Window:
    __slots__ = (
        "_buckets",
        "_newest",
        "_oldest",
        "_totals",
        "origin",
        "reach",
        "span",
        "width",
    )

    def __init__(self, span_ms: int, origin: int = 0) -> None:
        self.span = span_ms
        self.width = width_of(span_ms)
        # From the start of the current bucket, how far back the window reaches.
        self.reach = -(-span_ms // self.width) * self.width
        self.origin = origin
        self._buckets: dict[int, list[int]] = {}  # start -> [first, second], in order
        self._oldest, self._newest = _NO_OLDEST, _NO_NEWEST
        self._totals = [0, 0]

    def bucket_of(self, ts: int) -> int:
        """The start of the bucket holding `ts` (before `origin` for an earlier ts)."""
        return ts - (ts - self.origin) % self.width

    def add(self, ts: int, first: int, second: int = 0) -> int | None:
        """Count at `ts`; returns its bucket, or None when `ts` is before the origin
        (counted before the window last started over: it does not count)."""
        start = ts - (ts - self.origin) % self.width
        if start < self.origin:
            return None
        if start == self._newest:
            cell = self._buckets[start]
            cell[0] += first
            cell[1] += second
        else:
            self._add_bucket(start, first, second)
        totals = self._totals
        totals[0] += first
        totals[1] += second
        return start

    def _add_bucket(self, start: int, first: int, second: int) -> None:
        buckets = self._buckets
        cell = buckets.get(start)
        if cell is not None:
            cell[0] += first
            cell[1] += second
            return
        buckets[start] = [first, second]
        if self._newest == _NO_NEWEST:
            self._oldest = self._newest = start
        elif start > self._newest:
            self._newest = start
        else:  # a late arrival (another process's, a refund): keep them in order
            self._buckets = dict(sorted(buckets.items()))
            self._oldest = min(self._oldest, start)

    def advance(self, now: int) -> None:
        """Let go of the buckets that have left the window at `now`."""
        floor = now - (now - self.origin) % self.width - self.reach
        if self._oldest >= floor:
            return  # the common case: nothing has left
        buckets = self._buckets
        totals = self._totals
        while buckets:
            start = next(iter(buckets))
            if start >= floor:
                self._oldest = start
                return
            first, second = buckets.pop(start)
            totals[0] -= first
            totals[1] -= second
        self._oldest, self._newest = _NO_OLDEST, _NO_NEWEST

    def totals(self, now: int) -> tuple[int, int]:
        self.advance(now)
        return self._totals[0], self._totals[1]

    def first(self, now: int) -> int:
        self.advance(now)
        return self._totals[0]

    def second(self, now: int) -> int:
        self.advance(now)
        return self._totals[1]

    def wait_until_below(self, now: int, measure: int, ceiling: int) -> int:
        """How long until enough of the oldest buckets leave for `measure` (0 or 1) to
        be under `ceiling` (a bucket leaves whole: `reach + width` after it began)."""
        self.advance(now)
        remaining = self._totals[measure]
        for start, cell in self._buckets.items():
            remaining -= cell[measure]
            if remaining < ceiling:
                return max(1, start + self.reach + self.width - now)
        return max(1, self.reach + self.width)  # cannot happen for a ceiling > 0

    def buckets(self) -> Iterator[tuple[int, int, int]]:
        """(start, first, second) of each bucket held, oldest first."""
        for start, (first, second) in self._buckets.items():
            yield start, first, second

    def restart(self, origin: int) -> None:
        """Start over from `origin`: nothing counted before it counts any more."""
        self.origin = origin
        self._buckets = {}
        self._oldest, self._newest = _NO_OLDEST, _NO_NEWEST
        self._totals = [0, 0]

    def load(self, counted: Iterable[tuple[int, int, int]]) -> None:
        """Add what was counted elsewhere: (time, first, second) each."""
        for ts, first, second in sorted(counted):
            self.add(ts, first, second)
