"""The decision logic alone: windows, limits, bytes, escalation, modes."""

from __future__ import annotations

from synapse_tchap_guard import policy
from synapse_tchap_guard.policy import (
    AccountMarks,
    Counting,
    Decision,
    History,
    Limit,
    Measure,
    Quota,
    Record,
    StepUp,
    Threshold,
    Verdict,
)

MIN = 60_000
HOUR = 60 * MIN
NOW = 10 * HOUR


def served(*ages_ms: int, size: int = 0) -> list[Record]:
    return [Record(ts=NOW - age, served=1, bytes=size) for age in ages_ms]


def refused(*ages_ms: int) -> list[Record]:
    return [Record(ts=NOW - age, served=0, refused=1) for age in ages_ms]


def attempt(ts: int, was_served: bool, size: int = 0) -> Record:
    return Record(
        ts, 1, int(was_served), size if was_served else 0, int(not was_served)
    )


def test_under_every_limit_the_attempt_is_allowed() -> None:
    quota = Quota(limits=(Limit(HOUR, max=3),))
    assert (
        policy.evaluate(quota, History.of(served(1000, 2000)), NOW).decision
        is Decision.ALLOW
    )


def test_a_full_window_denies_until_its_oldest_attempt_leaves() -> None:
    quota = Quota(limits=(Limit(HOUR, max=3),))
    verdict = policy.evaluate(
        quota, History.of(served(10 * MIN, 20 * MIN, 30 * MIN)), NOW
    )
    assert verdict.decision is Decision.DENY
    assert verdict.rule == Limit(HOUR, max=3)
    assert verdict.count == 3
    assert verdict.rule_max == 3
    assert verdict.retry_after_ms == 30 * MIN  # the 30-minute-old attempt leaves first


def test_an_attempt_exactly_one_window_old_has_left_it() -> None:
    quota = Quota(limits=(Limit(HOUR, max=1),))
    assert (
        policy.evaluate(quota, History.of(served(HOUR)), NOW).decision is Decision.ALLOW
    )
    assert (
        policy.evaluate(quota, History.of(served(HOUR - 1)), NOW).decision
        is Decision.DENY
    )


def test_refused_attempts_do_not_fill_the_limits() -> None:
    quota = Quota(limits=(Limit(HOUR, max=2),))
    history = served(5 * MIN) + refused(1 * MIN, 2 * MIN, 3 * MIN)
    assert policy.evaluate(quota, History.of(history), NOW).decision is Decision.ALLOW


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
        policy.evaluate(quota, History.of(served(5 * MIN, size=999)), NOW).decision
        is Decision.ALLOW
    )
    verdict = policy.evaluate(
        quota, History.of(served(30 * MIN, 5 * MIN, size=500)), NOW
    )
    assert verdict.decision is Decision.DENY
    assert verdict.measure is Measure.BYTES
    assert verdict.count == 1000
    assert verdict.rule_max == 1000
    assert verdict.retry_after_ms == 30 * MIN  # dropping the oldest 500 bytes suffices


def test_bytes_wait_until_enough_bytes_leave() -> None:
    quota = Quota(limits=(Limit(HOUR, max_bytes=1000),))
    history = [
        attempt(NOW - 50 * MIN, True, 100),
        attempt(NOW - 40 * MIN, True, 100),
        attempt(NOW - 30 * MIN, True, 900),
    ]
    # 1100 served: dropping 100 leaves 1000 (not below), dropping 200 leaves 900.
    assert policy.evaluate(quota, History.of(history), NOW).retry_after_ms == 20 * MIN


def test_the_attempt_that_reaches_block_at_blocks() -> None:
    quota = Quota(limits=(Limit(HOUR, max=1),), block_at=Threshold(HOUR, 4))
    history = served(10 * MIN) + refused(3 * MIN, 2 * MIN)
    verdict = policy.evaluate(quota, History.of(history), NOW)
    assert verdict.decision is Decision.BLOCK
    assert verdict.rule == Threshold(HOUR, 4)
    assert verdict.count == 4
    assert (
        policy.evaluate(quota, History.of(history[:2]), NOW).decision is Decision.DENY
    )


def test_attempts_before_the_last_block_do_not_count_towards_the_next() -> None:
    quota = Quota(block_at=Threshold(HOUR, 3))
    history = served(30 * MIN, 20 * MIN, 10 * MIN)
    assert policy.evaluate(quota, History.of(history), NOW).decision is Decision.BLOCK
    since_block = NOW - 15 * MIN
    verdict = policy.evaluate(
        quota, History.of(history), NOW, AccountMarks(escalation_reset_ts=since_block)
    )
    assert verdict.decision is Decision.ALLOW


