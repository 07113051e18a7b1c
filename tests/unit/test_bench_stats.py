"""The benchmark's statistics (the benchmark itself is not a test: `scripts/bench`)."""

from __future__ import annotations

import math

import pytest

from harness.bench.profile import shares
from harness.stats import histogram_quantile, percentile, ratio_interval


def test_the_ratio_is_the_geometric_mean_and_its_interval_narrows_with_rounds() -> None:
    estimate, low, high = ratio_interval([0.5, 2.0])
    assert estimate == pytest.approx(1.0)
    assert low < 1.0 < high
    noisy = [1.0 + (0.02 if i % 2 else -0.02) for i in range(10)]
    _, low10, high10 = ratio_interval(noisy)
    _, low40, high40 = ratio_interval(noisy * 4)
    assert high40 - low40 < high10 - low10
    assert low40 < 1.0 < high40
    assert ratio_interval([0.97] * 8) == pytest.approx((0.97, 0.97, 0.97))


def test_percentiles_interpolate_between_the_nearest_values() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == pytest.approx(50.5)
    assert percentile(values, 0.99) == pytest.approx(99.01)
    assert percentile([3.0], 0.99) == 3.0


def test_a_histograms_quantile_interpolates_within_its_bucket() -> None:
    buckets = [(1e-5, 0.0), (2e-5, 50.0), (5e-5, 100.0), (math.inf, 100.0)]
    assert histogram_quantile(buckets, 0.5) == pytest.approx(2e-5)
    assert histogram_quantile(buckets, 0.75) == pytest.approx(3.5e-5)
    assert histogram_quantile([*buckets, (1.0, 100.0)], 0.99) < 5e-5 + 1e-12
    assert histogram_quantile([(1e-5, 0.0), (math.inf, 4.0)], 0.5) == 1e-5
    assert math.isnan(histogram_quantile([(1e-5, 0.0), (math.inf, 0.0)], 0.5))


def test_a_profile_counts_the_guard_own_work_and_not_synapse_inside_its_wrapper() -> (
    None
):
    raw = "\n".join(
        [
            # Synapse alone.
            "render (synapse/http/server.py:1);handle (synapse/rest/client/x.py:2) 90",
            # The guard's own code, and the standard library it calls.
            "auth (synapse/api/auth.py:1);check (synapse_tchap_guard/request_gate.py:5)"
            ";match (re/__init__.py:3) 6",
            # Database work the guard runs, through Synapse's pool: the guard's.
            "flush (synapse_tchap_guard/live_counts.py:9)"
            ";runInteraction (synapse/storage/database.py:7) 3",
            # Synapse ending its response inside the guard's wrapper: Synapse's.
            "finished_processing (synapse_tchap_guard/_synapse_internals.py:434)"
            ";_finished_processing (synapse/http/site.py:640) 1",
            "",  # py-spy ends with an empty line
        ]
    )
    result = shares(raw)
    assert (result["samples"], result["guard_samples"]) == (100, 9)
    assert result["share"] == 0.09
    assert 0.05 < result["ci"] < 0.06  # 1.96 * sqrt(0.09 * 0.91 / 100)
