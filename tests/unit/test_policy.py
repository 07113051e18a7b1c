"""The rules, on exact counts: limits, sizes, thresholds, causes, modes."""

from __future__ import annotations

import attr

from synapse_tchap_guard import policy
from synapse_tchap_guard.policy import (
    AccountMarks,
    Counting,
    Decision,
    Limit,
    Measure,
    Quota,
    StepUp,
    Threshold,
    Verdict,
)

MIN = 60_000
HOUR = 60 * MIN
NOW = 1_800_000_000_000


@attr.define
class Exact:
    """Counts kept as a list of what happened, summed exactly (`policy.Counts`)."""

    served_at: list[tuple[int, int, int]] = attr.Factory(list)  # (ts, units, bytes)
    tallied: list[tuple[int, int, int]] = attr.Factory(list)  # (ts, attempts, refusals)
    refused: dict[str, int] = attr.Factory(dict)
    cause_since: int = 0
    cause_until: int = 0
    threshold_ms: int = HOUR

    def serve(self, *ago: int, units: int = 1, size: int = 0) -> Exact:
        self.served_at += [(NOW - a, units, size) for a in ago]
        return self

    def served(self, span: int, now: int) -> int:
        return sum(u for ts, u, _ in self.served_at if ts > now - span)

    def sent(self, span: int, now: int) -> int:
        return sum(b for ts, _, b in self.served_at if ts > now - span)

    def wait(self, span: int, measure: Measure, ceiling: int, now: int) -> int:
        index = 2 if measure is Measure.BYTES else 1
        inside = sorted(r for r in self.served_at if r[0] > now - span)
        remaining = sum(r[index] for r in inside)
        for record in inside:
            remaining -= record[index]
            if remaining < ceiling:
                return record[0] + span - now
        return span

    def attempts(self, now: int) -> int:
        return sum(a for ts, a, _ in self.tallied if ts > now - self.threshold_ms)

    def refusals(self, now: int) -> int:
        return sum(r for ts, _, r in self.tallied if ts > now - self.threshold_ms)

    def refused_since(self, target: str, start: int) -> bool:
        return self.refused.get(target, start) > start


def test_a_limit_denies_once_its_window_is_full_and_says_when_it_passes() -> None:
    quota = Quota(limits=(Limit(HOUR, max=2),))
    assert policy.evaluate(quota, Exact().serve(30 * MIN), NOW) == policy.ALLOW
    verdict = policy.evaluate(quota, Exact().serve(40 * MIN, 10 * MIN), NOW)
    assert verdict.decision is Decision.DENY
    assert (verdict.rule, verdict.count, verdict.rule_max) == (Limit(HOUR, max=2), 2, 2)
    assert verdict.retry_after_ms == 20 * MIN  # when the oldest leaves


def test_when_several_windows_are_full_the_longest_wait_is_given() -> None:
    quota = Quota(limits=(Limit(MIN, max=2), Limit(HOUR, max=4)))
    counts = Exact().serve(10_000, 20_000, 40 * MIN, 50 * MIN)
    verdict = policy.evaluate(quota, counts, NOW)
    assert verdict.rule == Limit(HOUR, max=4)
    assert verdict.retry_after_ms == 10 * MIN


def test_bytes_deny_once_the_window_has_sent_its_max() -> None:
    quota = Quota(limits=(Limit(HOUR, max_bytes=1000),))
    assert policy.evaluate(quota, Exact().serve(MIN, size=999), NOW) == policy.ALLOW
    verdict = policy.evaluate(quota, Exact().serve(30 * MIN, 5 * MIN, size=500), NOW)
    assert (verdict.decision, verdict.measure) == (Decision.DENY, Measure.BYTES)
    assert (verdict.count, verdict.rule_max) == (1000, 1000)
    assert verdict.retry_after_ms == 30 * MIN


def test_a_request_larger_than_may_ever_pass_is_too_large_without_a_wait() -> None:
    quota = Quota(limits=(Limit(HOUR, max=5000),), max_per_request=1000)
    verdict = policy.evaluate(quota, Exact(), NOW, units=1001)
    assert verdict.decision is Decision.DENY and verdict.too_large
    assert verdict.retry_after_ms is None
    assert (verdict.count, verdict.rule_max) == (1001, 1000)
    assert policy.evaluate(quota, Exact(), NOW, units=1000) == policy.ALLOW


def test_a_step_up_lifts_the_limits_and_a_denial_says_it_would() -> None:
    quota = Quota(
        limits=(Limit(HOUR, max=1),), step_up=StepUp(HOUR, (Limit(HOUR, max=3),))
    )
    counts = Exact().serve(MIN)
    denied = policy.evaluate(quota, counts, NOW)
    assert denied.decision is Decision.DENY and denied.step_up
    stepped_up = AccountMarks(step_up_until_ts=NOW + 1)
    assert policy.evaluate(quota, counts, NOW, stepped_up) == policy.ALLOW
    counts.serve(2 * MIN, 3 * MIN)
    past = policy.evaluate(quota, counts, NOW, stepped_up)
    assert past.decision is Decision.DENY and not past.step_up