def test_monitor_mode_turns_refusals_into_would_be_refusals() -> None:
    deny = Verdict(Decision.DENY)
    block = Verdict(Decision.BLOCK)
    assert policy.ALLOW.under(enforcing=False).decision is Decision.ALLOW
    assert deny.under(enforcing=True).decision is Decision.DENY
    assert deny.under(enforcing=False).decision is Decision.WOULD_DENY
    assert block.under(enforcing=True).decision is Decision.BLOCK
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
    history = served(10_000, 20 * MIN, size=300) + refused(5_000, 2 * HOUR)
    report = policy.usage(quota, History.of(history), NOW)
    assert [(u.rule, u.count, u.bytes) for u in report] == [
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
            attempt(40, True, 100),
            attempt(10, True, 5),
            attempt(30, False, 7),
            attempt(20, True),
        ]
    )
    assert history.attempts_after(0) == 4
    assert history.attempts_after(20) == 2
    assert history.served_after(0) == 3
    assert history.served_after(10) == 2
    assert history.refused_after(0) == 1
    assert history.bytes_after(0) == 105  # the refused attempt's bytes never count
    assert history.bytes_after(10) == 100
    assert [r.ts for r in history.records_after(0)] == [10, 20, 30, 40]


def test_history_takes_late_and_out_of_order_records() -> None:
    history = History()
    history.add(Record(100))
    history.add(Record(300))
    history.add(Record(200, served=0, refused=1))  # a clock step back, or a merge
    history.add(Record(300, attempts=0, served=0, bytes=50))
    history.add(Record(150, attempts=0, served=0, bytes=25))  # bytes that came late
    assert history.attempts_after(150) == 2
    assert history.served_after(150) == 1
    assert history.bytes_after(100) == 75
    assert history.bytes_after(200) == 50
    history.add(Record(400))  # and appends go on with the totals right
    assert history.served_after(0) == 3


def test_a_failure_after_a_request_was_allowed_gives_back_what_it_was_served() -> None:
    quota = Quota(limits=(Limit(HOUR, max=2),))
    history = History.of(served(20 * MIN, 10 * MIN))
    assert policy.evaluate(quota, history, NOW).decision is Decision.DENY
    # The second one failed: a line at its own time takes back its unit, not its
    # attempt (which still counts towards a block).
    history.add(Record(NOW - 10 * MIN, attempts=0, served=-1))
    assert history.served_after(0) == 1
    assert history.attempts_after(0) == 2
    assert policy.evaluate(quota, history, NOW).decision is Decision.ALLOW


def test_a_request_may_weigh_several_units() -> None:
    quota = Quota(limits=(Limit(HOUR, max=100),))
    history = History.of(
        [Record(NOW - 30 * MIN, served=60), Record(NOW - 20 * MIN, served=50)]
    )
    verdict = policy.evaluate(quota, history, NOW)
    assert verdict.decision is Decision.DENY
    assert verdict.count == 110
    # Going under 100 takes the first 60 leaving the window.
    assert verdict.retry_after_ms == 30 * MIN


def test_a_limit_on_both_count_and_bytes_gives_the_wait_after_which_both_pass() -> None:
    # Three served attempts fill the count; their 100 bytes also fill the bytes.
    quota = Quota(limits=(Limit(HOUR, max=3, max_bytes=100),))
    history = History.of(
        [
            attempt(NOW - 56 * MIN, True, 0),
            attempt(NOW - 6 * MIN, True, 100),
            attempt(NOW - 1 * MIN, True, 0),
        ]
    )
    verdict = policy.evaluate(quota, history, NOW)
    # The count frees up in 4 minutes, the bytes only in 54: the answer is 54.
    assert verdict.measure is Measure.BYTES
    assert verdict.retry_after_ms == 54 * MIN


def test_history_forgets_what_no_window_needs() -> None:
    history = History.of(
        [
            attempt(10, True, 5),
            attempt(20, False),
            attempt(30, True, 7),
            attempt(40, True),
        ]
    )
    history.forget_before(20)
    assert len(history) == 2
    assert [r.ts for r in history.records_after(0)] == [30, 40]
    assert history.served_after(0) == 2 and history.bytes_after(0) == 7
    history.add(Record(50))
    assert history.served_after(35) == 2


