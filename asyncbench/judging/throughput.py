"""Throughput without quantisation, and its standard error: the estimators every cell's req/s
comes from. Pure: numpy/pandas arrays in, frozen dataclasses out.

**Throughput without quantisation.** Counting the requests that started in a window of length T
is off by up to one request per user (the phase of each user's cycle against the window edges).
The estimators here read each *stream* of events instead — one Locust user's request starts, or
the merged completions (or every ``k``-th of them, as ``k`` interleaved streams) — as a sequence
of cycles ``[t_i, t_i+1)`` and compute ``(1/T) ∫_window dt / C(t)``, with ``C(t)`` the length of
the cycle in progress at time ``t``. Cycles cut by a window edge count by the fraction inside it.
For a stationary renewal process this is unbiased for the rate ``1/E[C]``: the cycle covering a
point is length-biased (density ``c f(c) / E[C]``), so ``E[1/C(t)] = 1/E[C]`` exactly (the
same Palm argument holds for any stationary stream, and every ``k``-th completion from a random
offset is one). For a regular schedule it is exact, where the count is off by the phase. Pass
*all* of a cell's samples (warm-up and the requests after the window too): the cycles that
straddle the edges come from them.

**Its standard error.** One stream's rate ``r`` over ``n`` cycles of coefficient of variation
``CV`` has ``SE(r) = r · CV / √n`` (delta method, renewal CLT: ``Var N(T) ≈ T σ² / μ³``). A
closed loop is read one of four ways, and which one is what keeps that error honest:

- *Users pacing themselves* (nothing to share, users independent): each user's cycles, the
  cycle-time variance pooled *within* users (users differ systematically, e.g. on an unevenly
  balanced forked server; that is not sampling noise), users added as independent —
  ``closed-loop cycles``.
- *Users queueing for a few slots* (a blocking model's workers) are not independent: one user's
  long wait is another's short one, and a slow slot slows them all, so adding them as
  independent is wrong both ways. On a simulated FIFO queue (64 users, 4 slots of 100 ± 2 ms)
  the cycles stated 0.04 % for a true spread of 0.17 % (errors up to 12 SE); with exponential
  service they covered the rate in 40 % of seeds; with 1,024 users on 64 threads of 1 s, users
  answered once in 16 s and censored at the stop, they overstated it by 20 %. These cells are
  read from their merged completions — the slots' departures — as ``k`` interleaved streams,
  ``k`` their period: the shortest lag whose spans of ``k`` gaps are regular (CV × √k, 1 for a
  Poisson stream, below ½; stricter with under 20 spans), else 1. Slots that start in step and
  repeat every ``k`` completions are then exact, where one stream is cut unevenly by the edges.
  The error is batch means of consecutive gaps in batches of whole periods (≥ 10 gaps, 5-20
  batches), which sees both the slots' regularity and their common noise; with fewer than five
  periods, the sum of the ``k`` streams' delta-method errors (a bound, whatever their
  correlation) — ``closed-loop completions``. Where the caller knows the users outnumber the
  slots (``slot_use="queued"``), the completions are read even in bursts with no period found
  (at their most regular lag, ``_queue_lag``): 1,024 users on flask-threaded's 4 × 64 threads
  of 1 s finished a burst every 247 completions (as regular as 0.6, over the stricter bound for
  spans that long), and their censored cycles said 263.8 req/s, more than the threads can
  serve, where the completions say 246.6 at any lag from 240 to 256.

- *Users that each hold a slot of their own* (the caller knows the model's slots: no more users
  than slots, and no kept-alive connection pinned to a one-slot worker) pace themselves but
  share the loop, the GIL and the machine's cores, so they slow down together and move in step
  (64 users on one event loop answer in trains 30-50 ms apart). Their cycles are the estimate,
  with the larger of the delta method's error and batch means of the users' summed rate over
  ten slices of the window (``slot_use="own"``). On users whose common pace wanders by 5 % the
  stated error is 0.84 of the spread over 60 seeds (0.64 when a slowdown lasts about half a
  second, a sixth of the window: longer ones are between-cell effects, for the A/A floor); the
  delta method alone stated 0.11 of it (0.06), and the completions read one at a time, cut
  into trains by the edges, stated 3.5-3.7 % for cells of 1.2-1.9 % (fetch on
  tornado-coroutine, 64 users) and counted 1.5 % low.
- *Users that stay with one worker process* (a multi-process model that keeps connections alive;
  ``Server-Timing`` says which process answered) are as many queues as processes, each with
  the users that landed on it: read process by process and summed (``per_process_throughput``).

Without that knowledge the users pace themselves when each user is regular (CV × √users below
½: a user's cycle spans ``users`` completions, which in a Poisson stream have CV 1/√users) and
the completions' period, if
any, is over half the users (a queue's slots repeat within their own lag, independent users only
within theirs); with no period in sight (few gaps, or noise), only users below ¼ whose completions
at half their lag look nearer to independent random phases (``√(1 − k/users)``) than to the users'
own regularity. Completions in bursts with no period (gaps over ``CLUSTERED`` times as variable as
a Poisson stream's: users that started together, not a queue's slots, whose period would be
found) keep the cycles too. Anything else is read from the completions, which do not understate a
noisy server;
under 50 gaps, or samples cut at the window (no warm-up: the completions of earlier requests are
missing), keep the cycles. Measured (seeded): the FIFO queue above, bias −0.005 %, stated 0.31 %
median (max 0.56 %), every seed within 1.5 SE; ±1 ms: 0.15 %, the same with random service order or
users pinned to slots; the long-wait queue within 0.02 %, stating 0.04 %; exponential service
(Poisson completions) covered in 88-95 % of seeds at 120 completions (12 batches), 92-98 % at 240;
self-paced users keep the cycles' 0.1-0.4 %. Left: a queue whose period is longer than the window
can show looks like independent users; independent but noisy users (512 with 10 % jitter) are read
from the completions, 0.3 % where the cycles said 0.08 %. A stall that hits every user at once is a
between-cell effect the A/A noise floor measures instead. The open loop's one stream has hundreds of
gaps that are *not* independent (a late answer shortens the next gap): batch means of consecutive
gaps when there are enough.

"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import pandas as pd

from asyncbench.storing.migrate import UNKNOWN_PID

SlotUse = Literal["own", "queued", "unknown"]  # what the caller knows of the users and the slots


@dataclass(frozen=True)
class ThroughputEstimate:
    """One cell's throughput, its standard error, and the count-based figure kept beside it."""

    rps: float  # requests per second; nan when no cycle of any stream covers the window
    stderr: float  # standard error of ``rps``; nan when it cannot be estimated
    rel_stderr: float  # stderr / rps
    count_rps: float  # starts (closed) or completions (open) inside the window / its length
    users: int  # closed loop: users whose cycles cover the window; open loop: 0
    cycles: float  # fractional cycles inside the window, summed over streams
    method: str  # "closed-loop cycles", "closed-loop completions" or "open-loop completions"


