"""What the guard decides, in plain Python: rolling windows, quotas and escalation.

Nothing here knows Synapse or the database. A gate hands in what an account did
recently (its `History`) and gets back a `Verdict`, so every threshold is testable in
milliseconds and the same rules serve the gates, the admin API and the tests.

The vocabulary: a `Decision` is what happens to one request (allowed, denied, the
account blocked, or in monitor mode what would have happened); a `Verdict` is a
decision with the rule and the count that led to it.
"""

from __future__ import annotations

import bisect
import enum
import itertools
from collections.abc import Iterable
from typing import NamedTuple

import attr


@attr.frozen
class Limit:
    """At most `max` served units and/or `max_bytes` served bytes per rolling window.

    A unit is what the control counts: a join, a download, a person, a message.
    """

    window_ms: int
    max: int | None = None
    max_bytes: int | None = None


class Counting(enum.Enum):
    """What a block threshold counts."""

    ATTEMPTS = "attempts"  # every request, served or refused
    REFUSALS = "refusals"  # only refused requests: the threshold blocks on a refusal


@attr.frozen
class Threshold:
    """`max` requests in a rolling window block the account."""

    window_ms: int
    max: int
    counts: Counting = Counting.ATTEMPTS


@attr.frozen
class StepUp:
    """Re-authenticating lifts the limits to `limits` for `valid_for_ms`."""

    valid_for_ms: int
    limits: tuple[Limit, ...]


@attr.frozen
class Quota:
    """The rules of one control: the limits (or, after a step-up, the step-up's),
    then the block threshold. `max_per_request` refuses outright a single request
    that weighs more (where the client chooses the weight, as a history `limit`)."""

    limits: tuple[Limit, ...] = ()
    block_at: Threshold | None = None
    step_up: StepUp | None = None
    max_per_request: int | None = None

    @property
    def longest_window_ms(self) -> int:
        windows = [limit.window_ms for limit in self.limits]
        if self.step_up is not None:
            windows += [limit.window_ms for limit in self.step_up.limits]
        if self.block_at is not None:
            windows.append(self.block_at.window_ms)
        return max(windows, default=0)

    @property
    def active(self) -> bool:
        return bool(self.limits) or self.block_at is not None

    def limits_for(self, stepped_up: bool) -> tuple[Limit, ...]:
        if stepped_up and self.step_up is not None:
            return self.step_up.limits
        return self.limits


class Record(NamedTuple):
    """One line of an account's log for a control (a tuple: one is built for every
    counted request, and for every row of an account loaded).

    A request is a record with `attempts=1`; `served` is how many units it was served
    (its weight, or 0 if it was refused), `refused` 1 if it was (or would have been,
    in monitor mode). Later lines amend it without rewriting it: the bytes its
    response sent (`bytes`), or a failure after it was allowed (`served` negative, at
    the request's own time), so the sum over any window is right.
    """

    ts: int
    attempts: int = 1
    served: int = 1
    bytes: int = 0
    refused: int = 0


@attr.frozen
class AccountMarks:
    """When the account's counters and its count towards a block last started over,
    and when it last stepped up (re-authenticated), and until when that holds."""

    counters_reset_ts: int = 0
    escalation_reset_ts: int = 0
    step_up_ts: int = 0
    step_up_until_ts: int = 0

    def stepped_up(self, now: int) -> bool:
        return self.step_up_until_ts > now


class Decision(enum.Enum):
    """What happens to one request; stored with it."""

    ALLOW = "allow"
    DENY = "deny"
    BLOCK = "block"
    WOULD_DENY = "would_deny"  # monitor mode: allowed, reported
    WOULD_BLOCK = "would_block"

    @property
    def served(self) -> bool:
        """Whether the request fills the limits. A would-be refusal is let through but
        recorded as refused, so that monitor mode counts exactly what enforce would."""
        return self is Decision.ALLOW

    @property
    def refuses(self) -> bool:
        return self in (Decision.DENY, Decision.BLOCK)

    @property
    def escalates(self) -> bool:
        """A block, real or simulated, restarts the count towards the next one."""
        return self in (Decision.BLOCK, Decision.WOULD_BLOCK)

    @property
    def reported(self) -> bool:
        return self is not Decision.ALLOW

    def under(self, enforcing: bool) -> Decision:
        """Monitor mode turns a refusal into its `would_` twin and lets it through."""
        if enforcing:
            return self
        return {
            Decision.DENY: Decision.WOULD_DENY,
            Decision.BLOCK: Decision.WOULD_BLOCK,
        }.get(self, self)


