"""One cell's numbers and verdict, from its stored raw facts: the only judgement there is.

``evaluate_cell`` turns what a cell left on disk (raw request samples, resource samples, the
measured window, the requests Locust abandoned) into its statistics, its resource usage and
whether it can be trusted. The runner calls it when a cell ends; ``asyncbench report`` calls it
again on the stored files, so a rebuilt report re-judges every cell with today's rules.

Percentiles use numpy's default (linear interpolation between the closest ranks) over the exact
float latencies of the requests that *started* inside the measured window.

Throughput (``rps``) is ``throughput``'s exact estimator with its standard error: a closed loop's
from each user's own cycles (or, where users queue for few slots, from the completions read as
the slots' interleaved streams), an open loop's from the completions over the exact window. The
count-based figure stays beside it (``rps_count``). Samples without user ids (recorded before
schema 2) fall back to the count, with the Poisson error ``rps / √n`` (conservative for a closed
loop, whose count varies less), and ``rps_method`` says so.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from asyncbench.judging.predict import train_wait_ms
from asyncbench.judging.resources import ResourceUsage, resource_usage
from asyncbench.judging.throughput import (
    SlotUse,
    closed_loop_throughput,
    open_loop_throughput,
    per_process_throughput,
)
from asyncbench.storing.migrate import UNKNOWN_PID, UNKNOWN_USER

LOAD_GENERATOR_CPU_LIMIT = 90.0  # % of one core: above it Locust, not the server, sets the pace
AUXILIARY_CPU_LIMIT = 90.0  # % of one core for the single-threaded upstream
MACHINE_CPU_LIMIT = 90.0  # % of all cores: above it processes queue for CPU, Locust included
MAX_FAILURE_RATE = 0.01
LATE_SEND_MS = 10.0  # open loop: a send this much after its intended time is late
KEPT_UP_SHARE = 0.95  # open loop: achieved ≥ 95 % of offered means the server kept up
MIN_IN_FLIGHT = 8  # with fewer requests in flight, warm-up growth swamps per-request memory
PERCENTILES = {"p50_ms": 50, "p90_ms": 90, "p99_ms": 99, "p999_ms": 99.9}


@dataclass(frozen=True)
class CellStats:
    """Throughput and exact latency percentiles over the measured window."""

    requests: int = 0
    failures: int = 0
    rps: float | None = None  # the exact estimator (or the count, see ``rps_method``)
    rps_count: float | None = None
    rps_stderr: float | None = None  # req/s
    rps_rel_stderr: float | None = None  # fraction of ``rps``
    rps_method: str = ""
    mean_ms: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    p999_ms: float | None = None
    max_ms: float | None = None
    handler_p50_ms: float | None = None  # what the model's Server-Timing says its handler took
    outside_p50_ms: float | None = None  # latency minus handler time: queues, loop, transport
    handler_mean_ms: float | None = None  # with ``mean_ms``: the round trip split (Little's law)
    process_users: str = ""  # users each serving process answered, most first, if none moved
    # open loop only: offered rate, missed schedule, and the latency a closed-loop tool reports
    offered_rps: float | None = None
    late_sends: int | None = None
    dropped_sends: int | None = None
    p50_uncorrected_ms: float | None = None
    p99_uncorrected_ms: float | None = None


@dataclass(frozen=True)
class TrainWaits:
    """The mean wait the window's requests met for CPU, queued one after another in the order
    they arrived (``predict.train_wait_ms``): at the server (each process; its CPU per request)
    for their starts, and in Locust (each process; its CPU per request) for their answers."""

    queue_server_ms: float | None = None
    queue_client_ms: float | None = None


@dataclass(frozen=True)
class Judgement:
    valid: bool
    reason: str  # every reason the cell cannot be trusted, joined with "; "

    @property
    def status(self) -> str:
        return "ok" if self.valid else "invalid"


@dataclass(frozen=True)
class Evaluation:
    stats: CellStats
    usage: ResourceUsage
    judgement: Judgement
    waits: TrainWaits = TrainWaits()

    @property
    def rss_per_inflight_kb(self) -> float | None:
        """What the server pays in memory per request it holds: RSS over its idle baseline,
        per request in flight (Little's law: throughput × mean latency)."""
        rss, idle = self.usage.rss_server_mb, self.usage.rss_server_idle_mb
        in_flight = (self.stats.rps or 0) * (self.stats.mean_ms or 0) / 1000
        if not (_known(rss) and _known(idle)) or in_flight < MIN_IN_FLIGHT:
            return None
        return (rss - idle) * 1024 / in_flight

    def columns(self) -> dict:
        """The ``results.csv`` columns this evaluation fills."""
        return {**asdict(self.stats), **asdict(self.usage), **asdict(self.waits),
                "valid": self.judgement.valid,
                "reason": self.judgement.reason, "status": self.judgement.status,
                "rss_per_inflight_kb": self.rss_per_inflight_kb}  # fmt: skip


def evaluate_cell(
    samples: pd.DataFrame,
    resources: pd.DataFrame,
    start: float,
    end: float,
    *,
    rate: float = 0.0,
    abandoned: int = 0,
    stored_usage: ResourceUsage | None = None,
    slot_use: SlotUse = "unknown",
    process_slots: float | None = None,
) -> Evaluation:
    """Statistics, resource usage and the judgement of one measured cell.

    ``stored_usage`` stands in for the resource samples when a run directory has lost them.
    """
    stats = cell_stats(samples, start, end, rate, slot_use=slot_use, process_slots=process_slots)
    if (resources is None or resources.empty) and stored_usage is not None:
        usage = stored_usage
    else:
        usage = resource_usage(resources, start, end)
    waits = train_waits(samples, start, end, stats, usage) if not rate else TrainWaits()
    return Evaluation(stats, usage, judge(stats, usage, abandoned), waits)


def train_waits(
    samples: pd.DataFrame, start: float, end: float, stats: CellStats, usage: ResourceUsage
) -> TrainWaits:
    """The queues a closed loop's window met for CPU (``TrainWaits``); None where the CPU or
    the throughput is unknown."""
    window = in_window(samples, start, end)
    if window.empty or not stats.rps:
        return TrainWaits()
    answered = window["start_time"] + window["latency_ms"].fillna(0) / 1000
    users = window.get("user")
    return TrainWaits(
        queue_server_ms=_queued(window["start_time"], window.get("server_pid"),
                                _per_request_ms(usage.cpu_server, stats.rps), users),
        queue_client_ms=_queued(answered, window.get("worker"),
                                _per_request_ms(usage.cpu_locust, stats.rps), users),
    )  # fmt: skip


def _per_request_ms(cpu_percent: float | None, rps: float) -> float | None:
    return cpu_percent / 100 / rps * 1000 if _known(cpu_percent) else None


def _queued(instants: pd.Series, process: pd.Series | None, demand_ms: float | None,
            users: pd.Series | None = None):  # fmt: skip
    """The mean wait over every process's own queue (one queue where processes are unknown),
    each behind at most the other users that sent to it (a closed loop)."""
    if demand_ms is None:
        return None
    groups = instants.groupby(process.fillna(UNKNOWN_PID) if process is not None else 0)
    total = 0.0
    for _, times in groups:
        ahead = users.loc[times.index].nunique() - 1 if users is not None else None
        total += train_wait_ms(times.to_numpy(), demand_ms, ahead) * len(times)
    return total / len(instants)


def in_window(samples: pd.DataFrame, start: float, end: float) -> pd.DataFrame:
    """The requests that started inside ``[start, end)``: warm-up and ramp-up are outside.

    Open-loop requests belong to the window of their *intended* send time.
    """
    when = samples["start_time"]
    if "intended_time" in samples and samples["intended_time"].notna().any():
        when = samples["intended_time"]
    return samples[(when >= start) & (when < end)]


def completed_in(samples: pd.DataFrame, start: float, end: float) -> int:
    """How many answers arrived inside ``[start, end)`` (an open loop's achieved throughput)."""
    done = samples["start_time"] + samples["latency_ms"] / 1000
    return int(((done >= start) & (done < end)).sum())


def corrected_latency_ms(samples: pd.DataFrame) -> pd.Series:
    """Latency from the intended send time (coordinated-omission corrected)."""
    return (samples["start_time"] - samples["intended_time"]) * 1000 + samples["latency_ms"]


def is_failure(samples: pd.DataFrame) -> pd.Series:
    return samples["error"].notna() | (samples["status"] != 200)


def cell_stats(
    samples: pd.DataFrame, start: float, end: float, rate: float = 0.0,
    *, slot_use: SlotUse = "unknown", process_slots: float | None = None,
) -> CellStats:
    """Throughput and exact latency percentiles over the measured window (``slot_use``: see
    ``throughput.closed_loop_throughput``; ``process_slots``, where users stay with the process
    that accepted them, its slots: see ``throughput.per_process_throughput``).

    For an open-loop cell (``rate`` > 0) the percentiles are corrected (from the intended send
    time), the uncorrected p50/p99 are kept beside them, and late and dropped sends are counted.
    """
    window = in_window(samples, start, end)
    open_loop = rate > 0
    latencies = (corrected_latency_ms(window) if open_loop else window["latency_ms"]).to_numpy()
    counted = completed_in(samples, start, end) if open_loop else len(window)
    fields: dict = {
        "requests": len(window),
        "failures": int(is_failure(window).sum()),
        **throughput(samples, start, end, open_loop, counted, slot_use=slot_use,
                     process_slots=process_slots),
        "process_users": "" if open_loop else process_users(samples),
    }
    if "server_ms" in window and window["server_ms"].notna().any():
        timed = window[window["server_ms"].notna()]
        fields["handler_p50_ms"] = float(timed["server_ms"].median())
        fields["outside_p50_ms"] = float((timed["latency_ms"] - timed["server_ms"]).median())
        fields["handler_mean_ms"] = float(timed["server_ms"].mean())
    if len(latencies):
        fields["mean_ms"] = float(latencies.mean())
        fields["max_ms"] = float(latencies.max())
        for column, q in PERCENTILES.items():
            fields[column] = float(np.percentile(latencies, q))
    if open_loop:
        fields.update(_open_loop_stats(window, start, end, rate))
    return CellStats(**fields)


COUNT_FALLBACK = "count of requests (no user ids in these samples): Poisson error √n"


def throughput(
    samples: pd.DataFrame, start: float, end: float, open_loop: bool, counted: int,
    *, slot_use: SlotUse = "unknown", process_slots: float | None = None,
) -> dict:
    """``rps`` (the exact estimator), ``rps_count``, the standard error and the method.

    ``samples`` must be *all* of the cell's samples: the cycles cut by the window's edges come
    from the requests just outside it."""
    count_rps = counted / (end - start)
    estimate = None
    if samples.empty:
        pass
    elif open_loop:
        estimate = open_loop_throughput(samples["start_time"], samples["latency_ms"], start, end)
    elif "user" in samples and (samples["user"] != UNKNOWN_USER).all():
        if process_slots is not None and "server_pid" in samples:
            estimate = per_process_throughput(
                samples["start_time"], samples["latency_ms"], samples["user"],
                samples["server_pid"], start, end, process_slots=process_slots,
            )  # fmt: skip
        if estimate is None:
            estimate = closed_loop_throughput(
                samples["start_time"], samples["latency_ms"], samples["user"], start, end,
                slot_use=slot_use,
            )  # fmt: skip
    if estimate is None or not math.isfinite(estimate.rps):
        rel = 1 / math.sqrt(counted) if counted else math.nan
        return {"rps": count_rps, "rps_count": count_rps, "rps_stderr": count_rps * rel,
                "rps_rel_stderr": rel, "rps_method": COUNT_FALLBACK}  # fmt: skip
    return {"rps": estimate.rps, "rps_count": count_rps, "rps_stderr": estimate.stderr,
            "rps_rel_stderr": estimate.rel_stderr, "rps_method": estimate.method}  # fmt: skip


def process_users(samples: pd.DataFrame) -> str:
    """How many users each serving process answered, most first (``"22 18 14 10"``), when every
    user stayed with one process; empty when a user moved or a process is unknown. Where
    connections stay with the worker that accepted them, it is how the users landed, which sets
    the busiest worker's queue (and the level's p99) whatever the code does."""
    if "server_pid" not in samples or samples.empty:
        return ""
    homes = samples[["user", "server_pid"]].drop_duplicates()
    if (homes["server_pid"] == UNKNOWN_PID).any() or homes["user"].duplicated().any():
        return ""
    return " ".join(str(n) for n in sorted(homes["server_pid"].value_counts(), reverse=True))


def _open_loop_stats(window: pd.DataFrame, start: float, end: float, rate: float) -> dict:
    due = round(rate * (end - start))
    lateness_ms = (window["start_time"] - window["intended_time"]) * 1000
    stats = {
        "offered_rps": rate,
        "late_sends": int((lateness_ms > LATE_SEND_MS).sum()),
        "dropped_sends": max(0, due - len(window)),
    }
    if len(window):
        raw = window["latency_ms"].to_numpy()
        stats["p50_uncorrected_ms"] = float(np.percentile(raw, 50))
        stats["p99_uncorrected_ms"] = float(np.percentile(raw, 99))
    return stats


def judge(stats: CellStats, usage: ResourceUsage, abandoned: int = 0) -> Judgement:
    """Whether a measured cell can be trusted, and if not, every reason why."""
    reasons = _throughput_reasons(stats) + _saturation_reasons(usage)
    if abandoned:
        reasons.append(
            f"{abandoned} requests were still unanswered when the cell ended, so the "
            "slowest requests are missing from the percentiles"
        )
    reasons += _schedule_and_failure_reasons(stats)
    return Judgement(not reasons, "; ".join(reasons))


def _throughput_reasons(stats: CellStats) -> list[str]:
    if stats.requests == 0 and stats.dropped_sends:
        return [
            f"far past capacity: all {stats.dropped_sends} sends due in the window were still "
            f"unsent when it ended (every sender was waiting), so latency is unmeasurable; "
            f"achieved {stats.rps or 0:.1f} req/s"
        ]
    if stats.requests == 0:
        return ["no request completed in the measured window"]
    return []


def _saturation_reasons(usage: ResourceUsage) -> list[str]:
    reasons = []
    locust = usage.cpu_locust_max if _known(usage.cpu_locust_max) else usage.cpu_locust
    if _known(locust) and locust > LOAD_GENERATOR_CPU_LIMIT:
        reasons.append(
            f"load generator saturated: Locust used {locust:.0f}% of a core "
            f"(limit {LOAD_GENERATOR_CPU_LIMIT:.0f}%)"
        )
    if _known(usage.cpu_machine) and usage.cpu_machine > MACHINE_CPU_LIMIT:
        reasons.append(
            f"machine CPU saturated: {usage.cpu_machine:.0f}% of all cores busy, so the load "
            "generator competes with the server for CPU"
        )
    if _known(usage.cpu_upstream) and usage.cpu_upstream > AUXILIARY_CPU_LIMIT:
        reasons.append(f"upstream saturated: {usage.cpu_upstream:.0f}% of a core")
    return reasons


def _schedule_and_failure_reasons(stats: CellStats) -> list[str]:
    reasons = []
    requests = stats.requests
    kept_up = stats.offered_rps and (stats.rps or 0) >= KEPT_UP_SHARE * stats.offered_rps
    late = (stats.late_sends or 0) + (stats.dropped_sends or 0)
    if kept_up and requests and late / requests > MAX_FAILURE_RATE:
        # The server kept up, so the senders, not the server, missed the schedule.
        reasons.append(f"load generator missed the schedule: {late} late or dropped sends")
    if requests and stats.failures / requests > MAX_FAILURE_RATE:
        reasons.append(f"failures {stats.failures / requests:.1%} above {MAX_FAILURE_RATE:.0%}")
    return reasons


def _known(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))
