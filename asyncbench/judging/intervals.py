"""Ratios between two sets of repeats, with honest intervals. Pure: arrays in, dataclasses out.

**Ratios with honest intervals from 2-5 repeats.** ``ratio_interval`` takes the repeat as the
unit (two independent samples) and returns the union of two intervals on the log ratio: scipy's
percentile bootstrap (it keeps any skew, informative from about five repeats) and a Welch
t-interval (delta method, Welch-Satterthwaite degrees of freedom). With two repeats per side
the bootstrap alone cannot reach beyond the observed range and covers the truth only about half
the time; the t quantile with ~2 degrees of freedom (4.3 instead of 1.96) is what honesty costs.
No repeat is assumed steadier than ``rel_sd_floor`` (the A/A cells' spread, or the cells' own
standard errors), so identical repeats never produce a zero-width interval; without any floor,
identical repeats or a single repeat give an *undetermined* interval, never a false certainty.

"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

Statistic = Literal["mean", "median"]
_STATISTICS = {"mean": np.mean, "median": np.median}
_RNG_KEYWORD = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"


@dataclass(frozen=True)
class RatioInterval:
    """``statistic(a) / statistic(b)`` with a confidence interval, repeats as the unit."""

    ratio: float
    low: float  # nan when undetermined
    high: float
    confidence: float
    n_a: int
    n_b: int
    method: str  # how the interval was obtained, or why it could not be

    @property
    def determined(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)


def ratio_interval(
    a: np.ndarray,
    b: np.ndarray,
    *,
    statistic: Statistic = "mean",
    confidence: float = 0.95,
    rel_sd_floor: float = 0.0,
    floor_df: float = math.inf,
    seed: int = 0,
    n_resamples: int = 4999,
) -> RatioInterval:
    """The ratio of ``a`` to ``b`` (e.g. one model's repeats to another's) with its interval:
    the union of the percentile bootstrap and a Welch t-interval, both on the log ratio (see the
    module docstring). Non-finite values (failed cells) are dropped.

    ``rel_sd_floor`` is the least relative spread assumed for one repeat (the A/A cells', or the
    cells' own standard errors) and ``floor_df`` the degrees of freedom it was estimated with
    (infinite for a known value): a side whose spread comes from the floor carries its degrees of
    freedom instead of its own."""
    a, b = positive_values(a), positive_values(b)
    undetermined = _undetermined_reason(a, b, rel_sd_floor)
    ratio = statistic_ratio(a, b, statistic) if len(a) and len(b) else math.nan
    if undetermined:
        return RatioInterval(ratio, math.nan, math.nan, confidence, len(a), len(b), undetermined)
    centre = math.log(ratio)
    half, df = _welch_half_width(a, b, confidence, rel_sd_floor, floor_df)
    low, high = centre - half, centre + half
    method = f"Welch t (df {df:.1f})"
    boot = _bootstrap_log_ratio(a, b, statistic, confidence, seed, n_resamples)
    if boot is not None:
        low, high = min(low, boot[0]), max(high, boot[1])
        method += " ∪ percentile bootstrap"
    method += f", repeats as the unit ({len(a)} vs {len(b)})"
    return RatioInterval(ratio, math.exp(low), math.exp(high), confidence, len(a), len(b), method)


def positive_values(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return values[np.isfinite(values)]


def _undetermined_reason(a: np.ndarray, b: np.ndarray, floor: float) -> str:
    if not len(a) or not len(b):
        return "undetermined: no finite value on one side"
    if (a <= 0).any() or (b <= 0).any():
        return "undetermined: a value is zero or negative"
    if floor > 0:
        return ""
    if len(a) < 2 or len(b) < 2:
        return "undetermined: one repeat on a side and no noise floor to bound its spread"
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return "undetermined: identical repeats and no noise floor to bound their spread"
    return ""


def statistic_ratio(a: np.ndarray, b: np.ndarray, statistic: Statistic) -> float:
    f = _STATISTICS[statistic]
    return float(f(a) / f(b))


def _welch_half_width(
    a: np.ndarray, b: np.ndarray, confidence: float, floor: float, floor_df: float
) -> tuple[float, float]:
    """Half-width of the t-interval on log(mean a / mean b), and its degrees of freedom.

    Each side's relative variance is its own or the floor's, whichever is larger, with the
    degrees of freedom of the one used (Welch-Satterthwaite). When both sides use the floor they
    share one estimate, so its degrees of freedom count once."""
    own = [float(np.var(x, ddof=1) / np.mean(x) ** 2) if len(x) > 1 else 0.0 for x in (a, b)]
    sizes = [len(a), len(b)]
    if all(v <= floor**2 for v in own):
        var, df = floor**2 * (1 / sizes[0] + 1 / sizes[1]), floor_df
    else:
        parts = [max(v, floor**2) / n for v, n in zip(own, sizes, strict=True)]
        dfs = [n - 1 if v > floor**2 else floor_df for v, n in zip(own, sizes, strict=True)]
        var = sum(parts)
        df = var**2 / sum(p**2 / d for p, d in zip(parts, dfs, strict=True))
    quantile = float(stats.t.ppf(0.5 + confidence / 2, df))
    return quantile * math.sqrt(var), df


def _bootstrap_log_ratio(
    a: np.ndarray, b: np.ndarray, statistic: Statistic, confidence: float, seed: int, n: int
) -> tuple[float, float] | None:
    """scipy's percentile bootstrap of the log ratio, resampling repeats within each side; None
    when it cannot say anything (a side with one repeat, or nothing varies)."""
    if len(a) < 2 or len(b) < 2 or (np.ptp(a) == 0 and np.ptp(b) == 0):
        return None
    f = _STATISTICS[statistic]

    def log_ratio(x, y, axis):
        return np.log(f(x, axis=axis)) - np.log(f(y, axis=axis))

    result = stats.bootstrap(
        (a, b), log_ratio, n_resamples=n, vectorized=True, paired=False,
        confidence_level=confidence, method="percentile",
        **{_RNG_KEYWORD: np.random.default_rng(seed)},
    )  # fmt: skip
    return float(result.confidence_interval.low), float(result.confidence_interval.high)
