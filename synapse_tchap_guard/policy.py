"""What the guard decides, in plain Python: rolling windows, quotas and escalation.

Nothing here knows Synapse, the database or Redis. A caller hands in what a key (an
account, or one of its sessions) counted recently, through the `Counts` view, and gets
back a `Verdict`; so every rule is testable in milliseconds, and the same rules serve
the gates, the admin API and the tests.

The vocabulary: a `Decision` is what happens to one request (allowed, denied, the
account blocked, or in monitor mode what would have happened); a `Verdict` is a
decision with the rule and the count that led to it, and what it leaves behind
towards a block.

Escalation is for intent. A block threshold counting attempts measures volume: every
request counts, served or refused (a scraper's volume is itself the signal). A threshold
counting refusals counts what the account asks after being told: once a window is
full (a cause, until the window has room again: the retry time the client was given),
each thing it asks for counts once, however often it asks again. A client retrying
what it was refused (Element paginates again at every scroll, without backing off) is
never blocked for it; a script that goes on to the next room or the next person, or
comes back for more each time there is room, is. Either way, what a client fetches by
itself (`automatic`: thread summaries, a timeline's fill) never counts towards a block.
"""

from __future__ import annotations

import enum
from typing import Protocol

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
    REFUSALS = "refusals"  # refusals, a cause once: the threshold blocks on a refusal


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
    def spans(self) -> tuple[int, ...]:
        """The windows its limits count in (the step-up's included), each once."""
        limits = self.limits + (self.step_up.limits if self.step_up else ())
        return tuple(sorted({limit.window_ms for limit in limits}))

    @property
    def longest_window_ms(self) -> int:
        windows = list(self.spans)
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

    def target_window_ms(self, stepped_up: bool) -> int:
        """How far back a distinct target counts as already served."""
        return max(
            (limit.window_ms for limit in self.limits_for(stepped_up)), default=0
        )


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

    @property
    def tally_origin(self) -> int:
        """Where the count towards a block starts: the last reset or block."""
        return max(self.counters_reset_ts, self.escalation_reset_ts)


class Decision(enum.Enum):
    """What happens to one request."""

    ALLOW = "allow"
    DENY = "deny"
    BLOCK = "block"
    WOULD_DENY = "would_deny"  # monitor mode: allowed, reported
    WOULD_BLOCK = "would_block"

    @property
    def served(self) -> bool:
        """Whether the request fills the limits. A would-be refusal is let through but
        counted as refused, so that monitor mode counts exactly what enforce would."""
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
    """A decision on one request, the rule and usage that led to it, and what it
    leaves towards a block.

    `step_up` is True when re-authenticating would lift the limit that refused it;
    `too_large` when the request itself asks more than may ever be served at once
    (waiting would not help: asking less would). `towards_block` says whether it
    counts towards the block threshold; for a refusal counted towards a threshold of
    refusals, `cause_since` and `cause_until` say when its cause began and until when
    the refusals that follow are the same cause.
    """

    decision: Decision
    rule: Limit | Threshold | None = None
    measure: Measure = Measure.ATTEMPTS
    count: int = 0
    retry_after_ms: int | None = None
    step_up: bool = False
    too_large: bool = False
    towards_block: bool = True
    cause_since: int = 0
    cause_until: int = 0

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


class Counts(Protocol):
    """What a key counted recently, as the rules read it (`state.CountState`)."""

    cause_since: int  # when the current cause began, until `cause_until`
    cause_until: int

    def served(self, span: int, now: int) -> int: ...

    def sent(self, span: int, now: int) -> int: ...

    def wait(self, span: int, measure: Measure, ceiling: int, now: int) -> int:
        """How long until the window's `measure` goes under `ceiling`."""
        ...

    def attempts(self, now: int) -> int: ...

    def refusals(self, now: int) -> int: ...

    def refused_since(self, target: str, start: int) -> bool:
        """Whether `target` was refused (and counted) after `start`."""
        ...


