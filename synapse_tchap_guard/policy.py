"""What the guard decides, in plain Python: rolling windows, quotas and escalation.

Nothing here knows Synapse or the database. A gate hands in the attempts an account
made recently and gets back a verdict, so every threshold is testable in milliseconds
and the same rules serve the gates, the admin API and the tests.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence

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


@attr.frozen
class Attempt:
    """One attempt already recorded for the account.

    `served` is False for attempts that were refused (or would have been, in monitor
    mode): they count towards the block threshold but not towards the limits, so that
    monitor mode measures exactly what enforce mode would do.
    """

    ts: int
    served: bool
    bytes: int = 0


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
        """Whether the attempt counts towards the limits (see `Attempt.served`)."""
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


def evaluate(
    quota: Quota, history: Sequence[Attempt], now: int, escalation_since: int = 0
) -> Verdict:
    """Judge one more attempt made at `now`, given the account's earlier attempts.

    The block threshold comes first: the attempt that brings the number of attempts in
    its window (counting only those after `escalation_since`, the last block) to
    `block_at.max` blocks the account. Otherwise a limit whose window is already full
    denies the attempt, with the delay after which it would pass.
    """
    block_at = quota.block_at
    if block_at is not None:
        start = max(now - block_at.window_ms, escalation_since)
        attempts = 1 + sum(1 for a in history if a.ts > start)
        if attempts >= block_at.max:
            return Verdict(Outcome.BLOCK, block_at, Measure.ATTEMPTS, attempts)

    denials = [
        d for d in (_judge_limit(limit, history, now) for limit in quota.limits) if d
    ]
    # Several full windows: the longest wait is the one after which the attempt passes.
    return max(denials, key=_wait, default=ALLOW)


def _judge_limit(limit: Limit, history: Sequence[Attempt], now: int) -> Verdict | None:
    served = served_in_window(history, limit.window_ms, now)
    if limit.max is not None and len(served) >= limit.max:
        wait = _wait_until_below(served, limit, now, limit.max, lambda a: 1)
        return Verdict(Outcome.DENY, limit, Measure.ATTEMPTS, len(served), wait)
    if limit.max_bytes is not None:
        total = sum(a.bytes for a in served)
        if total >= limit.max_bytes:
            wait = _wait_until_below(
                served, limit, now, limit.max_bytes, lambda a: a.bytes
            )
            return Verdict(Outcome.DENY, limit, Measure.BYTES, total, wait)
    return None


def _wait(verdict: Verdict) -> int:
    return verdict.retry_after_ms or 0


def served_in_window(
    history: Iterable[Attempt], window_ms: int, now: int
) -> list[Attempt]:
    """The served attempts still inside the window ending at `now`, oldest first.

    An attempt made exactly `window_ms` ago has just left the window.
    """
    start = now - window_ms
    return sorted((a for a in history if a.served and a.ts > start), key=_by_ts)


def _wait_until_below(
    served: list[Attempt],
    limit: Limit,
    now: int,
    ceiling: int,
    weight: Callable[[Attempt], int],
) -> int:
    """How long until enough of the oldest attempts leave the window to go under `ceiling`."""
    remaining = sum(weight(a) for a in served)
    for attempt in served:
        remaining -= weight(attempt)
        if remaining < ceiling:
            return max(1, attempt.ts + limit.window_ms - now)
    # Unreachable when the window was full, as emptying it gets below any ceiling > 0.
    return limit.window_ms


@attr.frozen
class WindowUsage:
    """How much of one rule an account has used, for the admin API."""

    rule: Limit | Threshold
    attempts: int
    bytes: int | None = None


def usage(
    quota: Quota, history: Sequence[Attempt], now: int, escalation_since: int = 0
) -> list[WindowUsage]:
    """The account's standing against every rule of a control, as `evaluate` counts it."""
    report = []
    for limit in quota.limits:
        served = served_in_window(history, limit.window_ms, now)
        total_bytes = sum(a.bytes for a in served) if limit.max_bytes else None
        report.append(WindowUsage(limit, len(served), total_bytes))
    if quota.block_at is not None:
        start = max(now - quota.block_at.window_ms, escalation_since)
        report.append(
            WindowUsage(quota.block_at, sum(1 for a in history if a.ts > start))
        )
    return report


def _by_ts(attempt: Attempt) -> int:
    return attempt.ts