def closed_loop_throughput(
    start_time: np.ndarray,
    latency_ms: np.ndarray,
    user: np.ndarray,
    window_start: float,
    window_end: float,
    *,
    slot_use: SlotUse = "unknown",
) -> ThroughputEstimate:
    """A closed loop's throughput: from each user's own requests when the users pace themselves,
    else from the cell's merged completions (the module docstring says how they are told apart).
    ``slot_use`` is what the caller knows: ``"own"`` (every user holds a slot to itself), the
    users' cycles are the estimate, with ``_time_batched`` errors; ``"queued"`` (the users
    outnumber the slots), the completions are, whenever there are enough of them
    (``_queue_lag``); ``"unknown"``, the completions' regularity decides.

    Per user, the cycle of a request runs from its start to the user's next start; the cycle of
    the user's last request ends at its completion plus the user's usual client gap (median of
    next start − completion). The cell's rate is the sum of the users' rates. A user whose
    single request spans the whole window contributes ``T / C`` of a cycle.
    """
    start, latency = _float_arrays(start_time, latency_ms)
    users = np.asarray(user)
    _same_length(start, users)
    span = _window_length(window_start, window_end)
    count = np.count_nonzero((start >= window_start) & (start < window_end))
    done = np.sort((start + latency / 1000)[np.isfinite(latency)])
    warmed_up = bool((start < window_start).any())
    order = np.lexsort((start, users))
    start, latency, users = start[order], latency[order], users[order]
    same_user_next = np.r_[users[1:] == users[:-1], False]
    next_start = np.r_[start[1:], np.nan]
    finished = start + np.nan_to_num(latency) / 1000
    gap = _client_gap(users, same_user_next, next_start - finished)
    end = np.where(same_user_next, next_start, finished + gap)
    cycles = _stream_rates(users, start, end, window_start, window_end)
    if slot_use == "own":
        batched = _time_batched(cycles, start, end, window_start, window_end)
        return _estimate(batched, count / span, "closed-loop cycles", cycles.streams)
    completions = None
    if warmed_up:  # samples cut at the window lose the completions of earlier requests
        completions = _queued_completions(done, cycles, window_start, window_end, slot_use)
    if completions is None:
        return _estimate(cycles, count / span, "closed-loop cycles", cycles.streams)
    return _estimate(completions, count / span, "closed-loop completions", cycles.streams)


