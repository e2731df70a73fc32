"""What each component used during a window, from the resource samples: CPU per component and
of the machine, memory over idle, how evenly a multi-process server's workers shared the CPU,
and the servers' gauges."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

IDLE = "idle"  # the ``phase`` of the resource sample taken before the load starts
CPU_COLUMNS = ("cpu_server", "cpu_locust", "cpu_locust_max", "cpu_upstream", "cpu_mariadb",
               "cpu_machine")  # fmt: skip


@dataclass(frozen=True)
class ResourceUsage:
    """Mean CPU (% of one core; the machine in % of all cores), server RSS and peak DB
    connections over the window. ``cpu_locust_max`` is the busiest Locust process: one process
    saturates at one core whatever the others do."""

    cpu_server: float | None = None
    cpu_locust: float | None = None
    cpu_locust_max: float | None = None
    cpu_upstream: float | None = None
    cpu_mariadb: float | None = None
    cpu_machine: float | None = None
    rss_server_mb: float | None = None
    threads_connected_max: float | None = None
    rss_server_idle_mb: float | None = None  # the sample taken before the load started
    accept_queue_max: float | None = None  # connections waiting in the server's listen backlog
    loop_lag_max_ms: float | None = None  # the worst event-loop lag sampled in the window
    process_requests: str = ""  # answered in the window by each serving process, busiest first
    busiest_process_share: float | None = None


def resource_usage(resources: pd.DataFrame, start: float, end: float) -> ResourceUsage:
    """Mean CPU (and peak DB connections, mean server RSS) over the measured window, the idle
    RSS before the load, and how the window's requests spread over the serving processes."""
    if resources is None or resources.empty:
        return ResourceUsage()
    idle = pd.Series(False, resources.index)
    if "phase" in resources:
        idle = resources["phase"].eq(IDLE)
    fields = _idle_and_balance(resources, idle, start, end)
    window = window_rows(resources, start, end)
    if window.empty:
        window = resources[~idle]
    fields.update({c: float(window[c].mean()) for c in CPU_COLUMNS if c in window})
    if "rss_server_mb" in window:
        fields["rss_server_mb"] = float(window["rss_server_mb"].mean())
    if "accept_queue" in window and window["accept_queue"].notna().any():
        fields["accept_queue_max"] = float(window["accept_queue"].max())
    if "loop_lag_ms" in window and window["loop_lag_ms"].notna().any():
        fields["loop_lag_max_ms"] = float(window["loop_lag_ms"].max())
    if "threads_connected" in window and window["threads_connected"].notna().any():
        fields["threads_connected_max"] = float(window["threads_connected"].max())
    return ResourceUsage(**fields)


def window_rows(resources: pd.DataFrame, start: float, end: float) -> pd.DataFrame:
    """The resource samples that describe the window: a sample's CPU is the mean over the
    interval since the one before it (the idle sample starts the first), and it counts when at
    least half of that interval lies inside the window. (A warm-up shorter than the sampling
    interval must not bring start-up into the window's CPU.)"""
    rows = resources.sort_values("t")
    t = rows["t"].to_numpy(dtype=float)
    if len(t) == 0:
        return rows
    previous = np.roll(t, 1)
    previous[0] = t[0] - (float(np.median(np.diff(t))) if len(t) > 1 else 1.0)
    inside = np.minimum(t, end) - np.maximum(previous, start)
    keep = inside >= 0.5 * (t - previous)
    if "phase" in rows:
        keep &= ~rows["phase"].eq(IDLE).to_numpy()
    return rows[keep]


def _idle_and_balance(resources: pd.DataFrame, idle: pd.Series, start: float, end: float) -> dict:
    fields: dict = {}
    if idle.any() and "rss_server_mb" in resources:
        fields["rss_server_idle_mb"] = float(resources.loc[idle, "rss_server_mb"].iloc[0])
    if "process_requests" not in resources:
        return fields
    counted = resources[resources["process_requests"].fillna("") != ""].sort_values("t")
    if counted.empty:
        return fields
    before = counted[counted["t"] <= start]
    first = before.iloc[-1] if len(before) else counted.iloc[0]
    inside = window_rows(counted, start, end)
    last = inside.iloc[-1] if len(inside) else counted.iloc[-1]
    begin, finish = _counts(first["process_requests"]), _counts(last["process_requests"])
    served = sorted((n - begin.get(pid, 0) for pid, n in finish.items()), reverse=True)
    total = sum(served)
    fields["process_requests"] = " ".join(str(n) for n in served)
    fields["busiest_process_share"] = served[0] / total if total else None
    return fields


def _counts(text: str) -> dict[str, int]:
    """``"pid:count pid:count"`` (as the resource sampler stores it) → {pid: count}."""
    pairs = (item.split(":") for item in str(text).split())
    return {pid: int(count) for pid, count in pairs}
