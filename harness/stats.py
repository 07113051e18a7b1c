"""The benchmark's statistics: pure functions, tested on their own."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence


def ratio_interval(
    ratios: Sequence[float], resamples: int = 4000, seed: int = 14
) -> tuple[float, float, float]:
    """The geometric mean of per-round ratios and its 95% bootstrap interval.

    Each ratio compares two servers measured within seconds of each other, so what
    the machine did meanwhile cancels out; the rounds vary around the true ratio and
    the interval says how closely they pin it.
    """
    logs = [math.log(r) for r in ratios]
    if not logs:
        raise ValueError("no rounds")
    rng = random.Random(seed)
    means = sorted(
        sum(rng.choices(logs, k=len(logs))) / len(logs) for _ in range(resamples)
    )
    low = means[int(0.025 * resamples)]
    high = means[min(resamples - 1, int(0.975 * resamples))]
    return math.exp(sum(logs) / len(logs)), math.exp(low), math.exp(high)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th quantile (0..1) of values, interpolated between the nearest two."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    position = q * (len(ordered) - 1)
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def histogram_quantile(buckets: Sequence[tuple[float, float]], q: float) -> float:
    """The q-th quantile of a Prometheus histogram's cumulative (le, count) buckets,
    interpolated within its bucket as Prometheus's `histogram_quantile` does. A
    quantile in the +Inf bucket is reported as the largest finite bound."""
    ordered = sorted(buckets)
    total = ordered[-1][1] if ordered else 0
    if not total:
        return math.nan
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower
