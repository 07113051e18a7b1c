"""What one key counted for one control (`CountState`), and an account's (`AccountCounts`).

A state holds a window per span its quota's limits count in (units served, bytes
sent), a tally for its block threshold (attempts, refusals), the targets it was served
(for a control of distinct targets: a person discovered once costs nothing more in
the window), and, for a threshold counting refusals, its current cause (a window
full, until it has room again) and what was refused in it. It is the
`policy.Counts` the rules read.

"""

from __future__ import annotations

from collections.abc import Iterable

from synapse_tchap_guard.counting.layout import Layout, Shape
from synapse_tchap_guard.counting.records import Entry
from synapse_tchap_guard.policy import AccountMarks, Measure
from synapse_tchap_guard.windows import Window, width_of

# A stored bucket: (span, start, served, bytes, attempts, refusals).
StoredBucket = tuple[int, int, int, int, int, int]


class CountState:
    __slots__ = (
        "_tally",
        "_windows",
        "cause_since",
        "cause_until",
        "layout",
        "refused",
        "served_targets",
    )

    def __init__(self, layout: Layout) -> None:
        self._start(layout)

    def _start(self, layout: Layout) -> None:
        self.layout = layout
        shape = layout.shape
        self._windows = {span: Window(span, layout.origin) for span in shape.spans}
        self._tally = (
            Window(shape.tally_span, layout.tally_origin)
            if shape.tally_span is not None
            else None
        )
        self.served_targets: dict[str, int] | None = {} if shape.distinct else None
        # What was refused (and counted) in the current cause, and when.
        self.refused: dict[str, int] | None = {} if shape.causes else None
        self.cause_since = self.cause_until = 0

    # --- counting ----------------------------------------------------------------

    def apply(self, entry: Entry) -> None:
        """Count an entry (a request, or an amendment of one)."""
        ts = entry.ts
        if entry.served or entry.bytes:
            for window in self._windows.values():
                window.add(ts, entry.served, entry.bytes)
        if (entry.attempts or entry.refusals) and self._tally is not None:
            self._tally.add(ts, entry.attempts, entry.refusals)
        target = entry.target
        served = self.served_targets
        if target is not None and served is not None and ts >= self.layout.origin:
            if entry.served > 0:
                served[target] = max(ts, served.get(target, 0))
            elif entry.served < 0 and served.get(target) == ts:
                del served[target]  # not reached after all
        if entry.cause_until:
            self._cause(entry.cause_since, entry.cause_until)
            refused = self.refused
            if target is not None and entry.refusals and refused is not None:
                refused[target] = max(ts, refused.get(target, 0))

    def _cause(self, since: int, until: int) -> None:
        if since > self.cause_since:
            self.cause_since = since
            if self.refused:  # a new cause: what was refused before counts again
                self.refused = {t: ts for t, ts in self.refused.items() if ts >= since}
        self.cause_until = max(self.cause_until, until)

    def load(
        self,
        buckets: Iterable[StoredBucket],
        served_targets: Iterable[tuple[str, int]] = (),
        cause: tuple[int, int] = (0, 0),
        refused: Iterable[tuple[str, int]] = (),
    ) -> None:
        """Add what was stored (by this process and others). A window whose span has
        no bucket stored (its config changed) takes those of the nearest span, each
        counted at its bucket's end: it never leaves the window early."""
        stored = list(buckets)
        by_span: dict[int, list[StoredBucket]] = {}
        for bucket in stored:
            by_span.setdefault(bucket[0], []).append(bucket)
        for span, window in self._windows.items():
            source = _nearest(by_span, span, limits=True)
            window.load(
                (_placed(bucket, span), bucket[2], bucket[3])
                for bucket in source
                if bucket[2] or bucket[3]
            )
        tally = self._tally
        if tally is not None:
            source = _nearest(by_span, tally.span, limits=False)
            tally.load(
                (_placed(bucket, tally.span), bucket[4], bucket[5])
                for bucket in source
                if bucket[4] or bucket[5]
            )
        _remember(self.served_targets, served_targets, self.layout.origin)
        if cause[1]:
            self._cause(*cause)
        if self.refused is not None:
            for target, ts in refused:
                if ts >= self.cause_since:
                    self.refused[target] = max(ts, self.refused.get(target, 0))

    def follow(self, layout: Layout) -> None:
        """The account's marks changed: after a reset everything starts over, after
        a block (or a would-be one) the tally towards the next."""
        old, self.layout = self.layout, layout
        if layout.origin != old.origin:
            self._start(layout)
        elif layout.tally_origin != old.tally_origin and self._tally is not None:
            self._tally.restart(layout.tally_origin)
            self.cause_since = self.cause_until = 0
            self.refused = {} if self.refused is not None else None

    def forget_before(self, now: int) -> None:
        """Drop the targets no window needs any more: an account in use for days
        holds its longest window's worth, not its whole life."""
        shape = self.layout.shape
        if self.served_targets and shape.spans:
            longest = max(shape.spans)
            cutoff = now - longest - width_of(longest)
            self.served_targets = {
                t: ts for t, ts in self.served_targets.items() if ts > cutoff
            }

    def buckets(self) -> list[StoredBucket]:
        """Every bucket held, as stored (to seed a shared copy)."""
        held: dict[tuple[int, int], list[int]] = {}
        for span, window in self._windows.items():
            for start, served, sent in window.buckets():
                held[(span, start)] = [served, sent, 0, 0]
        if self._tally is not None:
            span = self._tally.span
            for start, attempts, refusals in self._tally.buckets():
                cell = held.setdefault((span, start), [0, 0, 0, 0])
                cell[2], cell[3] = attempts, refusals
        return [
            (span, start, cell[0], cell[1], cell[2], cell[3])
            for (span, start), cell in held.items()
        ]

    # --- as the rules read it (policy.Counts) --------------------------------------

    def served(self, span: int, now: int) -> int:
        return self._windows[span].first(now)

    def sent(self, span: int, now: int) -> int:
        return self._windows[span].second(now)

    def wait(self, span: int, measure: Measure, ceiling: int, now: int) -> int:
        index = 1 if measure is Measure.BYTES else 0
        return self._windows[span].wait_until_below(now, index, ceiling)

    def attempts(self, now: int) -> int:
        return self._tally.first(now) if self._tally is not None else 0

    def refusals(self, now: int) -> int:
        return self._tally.second(now) if self._tally is not None else 0

    def refused_since(self, target: str, start: int) -> bool:
        refused = self.refused
        return refused is not None and refused.get(target, start) > start

    def counted_since(self, target: str, start: int) -> bool:
        """Whether `target` was served after `start` (it then costs nothing more)."""
        served = self.served_targets
        return served is not None and served.get(target, start) > start