DIRECTORY = Quota(
    limits=(Limit(HOUR, max=3),),
    step_up=StepUp(HOUR, (Limit(HOUR, max=5),)),
    block_at=Threshold(HOUR, 3, Counting.REFUSALS),
)
STEPPED_UP = AccountMarks(step_up_ts=NOW - MIN, step_up_until_ts=NOW + MIN)


def test_discoveries_are_free_up_to_the_budget_then_refused_for_a_step_up() -> None:
    history = History.of(served(30 * MIN, 20 * MIN))
    assert policy.evaluate(DIRECTORY, history, NOW).decision is Decision.ALLOW
    history.add(Record(NOW - 10 * MIN))
    verdict = policy.evaluate(DIRECTORY, history, NOW)
    assert verdict.decision is Decision.DENY
    assert verdict.step_up
    assert verdict.rule == Limit(HOUR, max=3)
    assert verdict.retry_after_ms == 30 * MIN


def test_a_step_up_lifts_the_budget() -> None:
    history = History.of(served(40 * MIN, 30 * MIN, 20 * MIN))
    assert (
        policy.evaluate(DIRECTORY, history, NOW, STEPPED_UP).decision is Decision.ALLOW
    )
    history.add(Record(NOW - 10 * MIN))
    history.add(Record(NOW - 5 * MIN))
    verdict = policy.evaluate(DIRECTORY, history, NOW, STEPPED_UP)
    assert verdict.decision is Decision.DENY
    assert not verdict.step_up  # stepping up again would not help
    assert verdict.rule == Limit(HOUR, max=5)


def test_a_step_up_that_ran_out_gives_the_free_budget_back() -> None:
    expired = AccountMarks(step_up_ts=NOW - 2 * HOUR, step_up_until_ts=NOW - HOUR)
    history = History.of(served(40 * MIN, 30 * MIN, 20 * MIN))
    assert policy.evaluate(DIRECTORY, history, NOW, expired).step_up


def test_refused_requests_past_the_budget_escalate_to_a_block() -> None:
    history = History.of(served(40 * MIN, 30 * MIN, 20 * MIN) + refused(5 * MIN))
    assert policy.evaluate(DIRECTORY, history, NOW).decision is Decision.DENY
    history.add(Record(NOW - 4 * MIN, served=0, refused=1))
    verdict = policy.evaluate(DIRECTORY, history, NOW)
    assert verdict.decision is Decision.BLOCK
    assert (verdict.rule, verdict.count) == (Threshold(HOUR, 3, Counting.REFUSALS), 3)
    assert verdict.measure is Measure.REFUSALS
    # ... counting only the refusals after the last block.
    after_block = AccountMarks(escalation_reset_ts=NOW - 4 * MIN)
    verdict = policy.evaluate(DIRECTORY, history, NOW, after_block)
    assert verdict.decision is Decision.DENY


def test_usage_of_a_threshold_counting_refusals_reports_refusals() -> None:
    history = History.of(served(40 * MIN) + refused(5 * MIN, 4 * MIN))
    report = policy.usage(DIRECTORY, history, NOW)
    assert [(u.rule, u.count) for u in report] == [
        (Limit(HOUR, max=3), 1),
        (Threshold(HOUR, 3, Counting.REFUSALS), 2),
    ]


def test_a_refusal_repeated_for_the_same_target_never_counts_towards_a_block() -> None:
    quota = Quota(limits=(Limit(HOUR, max=1),), block_at=Threshold(HOUR, 3))
    history = History.of(served(30 * MIN) + refused(20 * MIN))
    # A third request would block the account, unless it repeats the refused one.
    assert policy.evaluate(quota, history, NOW).decision is Decision.BLOCK
    verdict = policy.evaluate(quota, history, NOW, repeat=True)
    assert verdict.decision is Decision.DENY
    # A repeat that would be served counts as any request does.
    allowed = Quota(limits=(Limit(HOUR, max=5),), block_at=Threshold(HOUR, 3))
    assert (
        policy.evaluate(allowed, history, NOW, repeat=True).decision is Decision.BLOCK
    )


def test_a_request_weighing_more_than_allowed_at_once_is_refused_outright() -> None:
    quota = Quota(limits=(Limit(HOUR, max=100),), max_per_request=50)
    verdict = policy.evaluate(quota, History(), NOW, units=60)
    assert verdict.decision is Decision.DENY
    assert (verdict.count, verdict.rule_max) == (60, 50)
    assert policy.evaluate(quota, History(), NOW, units=50).decision is Decision.ALLOW
