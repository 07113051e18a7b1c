"""The decision logic alone: windows, limits, bytes, escalation, modes."""

from __future__ import annotations

from synapse_tchap_guard import policy
from synapse_tchap_guard.policy import (
    Attempt,
    Decision,
    History,
    Limit,
    Measure,
    Outcome,
    Quota,
    Threshold,
)

MIN = 60_000
HOUR = 60 * MIN
NOW = 10 * HOUR


def served(*ages_ms: int, size: int = 0) -> list[Attempt]:
    return [Attempt(ts=NOW - age, served=True, bytes=size) for age in ages_ms]


def refused(*ages_ms: int) -> list[Attempt]:
    return [Attempt(ts=NOW - age, served=False) for age in ages_ms]


def test_under_every_limit_the_attempt_is_allowed() -> None:
    quota = Quota(limits=(Limit(HOUR, max=3),))
    assert (
        policy.evaluate(quota, History.of(served(1000, 2000)), NOW).outcome
        is Outcome.ALLOW
    )


def test_a_full_window_denies_until_its_oldest_attempt_leaves() -> None:
    quota = Quota(limits=(Limit(HOUR, max=3),))
    verdict = policy.evaluate(
        quota, History.of(served(10 * MIN, 20 * MIN, 30 * MIN)), NOW
    )
    assert verdict.outcome is Outcome.DENY
    assert verdict.rule == Limit(HOUR, max=3)
    assert verdict.count == 3
    assert verdict.rule_max == 3
    assert verdict.retry_after_ms == 30 * MIN  # the 30-minute-old attempt leaves first


def test_an_attempt_exactly_one_window_old_has_left_it() -> None:
    quota = Quota(limits=(Limit(HOUR, max=1),))
    assert (
        policy.evaluate(quota, History.of(served(HOUR)), NOW).outcome is Outcome.ALLOW
    )
    assert (
        policy.evaluate(quota, History.of(served(HOUR - 1)), NOW).outcome
        is Outcome.DENY
    )


def test_refused_attempts_do_not_fill_the_limits() -> None:
    quota = Quota(limits=(Limit(HOUR, max=2),))
    history = served(5 * MIN) + refused(1 * MIN, 2 * MIN, 3 * MIN)
    assert policy.evaluate(quota, History.of(history), NOW).outcome is Outcome.ALLOW


def test_over_the_limit_in_monitor_mode_the_wait_counts_every_extra_attempt() -> None:
    # Monitor mode records would-be denials as refused, so a window never holds more
    # served attempts than its max; if it did, the wait covers all the extra ones.
    quota = Quota(limits=(Limit(HOUR, max=2),))
    history = History.of(served(40 * MIN, 30 * MIN, 20 * MIN, 10 * MIN))
    verdict = policy.evaluate(quota, history, NOW)
    assert verdict.retry_after_ms == 40 * MIN  # until only one remains


def test_when_several_windows_are_full_the_longest_wait_is_given() -> None:
    quota = Quota(limits=(Limit(MIN, max=2), Limit(HOUR, max=4)))
    history = served(10_000, 20_000, 40 * MIN, 50 * MIN)
    verdict = policy.evaluate(quota, History.of(history), NOW)
    assert verdict.rule == Limit(HOUR, max=4)
    assert verdict.retry_after_ms == 10 * MIN


def test_bytes_deny_once_the_window_has_served_its_max() -> None:
    quota = Quota(limits=(Limit(HOUR, max_bytes=1000),))
    assert (
        policy.evaluate(quota, History.of(served(5 * MIN, size=999)), NOW).outcome
        is Outcome.ALLOW
    )
    verdict = policy.evaluate(
        quota, History.of(served(30 * MIN, 5 * MIN, size=500)), NOW
    )
    assert verdict.outcome is Outcome.DENY
    assert verdict.measure is Measure.BYTES
    assert verdict.count == 1000
    assert verdict.rule_max == 1000
    assert verdict.retry_after_ms == 30 * MIN  # dropping the oldest 500 bytes suffices