def evaluate(
    quota: Quota,
    counts: Counts,
    now: int,
    marks: AccountMarks = AccountMarks(),
    units: int = 1,
    target: str | None = None,
    automatic: bool = False,
) -> Verdict:
    """Judge one more request made at `now`, weighing `units`.

    A limit whose window is already full denies it, with the delay after which it
    would pass; a request weighing more than `max_per_request` is denied as too
    large. Then the block threshold (see the module's docstring for what counts): the
    request that brings its count to `max` blocks the account. `counts` must hold
    only what came after the last reset and, for the threshold, the last block.
    """
    stepped_up = marks.stepped_up(now)
    limits = quota.limits_for(stepped_up)
    denial = None
    for limit in limits:
        for verdict in _full(limit, counts, now):
            if denial is None or _wait(verdict) > _wait(denial):
                denial = verdict  # several full: the longest wait is when it passes
    if denial is not None:
        if quota.step_up is not None and not stepped_up:
            denial = attr.evolve(denial, step_up=True)
    elif quota.max_per_request is not None and units > quota.max_per_request:
        rule = Limit(0, max=quota.max_per_request)
        denial = Verdict(Decision.DENY, rule, Measure.ATTEMPTS, units, too_large=True)
    block_at = quota.block_at
    if block_at is None:
        return denial or ALLOW
    if block_at.counts is Counting.ATTEMPTS:
        if automatic:
            return attr.evolve(denial or ALLOW, towards_block=False)
        attempts = 1 + counts.attempts(now)
        if attempts >= block_at.max:
            return Verdict(Decision.BLOCK, block_at, Measure.ATTEMPTS, attempts)
        return denial or ALLOW
    if denial is None:
        return ALLOW
    since = counts.cause_since
    if now >= counts.cause_until:
        since = now  # the window had room again: a new cause
    elif target is None or counts.refused_since(target, since - 1):
        automatic = True  # asked again: counted already in this cause
    if automatic:
        return attr.evolve(denial, towards_block=False)
    until = max(counts.cause_until, now + (denial.retry_after_ms or 0))
    refusals = 1 + counts.refusals(now)
    if refusals >= block_at.max:
        denial = Verdict(Decision.BLOCK, block_at, Measure.REFUSALS, refusals)
    return attr.evolve(denial, cause_since=since, cause_until=until)


def _full(limit: Limit, counts: Counts, now: int) -> list[Verdict]:
    """The denials of a full window, by count or by bytes."""
    span = limit.window_ms
    denials = []
    if limit.max is not None:
        served = counts.served(span, now)
        if served >= limit.max:
            wait = counts.wait(span, Measure.ATTEMPTS, limit.max, now)
            denials.append(
                Verdict(Decision.DENY, limit, Measure.ATTEMPTS, served, wait)
            )
    if limit.max_bytes is not None:
        sent = counts.sent(span, now)
        if sent >= limit.max_bytes:
            wait = counts.wait(span, Measure.BYTES, limit.max_bytes, now)
            denials.append(Verdict(Decision.DENY, limit, Measure.BYTES, sent, wait))
    return denials


def _wait(verdict: Verdict) -> int:
    return verdict.retry_after_ms or 0


@attr.frozen
class WindowUsage:
    """How much of one rule a key has used, for the admin API."""

    rule: Limit | Threshold
    count: int
    bytes: int | None = None


def usage(
    quota: Quota, counts: Counts, now: int, marks: AccountMarks = AccountMarks()
) -> list[WindowUsage]:
    """The key's standing against the rules that apply now, as `evaluate` counts."""
    report = []
    for limit in quota.limits_for(marks.stepped_up(now)):
        span = limit.window_ms
        sent = counts.sent(span, now) if limit.max_bytes else None
        report.append(WindowUsage(limit, counts.served(span, now), sent))
    block_at = quota.block_at
    if block_at is not None:
        if block_at.counts is Counting.ATTEMPTS:
            report.append(WindowUsage(block_at, counts.attempts(now)))
        else:
            report.append(WindowUsage(block_at, counts.refusals(now)))
    return report
