"""What the guard decides, in plain Python: rolling windows, quotas and escalation.

Nothing here knows Synapse or the database. A gate hands in the attempts an account
made recently and gets back a verdict, so every threshold is testable in milliseconds
and the same rules serve the gates, the admin API and the tests.
"""

from __future__ import annotations

import bisect
import enum
import itertools
from collections.abc import Iterable
from typing import Protocol

import attr


@attr.frozen
class Limit:
    """At most `max` served attempts and/or `max_bytes` served bytes per rolling window."""

    window_ms: int
    max: int | None = None
    max_bytes: int | None = None


@attr.frozen
class Threshold:
    """`max` attempts (served or refused) in a rolling window block the account."""

    window_ms: int
    max: int


@attr.frozen
class Quota:
    """The rules of one control: every limit is checked, then the block threshold."""

    limits: tuple[Limit, ...] = ()
    block_at: Threshold | None = None

    @property
    def longest_window_ms(self) -> int:
        windows = [limit.window_ms for limit in self.limits]
        if self.block_at is not None:
            windows.append(self.block_at.window_ms)
        return max(windows, default=0)


class AttemptLike(Protocol):
    """One attempt already recorded for the account, as the policy needs to see it.

    `served` is False for attempts that were refused (or would have been, in monitor
    mode): they count towards the block threshold but not towards the limits, so that
    monitor mode measures exactly what enforce mode would do.
    """

    @property
    def ts(self) -> int: ...

    @property
    def served(self) -> bool: ...

    @property
    def bytes(self) -> int: ...


@attr.frozen
class Attempt:
    """An attempt as stored."""

    ts: int
    served: bool
    bytes: int = 0


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


class Outcome(enum.Enum):
    ALLOW = "allow"
    DENY = "deny"
    BLOCK = "block"


class Measure(enum.Enum):
    """What a verdict's `count` counts."""

    ATTEMPTS = "attempts"
    BYTES = "bytes"


@attr.frozen
class Verdict:
    """The decision on one more attempt, and the rule and usage that led to it."""

    outcome: Outcome
    rule: Limit | Threshold | None = None
    measure: Measure = Measure.ATTEMPTS
    count: int = 0
    retry_after_ms: int | None = None

    @property
    def rule_max(self) -> int | None:
        if self.rule is None:
            return None
        if isinstance(self.rule, Limit) and self.measure is Measure.BYTES:
            return self.rule.max_bytes
        return self.rule.max


ALLOW = Verdict(Outcome.ALLOW)


class Decision(enum.Enum):
    """A verdict as applied under the configured mode; stored with each attempt."""

    ALLOW = "allow"
    DENY = "deny"
    WOULD_DENY = "would_deny"
    BLOCK = "block"
    WOULD_BLOCK = "would_block"

    @property
    def served(self) -> bool:
        """Whether the attempt counts towards the limits (see `AttemptLike.served`)."""
        return self is Decision.ALLOW

    @property
    def refuses(self) -> bool:
        return self in (Decision.DENY, Decision.BLOCK)

    @property
    def escalates(self) -> bool:
        """A block, real or simulated, restarts the count towards the next one."""
        return self in (Decision.BLOCK, Decision.WOULD_BLOCK)


def apply_mode(verdict: Verdict, enforcing: bool) -> Decision:
    """Monitor mode turns every refusal into its `would_` twin and lets it through."""
    if verdict.outcome is Outcome.ALLOW:
        return Decision.ALLOW
    if verdict.outcome is Outcome.DENY:
        return Decision.DENY if enforcing else Decision.WOULD_DENY
    return Decision.BLOCK if enforcing else Decision.WOULD_BLOCK