class Measure(enum.Enum):
    """What a verdict's `count` counts."""

    ATTEMPTS = "attempts"  # served units for a limit, requests for a threshold
    BYTES = "bytes"
    REFUSALS = "refusals"


@attr.frozen
class Verdict:
    """A decision on one request, and the rule and usage that led to it.

    `step_up` is True when re-authenticating would lift the limit that refused it.
    """

    decision: Decision
    rule: Limit | Threshold | None = None
    measure: Measure = Measure.ATTEMPTS
    count: int = 0
    retry_after_ms: int | None = None
    step_up: bool = False

    @property
    def rule_max(self) -> int | None:
        if self.rule is None:
            return None
        if isinstance(self.rule, Limit) and self.measure is Measure.BYTES:
            return self.rule.max_bytes
        return self.rule.max

    def under(self, enforcing: bool) -> Verdict:
        decision = self.decision.under(enforcing)
        return (
            self if decision is self.decision else attr.evolve(self, decision=decision)
        )


ALLOW = Verdict(Decision.ALLOW)


class History:
    """An account's recent records for one control, in time order, with running totals.

    Counting the attempts, refusals, served units or bytes of any window is a binary
    search, so judging an account that made thousands of requests costs no more than
    judging one that made three.
    """

    def __init__(self) -> None:
        self._times: list[int] = []
        self._records: list[Record] = []
        # Running totals over the first i records: attempts, refusals, served, bytes.
        self._totals: list[tuple[int, int, int, int]] = [(0, 0, 0, 0)]

    @classmethod
    def of(cls, records: Iterable[Record]) -> History:
        history = cls()
        for record in sorted(records, key=_by_ts):
            history.add(record)
        return history

    def add(self, record: Record) -> None:
        if self._times and record.ts < self._times[-1]:
            index = bisect.bisect_right(self._times, record.ts)
            self._times.insert(index, record.ts)
            self._records.insert(index, record)
            self._recount()
            return
        self._times.append(record.ts)
        self._records.append(record)
        attempts, refused, served, size = self._totals[-1]
        self._totals.append(
            (
                attempts + record.attempts,
                refused + record.refused,
                served + record.served,
                size + record.bytes,
            )
        )

    def forget_before(self, start: int) -> None:
        """Drop the records no window reaching back to `start` needs any more."""
        kept = bisect.bisect_right(self._times, start)
        if kept:
            del self._times[:kept], self._records[:kept]
            self._recount()

    def _recount(self) -> None:
        self._totals = [(0, 0, 0, 0)]
        self._totals += itertools.accumulate(
            ((r.attempts, r.refused, r.served, r.bytes) for r in self._records),
            lambda a, b: (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3]),
        )

    def __len__(self) -> int:
        return len(self._times)

    def _after(self, start: int, column: int) -> int:
        index = bisect.bisect_right(self._times, start)
        return self._totals[-1][column] - self._totals[index][column]

    def attempts_after(self, start: int) -> int:
        return self._after(start, 0)

    def refused_after(self, start: int) -> int:
        return self._after(start, 1)

    def served_after(self, start: int) -> int:
        return self._after(start, 2)

    def bytes_after(self, start: int) -> int:
        return self._after(start, 3)

    def records_after(self, start: int) -> list[Record]:
        return self._records[bisect.bisect_right(self._times, start) :]


