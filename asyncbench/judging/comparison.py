"""The A/A noise floor of one metric, and the verdict of one comparison (wins, loses, no clear
difference). Pure: arrays in, dataclasses out; the run's floors per scenario are ``noise.py``.

**Noise floor and verdicts.** The A/A pair's floor is the larger of the difference it showed and
the two-sided 99 % bound its cells' spread allows (a report makes dozens of comparisons). A
verdict calls a win only when the interval excludes 1 *and* the ratio is beyond ``1 + floor``.
Measured on synthetic runs (two repeats a side, four A/A cells, seeded): pure noise gives a false
win or loss in about 0.15 % of comparisons (3 % cell noise; 0.2 % for 10 % lognormal p99 noise);
a 20 % effect is called in 99 % of runs at 1 % cell noise and 85 % at 2 % — with three repeats a
side (and a 3 + 3 A/A pair) in all of 1,000 runs at 2 %. The regression gate is in ``gate.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

from asyncbench.judging.intervals import (
    RatioInterval,
    positive_values,
    ratio_interval,
    statistic_ratio,
)


@dataclass(frozen=True)
class NoiseFloor:
    """What an A/A pair (one configuration measured twice, shuffled like any cell) shows."""

    relative: float  # the difference an identical configuration shows (0.04 = ±4 %); nan: none
    ratio: float  # what this A/A pair measured (mean of one half / mean of the other)
    cell_rel_sd: float  # relative sd of one cell, pooled over every A/A cell
    cell_df: int  # degrees of freedom of cell_rel_sd (A/A cells − 1)

    def sentence(self) -> str:
        if not math.isfinite(self.relative):
            return "noise floor not measured (the A/A pair needs two differing cells)"
        return (
            f"noise floor ±{self.relative * 100:.1f} %: the A/A pair measured "
            f"{format_ratio(self.ratio)}×, one cell varies by {self.cell_rel_sd * 100:.1f} %"
        )


# A report makes dozens of comparisons: at 95 % one identical pair in twenty would cross the floor,
# so the floor is the two-sided 99 % bound (t quantile: the spread comes from a few cells).
NOISE_FLOOR_COVERAGE = 0.99


def noise_floor(aa_a: np.ndarray, aa_b: np.ndarray) -> NoiseFloor:
    """The noise floor of one metric from the repeats of the two halves of an A/A pair.

    ``relative`` is the larger of the difference this pair showed (``max(r, 1/r) − 1``) and the
    difference its cells' spread allows a ratio of that many repeats 99 times in 100
    (``t · sd · √(1/n_a + 1/n_b)``, sd pooled over all A/A cells, t with their degrees of
    freedom): one lucky close pair does not make the floor vanish. nan when fewer than two
    differing cells were measured."""
    a, b = positive_values(aa_a), positive_values(aa_b)
    pooled = np.concatenate([a, b])
    if not len(a) or not len(b) or len(pooled) < 2 or np.ptp(pooled) == 0:
        ratio = statistic_ratio(a, b, "mean") if len(a) and len(b) else math.nan
        return NoiseFloor(math.nan, ratio, math.nan, max(len(pooled) - 1, 0))
    sd = float(np.std(pooled, ddof=1) / np.mean(pooled))
    ratio = statistic_ratio(a, b, "mean")
    quantile = float(stats.t.ppf(0.5 + NOISE_FLOOR_COVERAGE / 2, len(pooled) - 1))
    bound = quantile * sd * math.sqrt(1 / len(a) + 1 / len(b))
    return NoiseFloor(max(max(ratio, 1 / ratio) - 1, bound), ratio, sd, len(pooled) - 1)


Verdict = Literal["wins", "loses", "no clear difference", "insufficient data"]


@dataclass(frozen=True)
class Comparison:
    """``a`` against ``b`` on one metric: the ratio a/b, its interval, and the verdict for ``a``.

    ``wins`` only when the interval excludes 1 on the better side *and* the effect exceeds the
    noise floor; ``loses`` likewise on the worse side; otherwise ``no clear difference`` (or
    ``insufficient data`` when no interval could be determined)."""

    a: str
    b: str
    metric: str
    higher_is_better: bool
    ratio: float
    low: float
    high: float
    confidence: float
    verdict: Verdict
    noise_floor: float  # relative; 0 when none was measured
    n_a: int
    n_b: int
    method: str

    def sentence(self) -> str:
        """One line for the report, e.g. ``tornado-coroutine wins on rps: 15.2× flask-blocking
        (95 % CI 14.1–16.0×)``."""
        ratio, low, high = (format_ratio(v) for v in (self.ratio, self.low, self.high))
        interval = f"{self.confidence * 100:g} % CI {low}–{high}×"
        if self.verdict == "insufficient data":
            return f"{self.metric}: insufficient data to compare {self.a} with {self.b} " \
                   f"({self.method})"  # fmt: skip
        if self.verdict in ("wins", "loses"):
            return f"{self.a} {self.verdict} on {self.metric}: {ratio}× {self.b} ({interval})"
        text = f"no clear difference in {self.metric} between {self.a} and {self.b}: " \
               f"{ratio}× ({interval})"  # fmt: skip
        if self.low > 1 or self.high < 1:
            text += f", within the ±{self.noise_floor * 100:.1f} % noise floor"
        return text


def compare(
    a: np.ndarray,
    b: np.ndarray,
    noise_floor: float | NoiseFloor,
    *,
    a_label: str = "A",
    b_label: str = "B",
    metric: str = "rps",
    higher_is_better: bool = True,
    confidence: float = 0.95,
    rel_sd_floor: float | None = None,
    seed: int = 0,
) -> Comparison:
    """Compare the repeats of ``a`` with those of ``b`` on one metric (rps: higher is better;
    p99: lower is better). ``noise_floor`` is relative (0.04 = 4 %), nan or 0 when none was
    measured (the interval alone then decides). A ``NoiseFloor`` also lends its cells' spread
    (with its degrees of freedom) as the least spread of one repeat; ``rel_sd_floor`` overrides
    that with a known value (e.g. the cells' own relative standard errors)."""
    floor = noise_floor.relative if isinstance(noise_floor, NoiseFloor) else float(noise_floor)
    floor = floor if math.isfinite(floor) and floor > 0 else 0.0
    sd, df = 0.0, math.inf
    if rel_sd_floor is not None:
        sd = rel_sd_floor
    elif isinstance(noise_floor, NoiseFloor) and math.isfinite(noise_floor.cell_rel_sd):
        sd, df = noise_floor.cell_rel_sd, noise_floor.cell_df
    iv = ratio_interval(a, b, confidence=confidence, rel_sd_floor=sd, floor_df=df, seed=seed)
    return Comparison(
        a=a_label, b=b_label, metric=metric, higher_is_better=higher_is_better, ratio=iv.ratio,
        low=iv.low, high=iv.high, confidence=confidence,
        verdict=_verdict(iv, floor, higher_is_better), noise_floor=floor, n_a=iv.n_a,
        n_b=iv.n_b, method=iv.method,
    )  # fmt: skip


def _verdict(iv: RatioInterval, floor: float, higher_is_better: bool) -> Verdict:
    if not iv.determined:
        return "insufficient data"
    # Orient so that above 1 means "a is better".
    ratio, low, high = (iv.ratio, iv.low, iv.high) if higher_is_better else (
        1 / iv.ratio, 1 / iv.high, 1 / iv.low)  # fmt: skip
    if low > 1 and ratio > 1 + floor:
        return "wins"
    if high < 1 and 1 / ratio > 1 + floor:
        return "loses"
    return "no clear difference"


def format_ratio(value: float) -> str:
    """Three significant digits, keeping trailing zeros: 15.2, 1.03, 0.950, 16.0."""
    if not math.isfinite(value):
        return "?"
    return f"{value:#.3g}".rstrip(".")