class History:
    """An account's recent attempts and served bytes, in time order, with running totals.

    Counting the attempts, served attempts or served bytes of any window is a binary
    search, so judging an account that made thousands of attempts costs no more than
    judging one that made three. Bytes are recorded when a response has been sent;
    only served attempts' bytes count, as only served attempts fill the limits.
    """

    def __init__(self) -> None:
        self._times: list[int] = []
        self._served: list[bool] = []
        self._served_before: list[int] = [0]  # served attempts among the first i
        self._byte_times: list[int] = []
        self._sizes: list[int] = []
        self._bytes_before: list[int] = [0]  # bytes among the first i records

    @classmethod
    def of(cls, attempts: Iterable[AttemptLike]) -> History:
        history = cls()
        for attempt in sorted(attempts, key=_by_ts):
            history.add_attempt(attempt.ts, attempt.served)
            if attempt.served and attempt.bytes:
                history.add_bytes(attempt.ts, attempt.bytes)
        return history

    def add_attempt(self, ts: int, served: bool) -> None:
        if self._times and ts < self._times[-1]:
            index = bisect.bisect_right(self._times, ts)
            self._times.insert(index, ts)
            self._served.insert(index, served)
            self._served_before = list(itertools.accumulate(self._served, initial=0))
            return
        self._times.append(ts)
        self._served.append(served)
        self._served_before.append(self._served_before[-1] + served)

    def add_bytes(self, ts: int, size: int) -> None:
        if self._byte_times and ts < self._byte_times[-1]:
            index = bisect.bisect_right(self._byte_times, ts)
            self._byte_times.insert(index, ts)
            self._sizes.insert(index, size)
            self._bytes_before = list(itertools.accumulate(self._sizes, initial=0))
            return
        self._byte_times.append(ts)
        self._sizes.append(size)
        self._bytes_before.append(self._bytes_before[-1] + size)

    def forget_before(self, start: int) -> None:
        """Drop the records no window reaching back to `start` needs any more."""
        kept = bisect.bisect_right(self._times, start)
        if kept:
            self._times, self._served = self._times[kept:], self._served[kept:]
            self._served_before = list(itertools.accumulate(self._served, initial=0))
        kept = bisect.bisect_right(self._byte_times, start)
        if kept:
            self._byte_times, self._sizes = self._byte_times[kept:], self._sizes[kept:]
            self._bytes_before = list(itertools.accumulate(self._sizes, initial=0))

    def __len__(self) -> int:
        return len(self._times)

    def attempts_after(self, start: int) -> int:
        return len(self._times) - bisect.bisect_right(self._times, start)

    def refused_after(self, start: int) -> int:
        return self.attempts_after(start) - self.served_after(start)

    def served_after(self, start: int) -> int:
        index = bisect.bisect_right(self._times, start)
        return self._served_before[-1] - self._served_before[index]

    def bytes_after(self, start: int) -> int:
        index = bisect.bisect_right(self._byte_times, start)
        return self._bytes_before[-1] - self._bytes_before[index]

    def served_times_after(self, start: int) -> list[int]:
        index = bisect.bisect_right(self._times, start)
        times, served = self._times[index:], self._served[index:]
        return [t for t, s in zip(times, served, strict=True) if s]

    def byte_records_after(self, start: int) -> list[tuple[int, int]]:
        index = bisect.bisect_right(self._byte_times, start)
        return list(zip(self._byte_times[index:], self._sizes[index:], strict=True))


def evaluate(
    quota: Quota, history: History, now: int, escalation_since: int = 0
) -> Verdict:
    """Judge one more attempt made at `now`, given the account's earlier attempts.

    The block threshold comes first: the attempt that brings the number of attempts in
    its window (counting only those after `escalation_since`, the last block) to
    `block_at.max` blocks the account. Otherwise a limit whose window is already full
    denies the attempt, with the delay after which it would pass. An attempt made
    exactly one window ago has just left that window.
    """
    block_at = quota.block_at
    if block_at is not None:
        start = max(now - block_at.window_ms, escalation_since)
        attempts = 1 + history.attempts_after(start)
        if attempts >= block_at.max:
            return Verdict(Outcome.BLOCK, block_at, Measure.ATTEMPTS, attempts)

    full = [limit for limit in quota.limits if _is_full(limit, history, now)]
    if not full:
        return ALLOW  # the common case, kept cheap: a few binary searches
    # Several full windows: the longest wait is the one after which the attempt passes.
    denials = [d for d in (_judge_limit(limit, history, now) for limit in full) if d]
    return max(denials, key=_wait)


def _is_full(limit: Limit, history: History, now: int) -> bool:
    start = now - limit.window_ms
    if limit.max is not None and history.served_after(start) >= limit.max:
        return True
    return limit.max_bytes is not None and history.bytes_after(start) >= limit.max_bytes


