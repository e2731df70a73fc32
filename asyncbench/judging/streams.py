"""One stream of events read as cycles: its rate over a window, its period and regularity, and
the standard error of that rate (batch means of consecutive gaps, or the delta method).
``throughput`` says which streams a cell is read from, and why."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

BATCH_GAPS = 10  # at least this many consecutive gaps per batch


BATCHES = (5, 20)  # at least 5 batches (else the delta method), at most 20


REGULAR = 0.5  # spans of k gaps at most half as variable as a Poisson stream's: regular


MIN_SPANS = 20  # a lag is compared with independent users' on at least this many spans


MIN_PERIODS = 3  # a period is looked for over at least this many repeats


# Gaps this many times as variable as a Poisson stream's, with no period found, are bursts of
# users that started together (1,024 users of a 1 s wait: 18.6); batch means of consecutive gaps
# cannot read them (a batch inside a burst and one across the pause differ a hundredfold).
CLUSTERED = 5.0


def gaps_touching(done: np.ndarray, w0: float, w1: float) -> np.ndarray:
    """Gaps between consecutive (sorted) completions that overlap the window."""
    return np.diff(done)[(done[1:] > w0) & (done[:-1] < w1)]


def completion_rates(
    done: np.ndarray, w0: float, w1: float, lag: int, *, delta_fallback: bool = False
) -> StreamRates | None:
    """The sorted completions read as ``lag`` interleaved streams (every ``lag``-th completion;
    one stream when ``lag`` is 1), each cycle a span of ``lag`` gaps, with the standard error
    from batch means of consecutive gaps in batches of whole spans. With too few spans for batch
    means: the sum of the streams' delta-method errors (a bound whatever their correlation), or
    for one stream None, unless ``delta_fallback`` (then the delta method's error stays)."""
    index = np.arange(len(done))
    following = np.r_[done[lag:], np.full(min(lag, len(done)), np.nan)]
    rate = stream_rates(index % lag, done, following, w0, w1)
    rel_error = batch_means_rel_error(gaps_touching(done, w0, w1), lag)
    if rel_error is not None:
        return replace(rate, stderr=rate.rps * rel_error)
    if lag > 1:
        return replace(rate, stderr=rate.stderr_bound)
    return rate if delta_fallback else None


def batch_means_rel_error(gaps: np.ndarray, unit: int = 1) -> float | None:
    """Relative standard error of the mean gap from batch means of consecutive gaps, each batch
    whole spans of ``unit`` gaps (a trailing partial span is left out); None with too few."""
    units = len(gaps) // unit
    batches = min(BATCHES[1], units // math.ceil(BATCH_GAPS / unit))
    if batches < BATCHES[0]:
        return None
    spans = gaps[: units * unit].reshape(units, unit).sum(axis=1)
    means = np.array([part.mean() for part in np.array_split(spans, batches)]) / unit
    return float(np.std(means, ddof=1) / math.sqrt(batches) / (spans.mean() / unit))


def lag_regularity(gaps: np.ndarray, max_lag: int) -> np.ndarray:
    """For each lag ``k`` (index; 0 unused) up to ``max_lag``, the CV of the spans of ``k``
    consecutive gaps times √k: 1 for a Poisson stream, 0 for a stream that repeats every ``k``
    gaps."""
    total = np.r_[0.0, np.cumsum(gaps)]
    ratio = np.full(max(max_lag, 0) + 1, np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):  # spans of tied completions: nan
        for k in range(1, len(ratio)):
            spans = total[k:] - total[:-k]
            ratio[k] = np.std(spans) / spans.mean() * math.sqrt(k)
    return ratio


def completions_lag(regularity: np.ndarray, cycles: StreamRates, gaps: int) -> int | None:
    """None when the users pace themselves (their cycles' delta method holds); else the lag to
    read the completions with: their period, or 1.

    A user's regularity is its cycle-time CV × √users (1 for a cycle of ``users`` completions
    of a Poisson stream). The users pace themselves when they are regular (below ``REGULAR``)
    and the completions' period is over half the users, judged on ``MIN_SPANS`` spans: a queue's
    slots repeat within their own lag. With no period (few gaps, or noise), only very regular
    users (below half ``REGULAR``) do, and only if the completions at half the users' lag (or
    the longest judged) are nearer to independent users' random phases (``√(1 − k/users)``)
    than to the users' own regularity, which a queue's slots would already show."""
    users = cycles.streams
    own = cycles.cv * math.sqrt(users)
    period = find_period(regularity, gaps)
    judged = gaps // MIN_SPANS
    if period is not None and period <= users // 2:
        return period
    if period is not None and period <= judged:
        return None if own < REGULAR else period
    lag = min(users // 2, judged, len(regularity) - 1)
    if own < REGULAR / 2 and (lag < 1 or regularity[lag] > (math.sqrt(1 - lag / users) + own) / 2):
        return None
    if len(regularity) > 1 and regularity[1] > CLUSTERED:
        return None  # bursts with no period: users started together, not a queue's slots
    return 1


def find_period(regularity: np.ndarray, gaps: int) -> int | None:
    """The shortest regular lag about as regular as the most regular one (within a factor 2:
    the period, not a multiple of it); None when no lag is regular. Regular is below
    ``REGULAR``, and stricter for a lag with fewer than ``MIN_SPANS`` disjoint spans among the
    ``gaps`` (× √(spans / MIN_SPANS)), whose CV is less certain."""
    lags = np.arange(len(regularity))
    bound = REGULAR * np.sqrt(np.clip(gaps / np.maximum(lags, 1) / MIN_SPANS, 0, 1))
    regular = regularity < bound
    if not regular.any():
        return None
    best = regularity[regular].min()
    return int(np.flatnonzero(regular & (regularity <= 2 * best + 1e-9))[0])


@dataclass(frozen=True)
class StreamRates:
    rps: float
    stderr: float
    cycles: float
    streams: int
    cv: float = math.nan  # cycle-time sd (pooled within streams) / mean cycle
    stderr_bound: float = math.nan  # sum of the streams' errors: holds whatever their correlation


def stream_rates(
    stream: np.ndarray, begin: np.ndarray, end: np.ndarray, w0: float, w1: float
) -> StreamRates:
    """Sum over streams of ``(1/T) ∫ dt / C(t)``, with the delta-method standard error.

    ``begin``/``end`` are each stream's contiguous cycles (``end`` nan when unknown). An edge of
    the window no known cycle covers (samples filtered to the window, or a request abandoned at
    the stop) is a censored cycle: its length is at least the uncovered part, and is taken as the
    larger of that and the stream's mean cycle, so it adds at most one cycle — no more than the
    count would.
    """
    span = w1 - w0
    length = end - begin
    known = np.isfinite(length) & (length > 0)
    stream, begin, end, length = stream[known], begin[known], end[known], length[known]
    inside = np.clip(np.minimum(end, w1) - np.maximum(begin, w0), 0, None)
    touch = inside > 0
    if not touch.any():
        return StreamRates(math.nan, math.nan, 0.0, 0)
    ids, index = np.unique(stream[touch], return_inverse=True)
    k = np.bincount(index).astype(float)
    cycles = np.bincount(index, inside[touch] / length[touch])
    mean_cycle = np.bincount(index, length[touch]) / k
    first = np.full(len(ids), np.inf)
    last = np.full(len(ids), -np.inf)
    np.minimum.at(first, index, begin[touch])
    np.maximum.at(last, index, end[touch])
    cycles += censored(first - w0, mean_cycle) + censored(w1 - last, mean_cycle)
    deviation = length[touch] - mean_cycle[index]
    sd = pooled_sd(deviation, k, length[touch])
    rate = cycles / span
    stderr = rate * (sd / mean_cycle) / np.sqrt(np.maximum(cycles, 1.0))
    return StreamRates(
        rps=float(rate.sum()), stderr=float(np.sqrt((stderr**2).sum())),
        cycles=float(cycles.sum()), streams=len(ids), cv=sd / float(length[touch].mean()),
        stderr_bound=float(stderr.sum()),
    )  # fmt: skip


def censored(uncovered: np.ndarray, mean_cycle: np.ndarray) -> np.ndarray:
    gap = np.clip(uncovered, 0, None)
    return np.where(gap > 0, gap / np.maximum(gap, mean_cycle), 0.0)


def pooled_sd(deviation: np.ndarray, per_stream: np.ndarray, lengths: np.ndarray) -> float:
    """Cycle-time sd pooled within streams; across all cycles when no stream has two."""
    dof = float((per_stream - 1).sum())
    if dof > 0:
        return math.sqrt(float((deviation**2).sum()) / dof)
    return float(np.std(lengths, ddof=1)) if len(lengths) > 1 else math.nan


def client_gap(users: np.ndarray, same_next: np.ndarray, gaps: np.ndarray) -> np.ndarray:
    """Per row, its user's median gap between a completion and the next start (the client's own
    time); the median over all users for a user with one request; 0 when nobody has two."""
    frame = pd.DataFrame({"user": users, "gap": np.where(same_next, gaps, np.nan)})
    by_user = frame.groupby("user")["gap"].transform("median")
    overall = frame["gap"].median()
    filled = by_user.fillna(0.0 if math.isnan(overall) else overall).to_numpy()
    return np.clip(filled, 0, None)


def float_arrays(start_time: np.ndarray, latency_ms: np.ndarray) -> tuple[np.ndarray, ...]:
    start, latency = np.asarray(start_time, dtype=float), np.asarray(latency_ms, dtype=float)
    same_length(start, latency)
    return start, latency


def same_length(a: np.ndarray, b: np.ndarray) -> None:
    if len(a) != len(b):
        raise ValueError(f"sample arrays differ in length: {len(a)} and {len(b)}")


def window_length(window_start: float, window_end: float) -> float:
    span = float(window_end) - float(window_start)
    if not span > 0:
        raise ValueError(f"empty window: start {window_start} is not before end {window_end}")
    return span