def per_process_throughput(
    start_time: np.ndarray,
    latency_ms: np.ndarray,
    user: np.ndarray,
    process: np.ndarray,
    window_start: float,
    window_end: float,
    *,
    process_slots: float,
) -> ThroughputEstimate | None:
    """A closed loop whose users each stayed with one serving process (a kept-alive connection
    stays with the worker that accepted it), which is then a queue of its own: the users that
    landed on it and its ``process_slots`` slots. Where every user holds a slot, the cell is
    read as users with their own slots (``slot_use="own"``). Else process by process, the cell
    the sum, the processes independent: users that hold their own slots from their cycles, a
    queue from its departures (``_departures``). Read as one, 16 users spread 7-4-3-2 over
    tornado-forked's four one-slot children are four queues of different periods, whose merged
    completions repeat at no lag; tornado-forked's cells of 4 and 16 users stated 1.3-1.6 %
    errors that way. Which process answered comes from ``Server-Timing``. None when it is
    unknown for some sample, or a user moved (a dropped connection, a model that does not keep
    them): the caller reads the cell as one."""
    process, users = np.asarray(process), np.asarray(user)
    _same_length(process, users)
    if not len(process) or (process == UNKNOWN_PID).any():
        return None
    homes = np.unique(np.c_[users, process], axis=0)  # (user, process) pairs
    if len(np.unique(homes[:, 0])) != len(homes):
        return None
    start, latency = _float_arrays(start_time, latency_ms)
    pids, held = np.unique(homes[:, 1], return_counts=True)
    if (held <= process_slots).all():  # every user holds a slot: one cell, which moves as one
        return closed_loop_throughput(start, latency, users, window_start, window_end,
                                      slot_use="own")  # fmt: skip
    parts = []
    for pid, n in zip(pids, held, strict=True):
        mine = process == pid
        own = closed_loop_throughput(start[mine], latency[mine], users[mine], window_start,
                                     window_end, slot_use="own")  # fmt: skip
        parts.append(_departures(start[mine], latency[mine], own, window_start, window_end,
                                 max(1, round(process_slots))) if n > process_slots else own)
    return _summed(parts)


def _departures(
    start: np.ndarray, latency: np.ndarray, cycles: ThroughputEstimate, w0: float, w1: float,
    slots: int,
) -> ThroughputEstimate:
    """One process's queue, more users than its ``slots``: its completions, the slots'
    departures, read as ``slots`` interleaved streams (busy slots that started in step repeat
    every ``slots`` completions; one slot's are its service times), with batch means, or the
    delta method's error when there are too few (one slot of 100 ms answers 30 times in 3 s).
    The waiting users' own cycles, added as independent, state a third of the spread
    (simulated: 4 one-slot children holding 22/18/14/10 users, 0.07 % stated for 0.17 %), and
    the period the merged completions search for is longer than that search looks (64 threads:
    190 completions hold under three periods). ``cycles`` stays for samples cut at the window."""
    done = np.sort((start + latency / 1000)[np.isfinite(latency)])
    if not (done < w0).any():  # samples cut at the window: the earlier completions are missing
        return cycles
    rate = _completion_rates(done, w0, w1, slots, delta_fallback=True)
    if rate is None or not math.isfinite(rate.rps):
        return cycles
    return _estimate(rate, cycles.count_rps, "closed-loop completions", cycles.users)


