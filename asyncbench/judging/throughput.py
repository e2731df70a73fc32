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

from asyncbench.judging.streams import (
    BATCH_GAPS,
    BATCHES,
    CLUSTERED,
    MIN_PERIODS,
    StreamRates,
    client_gap,
    completion_rates,
    completions_lag,
    find_period,
    float_arrays,
    gaps_touching,
    lag_regularity,
    same_length,
    stream_rates,
    window_length,
)
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
    start, latency = float_arrays(start_time, latency_ms)
    users = np.asarray(user)
    same_length(start, users)
    span = window_length(window_start, window_end)
    count = np.count_nonzero((start >= window_start) & (start < window_end))
    done = np.sort((start + latency / 1000)[np.isfinite(latency)])
    warmed_up = bool((start < window_start).any())
    order = np.lexsort((start, users))
    start, latency, users = start[order], latency[order], users[order]
    same_user_next = np.r_[users[1:] == users[:-1], False]
    next_start = np.r_[start[1:], np.nan]
    finished = start + np.nan_to_num(latency) / 1000
    gap = client_gap(users, same_user_next, next_start - finished)
    end = np.where(same_user_next, next_start, finished + gap)
    cycles = stream_rates(users, start, end, window_start, window_end)
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
    same_length(process, users)
    if not len(process) or (process == UNKNOWN_PID).any():
        return None
    homes = np.unique(np.c_[users, process], axis=0)  # (user, process) pairs
    if len(np.unique(homes[:, 0])) != len(homes):
        return None
    start, latency = float_arrays(start_time, latency_ms)
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
    rate = completion_rates(done, w0, w1, slots, delta_fallback=True)
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
    cycles: StreamRates, begin: np.ndarray, end: np.ndarray, w0: float, w1: float
) -> StreamRates:
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
    done: np.ndarray, cycles: StreamRates, w0: float, w1: float, slot_use: SlotUse = "unknown"
) -> StreamRates | None:
    """The completions' rate unless the users pace themselves or there are too few gaps for
    batch means (None: the users' cycles are the estimate)."""
    gaps = gaps_touching(done, w0, w1)
    if len(gaps) < BATCHES[0] * BATCH_GAPS:
        return None
    regularity = lag_regularity(gaps, min(cycles.streams, len(gaps) // MIN_PERIODS))
    if slot_use == "queued":
        lag = _queue_lag(regularity, len(gaps))
    else:
        lag = completions_lag(regularity, cycles, len(gaps))
    return None if lag is None else completion_rates(done, w0, w1, lag)


def _queue_lag(regularity: np.ndarray, gaps: int) -> int:
    """The lag to read the completions of users known to queue for slots (their own cycles,
    censored at the stop, are never the estimate; the module docstring has the case): their
    period; with none found, the most regular lag when they come in bursts (slots that started
    together and drifted apart, over the stricter bound for long spans), else 1."""
    period = find_period(regularity, gaps)
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
    start, latency = float_arrays(start_time, latency_ms)
    span = window_length(window_start, window_end)
    done = np.sort((start + latency / 1000)[np.isfinite(latency)])
    count = np.count_nonzero((done >= window_start) & (done < window_end))
    rate = completion_rates(done, window_start, window_end, 1, delta_fallback=True)
    return _estimate(rate, count / span, "open-loop completions", 0)


def _estimate(rate: StreamRates, count_rps: float, method: str, users: int) -> ThroughputEstimate:
    rel = rate.stderr / rate.rps if rate.rps > 0 else math.nan
    return ThroughputEstimate(
        rps=rate.rps, stderr=rate.stderr, rel_stderr=rel, count_rps=float(count_rps),
        users=users, cycles=rate.cycles, method=method,
    )  # fmt: skip


