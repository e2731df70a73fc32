"""Analysis: statistics from raw samples, validity of cells, and queueing-theory predictions.

Raw samples are the truth; every number in ``results.csv`` and the report is computed here from
them. Percentiles use numpy's default (linear interpolation between the closest ranks) over the
exact float latencies of the requests that *started* inside the measured window.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

LOAD_GENERATOR_CPU_LIMIT = 90.0  # % of one core: above it Locust, not the server, sets the pace
AUXILIARY_CPU_LIMIT = 90.0  # % of one core for the single-threaded upstream
MAX_FAILURE_RATE = 0.01
PERCENTILES = {"p50_ms": 50, "p90_ms": 90, "p99_ms": 99, "p999_ms": 99.9}


def in_window(samples: pd.DataFrame, start: float, end: float) -> pd.DataFrame:
    """The requests that started inside ``[start, end)``: warm-up and ramp-up are outside."""
    return samples[(samples["start_time"] >= start) & (samples["start_time"] < end)]


def is_failure(samples: pd.DataFrame) -> pd.Series:
    return samples["error"].notna() | (samples["status"] != 200)


def cell_stats(samples: pd.DataFrame, start: float, end: float) -> dict:
    """Throughput and exact latency percentiles over the measured window."""
    window = in_window(samples, start, end)
    latencies = window["latency_ms"].to_numpy()
    stats: dict = {
        "requests": len(window),
        "failures": int(is_failure(window).sum()),
        "rps": len(window) / (end - start),
    }
    if len(latencies):
        stats["mean_ms"] = float(latencies.mean())
        stats["max_ms"] = float(latencies.max())
        for column, q in PERCENTILES.items():
            stats[column] = float(np.percentile(latencies, q))
    return stats


def resource_means(resources: pd.DataFrame, start: float, end: float) -> dict:
    """Mean CPU (and peak DB connections, mean server RSS) over the measured window."""
    if resources.empty:
        return {}
    window = resources[(resources["t"] > start) & (resources["t"] <= end + 0.5)]
    if window.empty:
        window = resources
    out = {c: float(window[c].mean()) for c in window.columns if c.startswith("cpu_")}
    if "rss_server_mb" in window:
        out["rss_server_mb"] = float(window["rss_server_mb"].mean())
    if "threads_connected" in window and window["threads_connected"].notna().any():
        out["threads_connected_max"] = float(window["threads_connected"].max())
    return out


def judge(stats: dict, cpu: dict) -> tuple[bool, str]:
    """Whether a measured cell can be trusted, and if not, every reason why."""
    reasons = []
    if stats.get("requests", 0) == 0:
        reasons.append("no request completed in the measured window")
    locust = cpu.get("cpu_locust")
    if locust is not None and locust > LOAD_GENERATOR_CPU_LIMIT:
        reasons.append(
            f"load generator saturated: Locust used {locust:.0f}% of a core "
            f"(limit {LOAD_GENERATOR_CPU_LIMIT:.0f}%)"
        )
    upstream = cpu.get("cpu_upstream")
    if upstream is not None and upstream > AUXILIARY_CPU_LIMIT:
        reasons.append(f"upstream saturated: {upstream:.0f}% of a core")
    requests = stats.get("requests", 0)
    if requests and stats.get("failures", 0) / requests > MAX_FAILURE_RATE:
        rate = stats["failures"] / requests
        reasons.append(f"failures {rate:.1%} above {MAX_FAILURE_RATE:.0%}")
    return (not reasons, "; ".join(reasons))


def capacity_slots(
    blocking: bool,
    kind: str,
    workers: int,
    max_clients: int,
    pool_size: int,
    db_max_connections: int | None,
) -> float | None:
    """How many requests a model can hold at once (DESIGN rule 6); None when not sleep-like."""
    if kind == "hello":
        return None
    if blocking:
        return float(workers)
    if kind == "fetch":
        return float(max_clients)
    if kind == "sql":
        return float(min(pool_size, db_max_connections or pool_size))
    return math.inf


def predicted_rps(users: int, slots: float | None, delay_ms: int) -> float | None:
    """throughput = min(users, slots) / delay, for a closed loop with no think time."""
    if slots is None or delay_ms <= 0:
        return None
    return min(users, slots) / (delay_ms / 1000)