def evaluate(
    quota: Quota,
    history: History,
    now: int,
    marks: AccountMarks = AccountMarks(),
    units: int = 1,
    repeat: bool = False,
) -> Verdict:
    """Judge one more request made at `now`, given the account's history.

    A limit whose window is already full denies the request, with the delay after
    which it would pass; so does a request weighing more than `max_per_request`. The
    request that brings the block threshold's count (only what came after the last
    block) to `max` blocks the account: every request for a threshold counting
    attempts, refused ones for one counting refusals. A `repeat` (the same target
    already refused in the threshold's window: a client that retries what it does
    not understand) is refused again but never counts towards a block. A request
    made exactly one window ago has just left it.
    """
    stepped_up = marks.stepped_up(now)
    limits = quota.limits_for(stepped_up)
    full = [limit for limit in limits if _is_full(limit, history, now)]
    too_big = quota.max_per_request is not None and units > quota.max_per_request
    denial = None
    if full:
        # Several full windows: the longest wait is the one after which it passes.
        denial = max((_deny(limit, history, now) for limit in full), key=_wait)
        if quota.step_up is not None and not stepped_up:
            denial = attr.evolve(denial, step_up=True)
    elif too_big:  # it would never pass as it is: asking less would
        window = max((limit.window_ms for limit in limits), default=60_000)
        rule = Limit(window, max=quota.max_per_request)
        denial = Verdict(Decision.DENY, rule, Measure.ATTEMPTS, units, window)
    block_at = quota.block_at
    if block_at is None or (denial is not None and repeat):
        return denial or ALLOW
    start = max(now - block_at.window_ms, marks.escalation_reset_ts)
    if block_at.counts is Counting.ATTEMPTS:
        attempts = 1 + history.attempts_after(start)
        if attempts >= block_at.max:
            return Verdict(Decision.BLOCK, block_at, Measure.ATTEMPTS, attempts)
    elif denial is not None:
        refused = 1 + history.refused_after(start)
        if refused >= block_at.max:
            return Verdict(Decision.BLOCK, block_at, Measure.REFUSALS, refused)
    return denial or ALLOW


def _is_full(limit: Limit, history: History, now: int) -> bool:
    start = now - limit.window_ms
    if limit.max is not None and history.served_after(start) >= limit.max:
        return True
    return limit.max_bytes is not None and history.bytes_after(start) >= limit.max_bytes


def _deny(limit: Limit, history: History, now: int) -> Verdict:
    """The denial of a full window, by count or by bytes, whichever waits longer."""
    start = now - limit.window_ms
    records = history.records_after(start)
    denials = []
    if limit.max is not None:
        served = history.served_after(start)
        if served >= limit.max:
            weights = [(r.ts, r.served) for r in records if r.served]
            wait = _wait_until_below(weights, limit.window_ms, now, limit.max)
            denials.append(
                Verdict(Decision.DENY, limit, Measure.ATTEMPTS, served, wait)
            )
    if limit.max_bytes is not None:
        total = history.bytes_after(start)
        if total >= limit.max_bytes:
            weights = [(r.ts, r.bytes) for r in records if r.bytes]
            wait = _wait_until_below(weights, limit.window_ms, now, limit.max_bytes)
            denials.append(Verdict(Decision.DENY, limit, Measure.BYTES, total, wait))
    return max(denials, key=_wait)


def _wait(verdict: Verdict) -> int:
    return verdict.retry_after_ms or 0


def _wait_until_below(
    weights: list[tuple[int, int]], window_ms: int, now: int, ceiling: int
) -> int:
    """How long until enough of the oldest records leave the window to go under
    `ceiling` (records of one moment leave together)."""
    remaining = sum(weight for _, weight in weights)
    for ts, weight in weights:
        remaining -= weight
        if remaining < ceiling:
            return max(1, ts + window_ms - now)
    # Unreachable when the window was full, as emptying it gets below any ceiling > 0.
    return window_ms


@attr.frozen
class WindowUsage:
    """How much of one rule an account has used, for the admin API."""

    rule: Limit | Threshold
    count: int
    bytes: int | None = None


def usage(
    quota: Quota, history: History, now: int, marks: AccountMarks = AccountMarks()
) -> list[WindowUsage]:
    """The account's standing against the rules that apply now, as `evaluate` counts."""
    report = []
    for limit in quota.limits_for(marks.stepped_up(now)):
        start = now - limit.window_ms
        total_bytes = history.bytes_after(start) if limit.max_bytes else None
        report.append(WindowUsage(limit, history.served_after(start), total_bytes))
    block_at = quota.block_at
    if block_at is not None:
        start = max(now - block_at.window_ms, marks.escalation_reset_ts)
        if block_at.counts is Counting.ATTEMPTS:
            report.append(WindowUsage(block_at, history.attempts_after(start)))
        else:
            report.append(WindowUsage(block_at, history.refused_after(start)))
    return report


def _by_ts(record: Record) -> int:
    return record.ts