def test_bytes_wait_until_enough_bytes_leave() -> None:
    quota = Quota(limits=(Limit(HOUR, max_bytes=1000),))
    history = [
        Attempt(NOW - 50 * MIN, True, 100),
        Attempt(NOW - 40 * MIN, True, 100),
        Attempt(NOW - 30 * MIN, True, 900),
    ]
    # 1100 served: dropping 100 leaves 1000 (not below), dropping 200 leaves 900.
    assert policy.evaluate(quota, History.of(history), NOW).retry_after_ms == 20 * MIN


def test_the_attempt_that_reaches_block_at_blocks() -> None:
    quota = Quota(limits=(Limit(HOUR, max=1),), block_at=Threshold(HOUR, 4))
    history = served(10 * MIN) + refused(3 * MIN, 2 * MIN)
    verdict = policy.evaluate(quota, History.of(history), NOW)
    assert verdict.outcome is Outcome.BLOCK
    assert verdict.rule == Threshold(HOUR, 4)
    assert verdict.count == 4
    assert policy.evaluate(quota, History.of(history[:2]), NOW).outcome is Outcome.DENY


def test_attempts_before_the_last_block_do_not_count_towards_the_next() -> None:
    quota = Quota(block_at=Threshold(HOUR, 3))
    history = served(30 * MIN, 20 * MIN, 10 * MIN)
    assert policy.evaluate(quota, History.of(history), NOW).outcome is Outcome.BLOCK
    since_block = NOW - 15 * MIN
    verdict = policy.evaluate(
        quota, History.of(history), NOW, escalation_since=since_block
    )
    assert verdict.outcome is Outcome.ALLOW


def test_monitor_mode_turns_refusals_into_would_be_refusals() -> None:
    deny = policy.Verdict(Outcome.DENY)
    block = policy.Verdict(Outcome.BLOCK)
    assert policy.apply_mode(policy.ALLOW, enforcing=False) is Decision.ALLOW
    assert policy.apply_mode(deny, enforcing=True) is Decision.DENY
    assert policy.apply_mode(deny, enforcing=False) is Decision.WOULD_DENY
    assert policy.apply_mode(block, enforcing=True) is Decision.BLOCK
    assert policy.apply_mode(block, enforcing=False) is Decision.WOULD_BLOCK
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
    history = served(10_000, 20 * MIN, size=300) + refused(5_000, 2 * HOUR)
    report = policy.usage(quota, History.of(history), NOW)
    assert [(u.rule, u.attempts, u.bytes) for u in report] == [
        (Limit(MIN, max=5), 1, None),
        (Limit(HOUR, max=10, max_bytes=10_000), 2, 600),
        (Threshold(HOUR, 20), 3, None),
    ]


def test_the_longest_window_bounds_the_history_needed() -> None:
    quota = Quota(limits=(Limit(MIN, max=1),), block_at=Threshold(HOUR, 2))
    assert quota.longest_window_ms == HOUR
    assert Quota().longest_window_ms == 0


def test_history_counts_any_window_from_running_totals() -> None:
    history = History.of(
        [
            Attempt(40, True, 100),
            Attempt(10, True, 5),
            Attempt(30, False, 7),
            Attempt(20, True),
        ]
    )
    assert history.attempts_after(0) == 4
    assert history.attempts_after(20) == 2
    assert history.served_after(0) == 3
    assert history.served_after(10) == 2
    assert history.bytes_after(0) == 105  # the refused attempt's bytes never count
    assert history.bytes_after(10) == 100
    assert history.served_times_after(0) == [10, 20, 40]
    assert history.byte_records_after(0) == [(10, 5), (40, 100)]


def test_history_takes_late_and_out_of_order_records() -> None:
    history = History()
    history.add_attempt(100, True)
    history.add_attempt(300, True)
    history.add_attempt(200, False)  # a clock step back, or a reload merge
    history.add_bytes(300, 50)
    history.add_bytes(150, 25)  # the bytes of a response that finished late
    assert history.served_times_after(0) == [100, 300]
    assert history.attempts_after(150) == 2
    assert history.served_after(150) == 1
    assert history.bytes_after(100) == 75
    assert history.bytes_after(200) == 50
    history.add_attempt(400, True)  # and appends go on with the totals right
    assert history.served_after(0) == 3


