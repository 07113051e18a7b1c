"""Sub-window counters against the exact rolling sums they stand for."""

from __future__ import annotations

import random

import pytest

from synapse_tchap_guard.windows import SUBWINDOWS, Window, width_of

HOUR = 3_600_000
START = 1_800_000_000_000


def exact(events: list[tuple[int, int]], now: int, start: int) -> int:
    return sum(units for ts, units in events if start < ts <= now)


@pytest.mark.parametrize("seed", range(20))
def test_an_event_counts_for_at_least_the_span_and_at_most_a_sixtieth_more(
    seed: int,
) -> None:
    rng = random.Random(seed)
    span = rng.choice([1000, 7_000, 60_000, HOUR, 86_400_000])
    origin = START + rng.randrange(span)
    # Events and probes, swept in time order (as a process sees them).
    moments = sorted(
        [(origin + rng.randrange(3 * span), "event") for _ in range(300)]
        + [(origin + rng.randrange(4 * span), "probe") for _ in range(300)]
    )
    window = Window(span, origin)
    events: list[tuple[int, int]] = []
    for now, kind in moments:
        if kind == "event":
            units = rng.randrange(1, 5)
            window.add(now, units)
            events.append((now, units))
            continue
        counted = window.first(now)
        # Never before the span is over; at most a bucket later, a sixtieth of the
        # span when it is a whole number of 60 ms (two, at most, otherwise).
        assert exact(events, now, now - span) <= counted
        assert counted <= exact(events, now, now - window.reach - window.width)
        late = window.reach + window.width - span
        assert late <= (span // 60 if span % 60 == 0 else 2 * window.width)


def test_a_window_holds_at_most_sixty_one_buckets_whatever_the_traffic() -> None:
    window = Window(HOUR)
    for ms in range(0, 10 * HOUR, 1000):
        window.add(START + ms, 1)
        window.advance(START + ms)
        assert len(list(window.buckets())) <= SUBWINDOWS + 1
    assert window.first(START + 10 * HOUR) == HOUR // 1000


def test_the_wait_is_until_enough_of_the_oldest_buckets_have_left() -> None:
    window = Window(HOUR, origin=START)
    width = width_of(HOUR)
    window.add(START, 3)
    window.add(START + 10 * width, 2)
    now = START + 30 * width
    # Under 5 (or 3): the first bucket must leave, a window and a bucket after it
    # began.
    assert window.wait_until_below(now, 0, 5) == START + HOUR + width - now
    assert window.wait_until_below(now, 0, 3) == START + HOUR + width - now
    # Under 2: the second too.
    assert window.wait_until_below(now, 0, 2) == START + 10 * width + HOUR + width - now
    at = START + HOUR + width
    assert window.first(at - 1) == 5 and window.first(at) == 2


def test_what_came_before_the_origin_does_not_count() -> None:
    window = Window(HOUR, origin=START)
    assert window.add(START - 1, 5) is None
    window.add(START, 1)
    assert window.first(START) == 1
    window.restart(START + 10)
    assert window.first(START + 10) == 0
    assert window.add(START + 5, 1) is None


def test_late_arrivals_are_kept_in_order() -> None:
    window = Window(60_000, origin=0)
    window.add(START + 30_000, 1)
    window.add(START + 1_000, 2)  # another process's, a little behind
    assert [start for start, _, _ in window.buckets()] == [
        START + 1_000,
        START + 30_000,
    ]
    assert window.first(START + 61_000 + 1000) == 1  # the older one left first


def test_two_measures_are_kept_apart() -> None:
    window = Window(HOUR)
    window.add(START, 1, 500)
    window.add(START + 1, 1, 700)
    assert window.totals(START + 2) == (2, 1200)
    assert window.wait_until_below(START + 2, 1, 1000) > 0