def _summed(parts: list[ThroughputEstimate]) -> ThroughputEstimate:
    """Independent parts of one cell added: rates and counts sum, errors in quadrature."""
    rps = sum(p.rps for p in parts)
    stderr = math.sqrt(sum(p.stderr**2 for p in parts))
    methods = sorted({p.method.removeprefix("closed-loop ") for p in parts})
    return ThroughputEstimate(
        rps=rps, stderr=stderr, rel_stderr=stderr / rps if rps > 0 else math.nan,
        count_rps=sum(p.count_rps for p in parts), users=sum(p.users for p in parts),
        cycles=sum(p.cycles for p in parts),
        method=f"closed-loop per process ({len(parts)}: {', '.join(methods)})",
    )  # fmt: skip


TIME_BATCHES = 10  # slices of the window for the users' summed rate (3 s: 0.3 s, ~3 cycles)


def _time_batched(
    cycles: _StreamRates, begin: np.ndarray, end: np.ndarray, w0: float, w1: float
) -> _StreamRates:
    """The users' cycles with the larger of two errors: the delta method's (users independent)
    and batch means of the users' summed rate over ``TIME_BATCHES`` consecutive slices of the
    window. Users that each hold a slot still share the loop, the GIL and the machine's cores:
    they slow down together, and move in step (64 users on one event loop answer in trains with
    30-50 ms between them), which the delta method takes for independent noise and the
    completions, read one at a time, for a queue's (counting trains cut by the edges: 1.5 % low
    and 3.7 % stated, where the slices say 1.2-1.9 %)."""
    length = end - begin
    known = np.isfinite(length) & (length > 0)
    begin, end, length = begin[known], end[known], length[known]
    edges = np.linspace(w0, w1, TIME_BATCHES + 1)
    rates = np.array([
        (np.clip(np.minimum(end, b) - np.maximum(begin, a), 0, None) / length).sum() / (b - a)
        for a, b in zip(edges[:-1], edges[1:], strict=True)
    ])  # fmt: skip
    if not (rates.mean() > 0):
        return cycles
    rel = float(np.std(rates, ddof=1) / math.sqrt(TIME_BATCHES) / rates.mean())
    return replace(cycles, stderr=max(cycles.stderr, cycles.rps * rel))