def test_a_limit_on_both_count_and_bytes_gives_the_wait_after_which_both_pass() -> None:
    # Three served attempts fill the count; their 100 bytes also fill the bytes.
    quota = Quota(limits=(Limit(HOUR, max=3, max_bytes=100),))
    history = History.of(
        [
            Attempt(NOW - 56 * MIN, True, 0),
            Attempt(NOW - 6 * MIN, True, 100),
            Attempt(NOW - 1 * MIN, True, 0),
        ]
    )
    verdict = policy.evaluate(quota, history, NOW)
    # The count frees up in 4 minutes, the bytes only in 54: the answer is 54.
    assert verdict.measure is Measure.BYTES
    assert verdict.retry_after_ms == 54 * MIN


def test_history_forgets_what_no_window_needs() -> None:
    history = History.of(
        [
            Attempt(10, True, 5),
            Attempt(20, False),
            Attempt(30, True, 7),
            Attempt(40, True),
        ]
    )
    history.forget_before(20)
    assert len(history) == 2
    assert history.served_times_after(0) == [30, 40]
    assert history.byte_records_after(0) == [(30, 7)]
    assert history.served_after(0) == 2 and history.bytes_after(0) == 7
    history.add_attempt(50, True)
    assert history.served_after(35) == 2


DIRECTORY = policy.DirectoryRules(
    free=policy.Budget(HOUR, 3),
    after_step_up=policy.Budget(HOUR, 5),
    step_up_valid_for_ms=HOUR,
    block_at=Threshold(HOUR, 3),
    failed_step_ups_block_at=Threshold(HOUR, 2),
)


def test_discoveries_are_free_up_to_the_budget_then_refused() -> None:
    history = History.of(served(30 * MIN, 20 * MIN))
    assert (
        policy.evaluate_discovery(DIRECTORY, history, NOW, stepped_up=False).outcome
        is Outcome.ALLOW
    )
    history.add_attempt(NOW - 10 * MIN, True)
    verdict = policy.evaluate_discovery(DIRECTORY, history, NOW, stepped_up=False)
    assert verdict.outcome is Outcome.DENY
    assert verdict.rule == Limit(HOUR, max=3)
    assert verdict.retry_after_ms == 30 * MIN


def test_a_step_up_lifts_the_budget() -> None:
    history = History.of(served(40 * MIN, 30 * MIN, 20 * MIN))
    verdict = policy.evaluate_discovery(DIRECTORY, history, NOW, stepped_up=True)
    assert verdict.outcome is Outcome.ALLOW
    history.add_attempt(NOW - 10 * MIN, True)
    history.add_attempt(NOW - 5 * MIN, True)
    verdict = policy.evaluate_discovery(DIRECTORY, history, NOW, stepped_up=True)
    assert verdict.outcome is Outcome.DENY
    assert verdict.rule == Limit(HOUR, max=5)


def test_refused_requests_past_the_budget_escalate_to_a_block() -> None:
    history = History.of(served(40 * MIN, 30 * MIN, 20 * MIN) + refused(5 * MIN))
    assert (
        policy.evaluate_discovery(DIRECTORY, history, NOW, False).outcome
        is Outcome.DENY
    )
    history.add_attempt(NOW - 4 * MIN, False)
    verdict = policy.evaluate_discovery(DIRECTORY, history, NOW, False)
    assert verdict.outcome is Outcome.BLOCK
    assert (verdict.rule, verdict.count) == (Threshold(HOUR, 3), 3)
    # ... counting only the refusals after the last block.
    verdict = policy.evaluate_discovery(DIRECTORY, history, NOW, False, NOW - 4 * MIN)
    assert verdict.outcome is Outcome.DENY