def _remember(
    targets: dict[str, int] | None, stored: Iterable[tuple[str, int]], origin: int
) -> None:
    if targets is None:
        return
    for target, ts in stored:
        if ts >= origin:
            targets[target] = max(ts, targets.get(target, 0))


def _nearest(
    by_span: dict[int, list[StoredBucket]], span: int, limits: bool
) -> list[StoredBucket]:
    """The stored buckets of `span`, or of the nearest span that has some."""
    if span in by_span:
        return by_span[span]
    measured = [
        s
        for s, buckets in by_span.items()
        if any((b[2] or b[3]) if limits else (b[4] or b[5]) for b in buckets)
    ]
    if not measured:
        return []
    return by_span[min(measured, key=lambda s: abs(s - span))]


def _placed(bucket: StoredBucket, span: int) -> int:
    """When a stored bucket counts: its start, or for another span's, its end."""
    stored_span, start = bucket[0], bucket[1]
    if stored_span == span:
        return start
    return start + width_of(stored_span) - 1


class AccountCounts:
    """One account's counts in this process: its marks, and a state per control and
    session (the account's own under session "")."""

    __slots__ = ("exempt", "marks", "states", "used_at", "user_id", "version")

    def __init__(
        self, user_id: str, marks: AccountMarks, exempt: bool, now: int
    ) -> None:
        self.user_id = user_id
        self.marks = marks
        self.exempt = exempt  # as of the load: admins and appservices never count
        self.used_at = now
        self.states: dict[tuple[str, str], CountState] = {}
        self.version = 0  # with Redis: the shared copy's version this one has seen

    def state(self, control: str, session: str, shape: Shape) -> CountState:
        state = self.states.get((control, session))
        if state is None:
            state = CountState(Layout.of(shape, self.marks))
            self.states[(control, session)] = state
        return state