def _queued_completions(
    done: np.ndarray, cycles: _StreamRates, w0: float, w1: float, slot_use: SlotUse = "unknown"
) -> _StreamRates | None:
    """The completions' rate unless the users pace themselves or there are too few gaps for
    batch means (None: the users' cycles are the estimate)."""
    gaps = _gaps_touching(done, w0, w1)
    if len(gaps) < BATCHES[0] * BATCH_GAPS:
        return None
    regularity = _regularity(gaps, min(cycles.streams, len(gaps) // MIN_PERIODS))
    if slot_use == "queued":
        lag = _queue_lag(regularity, len(gaps))
    else:
        lag = _completions_lag(regularity, cycles, len(gaps))
    return None if lag is None else _completion_rates(done, w0, w1, lag)


def _queue_lag(regularity: np.ndarray, gaps: int) -> int:
    """The lag to read the completions of users known to queue for slots (their own cycles,
    censored at the stop, are never the estimate; the module docstring has the case): their
    period; with none found, the most regular lag when they come in bursts (slots that started
    together and drifted apart, over the stricter bound for long spans), else 1."""
    period = _period(regularity, gaps)
    if period is not None:
        return period
    judged = regularity[1:]  # inf where not judged, nan for spans of tied completions
    if len(judged) and judged[0] > CLUSTERED and np.isfinite(judged).any():
        return int(np.nanargmin(judged)) + 1
    return 1


def open_loop_throughput(
    start_time: np.ndarray,
    latency_ms: np.ndarray,
    window_start: float,
    window_end: float,
) -> ThroughputEstimate:
    """An open loop's achieved throughput from the completions around the window.

    The completions of all senders form one stream of cycles (the gaps between consecutive
    completions), read like a closed-loop user: the gaps that straddle the window edges count
    by their fraction inside, so the figure covers exactly the window — neither the ±1 of a count
    nor the span from first to last completion (which drops the edge gaps and would overstate a
    server that stopped answering mid-window). A Poisson schedule's gaps have CV ≈ 1, so its
    relative standard error is about ``1 / √(rate · T)``: that is the process's own noise.

    Gaps between completions are not independent (a late answer shortens the next gap), so
    with enough of them their variance comes from batch means of consecutive gaps, which sees
    through that; with few, from the delta method like a closed loop.
    """
    start, latency = _float_arrays(start_time, latency_ms)
    span = _window_length(window_start, window_end)
    done = np.sort((start + latency / 1000)[np.isfinite(latency)])
    count = np.count_nonzero((done >= window_start) & (done < window_end))
    rate = _completion_rates(done, window_start, window_end, 1, delta_fallback=True)
    return _estimate(rate, count / span, "open-loop completions", 0)


BATCH_GAPS = 10  # at least this many consecutive gaps per batch
BATCHES = (5, 20)  # at least 5 batches (else the delta method), at most 20
REGULAR = 0.5  # spans of k gaps at most half as variable as a Poisson stream's: regular
MIN_SPANS = 20  # a lag is compared with independent users' on at least this many spans
MIN_PERIODS = 3  # a period is looked for over at least this many repeats
# Gaps this many times as variable as a Poisson stream's, with no period found, are bursts of
# users that started together (1,024 users of a 1 s wait: 18.6); batch means of consecutive gaps
# cannot read them (a batch inside a burst and one across the pause differ a hundredfold).
CLUSTERED = 5.0


def _gaps_touching(done: np.ndarray, w0: float, w1: float) -> np.ndarray:
    """Gaps between consecutive (sorted) completions that overlap the window."""
    return np.diff(done)[(done[1:] > w0) & (done[:-1] < w1)]


def _completion_rates(
    done: np.ndarray, w0: float, w1: float, lag: int, *, delta_fallback: bool = False
) -> _StreamRates | None:
    """The sorted completions read as ``lag`` interleaved streams (every ``lag``-th completion;
    one stream when ``lag`` is 1), each cycle a span of ``lag`` gaps, with the standard error
    from batch means of consecutive gaps in batches of whole spans. With too few spans for batch
    means: the sum of the streams' delta-method errors (a bound whatever their correlation), or
    for one stream None, unless ``delta_fallback`` (then the delta method's error stays)."""
    index = np.arange(len(done))
    following = np.r_[done[lag:], np.full(min(lag, len(done)), np.nan)]
    rate = _stream_rates(index % lag, done, following, w0, w1)
    rel_error = _batch_means_rel_error(_gaps_touching(done, w0, w1), lag)
    if rel_error is not None:
        return replace(rate, stderr=rate.rps * rel_error)
    if lag > 1:
        return replace(rate, stderr=rate.stderr_bound)
    return rate if delta_fallback else None


def _batch_means_rel_error(gaps: np.ndarray, unit: int = 1) -> float | None:
    """Relative standard error of the mean gap from batch means of consecutive gaps, each batch
    whole spans of ``unit`` gaps (a trailing partial span is left out); None with too few."""
    units = len(gaps) // unit
    batches = min(BATCHES[1], units // math.ceil(BATCH_GAPS / unit))
    if batches < BATCHES[0]:
        return None
    spans = gaps[: units * unit].reshape(units, unit).sum(axis=1)
    means = np.array([part.mean() for part in np.array_split(spans, batches)]) / unit
    return float(np.std(means, ddof=1) / math.sqrt(batches) / (spans.mean() / unit))


def _regularity(gaps: np.ndarray, max_lag: int) -> np.ndarray:
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


def _completions_lag(regularity: np.ndarray, cycles: _StreamRates, gaps: int) -> int | None:
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
    period = _period(regularity, gaps)
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


def _period(regularity: np.ndarray, gaps: int) -> int | None:
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
class _StreamRates:
    rps: float
    stderr: float
    cycles: float
    streams: int
    cv: float = math.nan  # cycle-time sd (pooled within streams) / mean cycle
    stderr_bound: float = math.nan  # sum of the streams' errors: holds whatever their correlation


def _stream_rates(
    stream: np.ndarray, begin: np.ndarray, end: np.ndarray, w0: float, w1: float
) -> _StreamRates:
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
        return _StreamRates(math.nan, math.nan, 0.0, 0)
    ids, index = np.unique(stream[touch], return_inverse=True)
    k = np.bincount(index).astype(float)
    cycles = np.bincount(index, inside[touch] / length[touch])
    mean_cycle = np.bincount(index, length[touch]) / k
    first = np.full(len(ids), np.inf)
    last = np.full(len(ids), -np.inf)
    np.minimum.at(first, index, begin[touch])
    np.maximum.at(last, index, end[touch])
    cycles += _censored(first - w0, mean_cycle) + _censored(w1 - last, mean_cycle)
    deviation = length[touch] - mean_cycle[index]
    sd = _pooled_sd(deviation, k, length[touch])
    rate = cycles / span
    stderr = rate * (sd / mean_cycle) / np.sqrt(np.maximum(cycles, 1.0))
    return _StreamRates(
        rps=float(rate.sum()), stderr=float(np.sqrt((stderr**2).sum())),
        cycles=float(cycles.sum()), streams=len(ids), cv=sd / float(length[touch].mean()),
        stderr_bound=float(stderr.sum()),
    )  # fmt: skip


def _censored(uncovered: np.ndarray, mean_cycle: np.ndarray) -> np.ndarray:
    gap = np.clip(uncovered, 0, None)
    return np.where(gap > 0, gap / np.maximum(gap, mean_cycle), 0.0)


def _pooled_sd(deviation: np.ndarray, per_stream: np.ndarray, lengths: np.ndarray) -> float:
    """Cycle-time sd pooled within streams; across all cycles when no stream has two."""
    dof = float((per_stream - 1).sum())
    if dof > 0:
        return math.sqrt(float((deviation**2).sum()) / dof)
    return float(np.std(lengths, ddof=1)) if len(lengths) > 1 else math.nan


def _client_gap(users: np.ndarray, same_next: np.ndarray, gaps: np.ndarray) -> np.ndarray:
    """Per row, its user's median gap between a completion and the next start (the client's own
    time); the median over all users for a user with one request; 0 when nobody has two."""
    frame = pd.DataFrame({"user": users, "gap": np.where(same_next, gaps, np.nan)})
    by_user = frame.groupby("user")["gap"].transform("median")
    overall = frame["gap"].median()
    filled = by_user.fillna(0.0 if math.isnan(overall) else overall).to_numpy()
    return np.clip(filled, 0, None)


def _estimate(rate: _StreamRates, count_rps: float, method: str, users: int) -> ThroughputEstimate:
    rel = rate.stderr / rate.rps if rate.rps > 0 else math.nan
    return ThroughputEstimate(
        rps=rate.rps, stderr=rate.stderr, rel_stderr=rel, count_rps=float(count_rps),
        users=users, cycles=rate.cycles, method=method,
    )  # fmt: skip


def _float_arrays(start_time: np.ndarray, latency_ms: np.ndarray) -> tuple[np.ndarray, ...]:
    start, latency = np.asarray(start_time, dtype=float), np.asarray(latency_ms, dtype=float)
    _same_length(start, latency)
    return start, latency


def _same_length(a: np.ndarray, b: np.ndarray) -> None:
    if len(a) != len(b):
        raise ValueError(f"sample arrays differ in length: {len(a)} and {len(b)}")


def _window_length(window_start: float, window_end: float) -> float:
    span = float(window_end) - float(window_start)
    if not span > 0:
        raise ValueError(f"empty window: start {window_start} is not before end {window_end}")
    return span