def _judge_limit(limit: Limit, history: History, now: int) -> Verdict | None:
    """A denial if the window is full by count or by bytes, with the longer wait."""
    start = now - limit.window_ms
    denials = []
    if limit.max is not None:
        served = history.served_after(start)
        if served >= limit.max:
            records = [(t, 1) for t in history.served_times_after(start)]
            wait = _wait_until_below(records, limit.window_ms, now, limit.max)
            denials.append(Verdict(Outcome.DENY, limit, Measure.ATTEMPTS, served, wait))
    if limit.max_bytes is not None:
        total = history.bytes_after(start)
        if total >= limit.max_bytes:
            records = history.byte_records_after(start)
            wait = _wait_until_below(records, limit.window_ms, now, limit.max_bytes)
            denials.append(Verdict(Outcome.DENY, limit, Measure.BYTES, total, wait))
    return max(denials, key=_wait, default=None)


def _wait(verdict: Verdict) -> int:
    return verdict.retry_after_ms or 0


def _wait_until_below(
    records: list[tuple[int, int]], window_ms: int, now: int, ceiling: int
) -> int:
    """How long until enough of the oldest records leave the window to go under `ceiling`."""
    remaining = sum(weight for _, weight in records)
    for ts, weight in records:
        remaining -= weight
        if remaining < ceiling:
            return max(1, ts + window_ms - now)
    # Unreachable when the window was full, as emptying it gets below any ceiling > 0.
    return window_ms


@attr.frozen
class Budget:
    """At most `max_profiles` distinct discoveries (people, directory pages) per window."""

    window_ms: int
    max_profiles: int

    @property
    def limit(self) -> Limit:
        return Limit(self.window_ms, max=self.max_profiles)


@attr.frozen
class DirectoryRules:
    """How much of the directory an account may discover, and what stepping up buys."""

    free: Budget
    after_step_up: Budget
    step_up_valid_for_ms: int
    block_at: Threshold | None  # enumeration requests refused
    failed_step_ups_block_at: Threshold | None

    @property
    def longest_window_ms(self) -> int:
        windows = [self.free.window_ms, self.after_step_up.window_ms]
        if self.block_at is not None:
            windows.append(self.block_at.window_ms)
        return max(windows)

    def budget(self, stepped_up: bool) -> Budget:
        return self.after_step_up if stepped_up else self.free


def evaluate_discovery(
    rules: DirectoryRules,
    history: History,
    now: int,
    stepped_up: bool,
    escalation_since: int = 0,
) -> Verdict:
    """Judge one more discovery: allowed within the budget that applies (the one a
    recent step-up bought, or the free one). Past it, the request is refused, and the
    refusal that brings the refused requests in `block_at`'s window to its max blocks.

    `history` holds the account's discoveries (served) and refused requests.
    """
    budget = rules.budget(stepped_up)
    verdict = evaluate(Quota(limits=(budget.limit,)), history, now)
    if verdict.outcome is Outcome.ALLOW or rules.block_at is None:
        return verdict
    start = max(now - rules.block_at.window_ms, escalation_since)
    refused = 1 + history.refused_after(start)
    if refused >= rules.block_at.max:
        return Verdict(Outcome.BLOCK, rules.block_at, Measure.ATTEMPTS, refused)
    return verdict


@attr.frozen
class WindowUsage:
    """How much of one rule an account has used, for the admin API."""

    rule: Limit | Threshold
    attempts: int
    bytes: int | None = None


def usage(
    quota: Quota, history: History, now: int, escalation_since: int = 0
) -> list[WindowUsage]:
    """The account's standing against every rule of a control, as `evaluate` counts it."""
    report = []
    for limit in quota.limits:
        start = now - limit.window_ms
        total_bytes = history.bytes_after(start) if limit.max_bytes else None
        report.append(WindowUsage(limit, history.served_after(start), total_bytes))
    if quota.block_at is not None:
        start = max(now - quota.block_at.window_ms, escalation_since)
        report.append(WindowUsage(quota.block_at, history.attempts_after(start)))
    return report


def _by_ts(attempt: AttemptLike) -> int:
    return attempt.ts