def test_an_attempts_threshold_counts_every_attempt_served_or_refused() -> None:
    quota = Quota(limits=(Limit(HOUR, max=1),), block_at=Threshold(HOUR, 4))
    counts = Exact().serve(10 * MIN)
    counts.tallied += [(NOW - 10 * MIN, 1, 0), (NOW - 3 * MIN, 1, 0)]
    assert policy.evaluate(quota, counts, NOW).decision is Decision.DENY
    counts.tallied.append((NOW - MIN, 1, 0))
    verdict = policy.evaluate(quota, counts, NOW)
    assert verdict.decision is Decision.BLOCK
    assert (verdict.rule, verdict.count) == (Threshold(HOUR, 4), 4)


def test_a_refusals_threshold_counts_what_is_asked_after_being_told_once() -> None:
    quota = Quota(
        limits=(Limit(HOUR, max=1),), block_at=Threshold(HOUR, 3, Counting.REFUSALS)
    )
    counts = Exact().serve(50 * MIN)
    first = policy.evaluate(quota, counts, NOW, target="!room")
    assert first.decision is Decision.DENY and first.towards_block
    # The cause: the window is full until it has room again.
    assert (first.cause_since, first.cause_until) == (NOW, NOW + 10 * MIN)
    counts.tallied.append((NOW, 0, 1))
    counts.refused["!room"] = NOW
    counts.cause_since, counts.cause_until = first.cause_since, first.cause_until
    # Asked again in the same cause (a client retrying): refused, never counted.
    for later in (NOW + 1, NOW + 5 * MIN, NOW + 10 * MIN - 1):
        again = policy.evaluate(quota, counts, later, target="!room")
        assert again.decision is Decision.DENY and not again.towards_block
    assert not policy.evaluate(quota, counts, NOW + 1).towards_block  # no target
    # Something else asked in the same cause: counted, the same cause going on.
    other = policy.evaluate(quota, counts, NOW + MIN, target="!other")
    assert other.towards_block and other.cause_since == NOW
    counts.tallied.append((NOW + MIN, 0, 1))
    # Once the window had room, filled again and refused: a new cause, in which the
    # first room counts again; the third refusal blocks.
    counts.serve(-10 * MIN)
    verdict = policy.evaluate(quota, counts, NOW + 11 * MIN, target="!room")
    assert verdict.decision is Decision.BLOCK
    assert (verdict.measure, verdict.count) == (Measure.REFUSALS, 3)
    assert verdict.cause_since == NOW + 11 * MIN


def test_what_a_client_fetches_by_itself_never_counts_towards_a_block() -> None:
    for block_at in (Threshold(HOUR, 1), Threshold(HOUR, 1, Counting.REFUSALS)):
        quota = Quota(limits=(Limit(HOUR, max=1),), block_at=block_at)
        verdict = policy.evaluate(quota, Exact().serve(MIN), NOW, automatic=True)
        assert verdict.decision is Decision.DENY and not verdict.towards_block


def test_monitor_mode_turns_refusals_into_would_be_refusals() -> None:
    deny = Verdict(Decision.DENY)
    block = Verdict(Decision.BLOCK)
    assert policy.ALLOW.under(enforcing=False).decision is Decision.ALLOW
    assert deny.under(enforcing=True).decision is Decision.DENY
    assert deny.under(enforcing=False).decision is Decision.WOULD_DENY
    assert block.under(enforcing=False).decision is Decision.WOULD_BLOCK
    assert [d for d in Decision if d.served] == [Decision.ALLOW]
    assert [d for d in Decision if d.refuses] == [Decision.DENY, Decision.BLOCK]
    assert [d for d in Decision if d.escalates] == [
        Decision.BLOCK,
        Decision.WOULD_BLOCK,
    ]


def test_usage_reports_each_rule_as_evaluate_counts_it() -> None:
    quota = Quota(
        limits=(Limit(MIN, max=5), Limit(HOUR, max=10, max_bytes=10_000)),
        block_at=Threshold(HOUR, 20),
    )
    counts = Exact().serve(10_000, 20 * MIN, size=300)
    counts.tallied += [(NOW - 10_000, 1, 0), (NOW - 20 * MIN, 1, 0), (NOW - 5000, 1, 1)]
    report = policy.usage(quota, counts, NOW)
    assert [(u.rule, u.count, u.bytes) for u in report] == [
        (Limit(MIN, max=5), 1, None),
        (Limit(HOUR, max=10, max_bytes=10_000), 2, 600),
        (Threshold(HOUR, 20), 3, None),
    ]


def test_a_quota_knows_its_windows() -> None:
    quota = Quota(
        limits=(Limit(MIN, max=1), Limit(HOUR, max=2)),
        step_up=StepUp(HOUR, (Limit(HOUR, max=5), Limit(2 * HOUR, max=9))),
        block_at=Threshold(3 * HOUR, 2),
    )
    assert quota.spans == (MIN, HOUR, 2 * HOUR)
    assert quota.longest_window_ms == 3 * HOUR
    assert quota.target_window_ms(stepped_up=False) == HOUR
    assert quota.target_window_ms(stepped_up=True) == 2 * HOUR
    assert Quota().longest_window_ms == 0
    assert AccountMarks(counters_reset_ts=5, escalation_reset_ts=9).tally_origin == 9
