"""Ratio intervals, the A/A noise floor and verdicts on known effects (pure and seeded)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from asyncbench.judging.comparison import compare, noise_floor
from asyncbench.judging.intervals import ratio_interval


def noisy(rng, mean, rel_sd, n=2):
    return rng.normal(mean, mean * rel_sd, n)


def test_pure_noise_never_wins_over_fifty_seeds():
    """Everything from one distribution (3 % cell-to-cell spread, two repeats a side, the noise
    floor from an A/A pair): no seed may call a win or a loss (measured rate: ~0.15 % of
    comparisons over 10,000 seeds)."""
    verdicts = []
    for seed in range(50):
        rng = np.random.default_rng(seed)
        floor = noise_floor(noisy(rng, 100, 0.03), noisy(rng, 100, 0.03))
        verdicts.append(compare(noisy(rng, 100, 0.03), noisy(rng, 100, 0.03), floor).verdict)
    assert set(verdicts) == {"no clear difference"}


def test_pure_noise_p99_never_wins_over_fifty_seeds():
    """p99 with 10 % lognormal cell-to-cell noise. With two repeats a side and a four-cell A/A
    pair the method's measured false-verdict rate is about 0.2 % per comparison (10,000 seeds):
    an A/A pair whose cells happen to agree far better than the truth lowers the floor."""
    verdicts = []
    for seed in range(50):
        rng = np.random.default_rng(seed)
        floor = noise_floor(*np.exp(rng.normal(np.log(120), 0.1, (2, 2))))
        a, b = np.exp(rng.normal(np.log(120), 0.1, (2, 2)))
        verdicts.append(compare(a, b, floor, metric="p99", higher_is_better=False).verdict)
    assert set(verdicts) == {"no clear difference"}


def test_a_twenty_percent_effect_with_small_noise_is_detected():
    found = []
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        floor = noise_floor(noisy(rng, 100, 0.01), noisy(rng, 100, 0.01))
        faster = compare(noisy(rng, 120, 0.01), noisy(rng, 100, 0.01), floor)
        found.append(faster.verdict)
        assert faster.low <= faster.ratio <= faster.high
    assert found.count("wins") >= 18
    assert "loses" not in found


def test_the_interval_covers_the_truth_at_two_repeats():
    """Two repeats a side: the percentile bootstrap alone spans only the observed values and
    covers the true ratio about half the time; the interval returned must keep its 95 %."""
    covered = 0
    for seed in range(300):
        rng = np.random.default_rng(1000 + seed)
        interval = ratio_interval(noisy(rng, 100, 0.05), noisy(rng, 100, 0.05), seed=seed,
                                  n_resamples=999)  # fmt: skip
        covered += interval.low <= 1.0 <= interval.high
    assert covered / 300 >= 0.93


def test_lower_p99_wins_and_higher_loses():
    fast = np.array([30.0, 31.0])
    slow = np.array([100.0, 104.0])
    floor = noise_floor([100.0, 101.0], [99.0, 100.5])
    assert compare(fast, slow, floor, metric="p99", higher_is_better=False).verdict == "wins"
    assert compare(slow, fast, floor, metric="p99", higher_is_better=False).verdict == "loses"
    assert compare(slow, fast, floor).verdict == "wins"  # as throughput, higher is better


def test_an_effect_inside_the_noise_floor_is_no_clear_difference():
    """The interval excludes 1 (the repeats are steady) but the A/A pair varied by more."""
    comparison = compare([105.0, 105.1], [100.0, 100.1], 0.08, rel_sd_floor=0.001)
    assert comparison.low > 1
    assert comparison.verdict == "no clear difference"
    assert "within the ±8.0 % noise floor" in comparison.sentence()


def test_sentences_state_the_ratio_and_interval():
    floor = noise_floor([10.0, 10.2], [10.1, 9.9])
    win = compare([152.0, 151.0], [10.0, 10.1], floor, a_label="tornado-coroutine",
                  b_label="flask-blocking")  # fmt: skip
    assert win.verdict == "wins"
    assert win.sentence().startswith(
        "tornado-coroutine wins on rps: 15.1× flask-blocking (95 % CI "
    )
    tie = compare([101.0, 103.0], [100.0, 99.0], floor, a_label="x", b_label="y")
    assert tie.sentence().startswith("no clear difference in rps between x and y: 1.03× (95 % CI")
    assert floor.sentence().startswith("noise floor ±")


@pytest.mark.parametrize(
    ("a", "b", "reason"),
    [
        ([100.0, 100.0], [50.0, 50.0], "identical repeats"),
        ([100.0], [50.0, 51.0], "one repeat"),
        ([math.nan, math.nan], [50.0, 51.0], "no finite value"),
        ([], [50.0], "no finite value"),
        ([0.0, 1.0], [50.0, 51.0], "zero or negative"),
    ],
)
def test_degenerate_inputs_are_undetermined_not_certain(a, b, reason):
    interval = ratio_interval(a, b)
    assert not interval.determined and reason in interval.method
    comparison = compare(a, b, 0.05)
    assert comparison.verdict == "insufficient data"
    assert "insufficient data" in comparison.sentence()


def test_a_spread_floor_gives_degenerate_repeats_an_honest_width():
    identical = ratio_interval([100.0, 100.0], [50.0, 50.0], rel_sd_floor=0.02)
    single = ratio_interval([100.0], [50.0], rel_sd_floor=0.02)
    for interval in (identical, single):
        assert interval.determined
        assert interval.low < 2.0 < interval.high
        assert interval.high / interval.low > 1.05
    assert ratio_interval([100.0, math.nan, 101.0], [50.0, 51.0]).n_a == 2


def test_noise_floor_is_at_least_what_the_pair_showed():
    floor = noise_floor([100.0, 101.0], [110.0, 111.0])
    assert floor.relative >= 0.1
    assert floor.cell_df == 3
    steady = noise_floor([100.0, 100.0], [100.0, 100.0])
    assert math.isnan(steady.relative)
    assert "not measured" in steady.sentence()
    # No floor measured: the interval alone decides, never an exception.
    assert compare([150.0, 151.0], [100.0, 101.0], steady).verdict == "wins"
