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
MACHINE_CPU_LIMIT = 90.0  # % of all cores: above it processes queue for CPU, Locust included
MAX_FAILURE_RATE = 0.01
PERCENTILES = {"p50_ms": 50, "p90_ms": 90, "p99_ms": 99, "p999_ms": 99.9}


LATE_SEND_MS = 10.0  # open loop: a send this much after its intended time is late


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


def cell_stats(samples: pd.DataFrame, start: float, end: float, rate: float = 0.0) -> dict:
    """Throughput and exact latency percentiles over the measured window.

    For an open-loop cell (``rate`` > 0) the percentiles are corrected (from the intended send
    time), the uncorrected p50/p99 are kept beside them, and late and dropped sends are counted.
    """
    window = in_window(samples, start, end)
    open_loop = rate > 0
    latencies = (corrected_latency_ms(window) if open_loop else window["latency_ms"]).to_numpy()
    stats: dict = {
        "requests": len(window),
        "failures": int(is_failure(window).sum()),
        "rps": (completed_in(samples, start, end) if open_loop else len(window)) / (end - start),
    }
    if len(latencies):
        stats["mean_ms"] = float(latencies.mean())
        stats["max_ms"] = float(latencies.max())
        for column, q in PERCENTILES.items():
            stats[column] = float(np.percentile(latencies, q))
    if open_loop:
        stats.update(_open_loop_stats(window, start, end, rate))
    return stats


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


def resource_means(resources: pd.DataFrame, start: float, end: float) -> dict:
    """Mean CPU (and peak DB connections, mean server RSS) over the measured window."""
    if resources.empty:
        return {}
    window = resources[(resources["t"] > start) & (resources["t"] <= end + 0.5)]
    if window.empty:
        window = resources
    # cpu_locust_max: a Locust process saturates at one core, so judge the busiest one, not the
    # sum over workers.
    columns = ("cpu_server", "cpu_locust", "cpu_locust_max", "cpu_upstream", "cpu_mariadb",
               "cpu_machine")  # fmt: skip
    out = {c: float(window[c].mean()) for c in columns if c in window}
    if "rss_server_mb" in window:
        out["rss_server_mb"] = float(window["rss_server_mb"].mean())
    if "threads_connected" in window and window["threads_connected"].notna().any():
        out["threads_connected_max"] = float(window["threads_connected"].max())
    return out


def judge(stats: dict, cpu: dict) -> tuple[bool, str]:
    """Whether a measured cell can be trusted, and if not, every reason why."""
    reasons = []
    if stats.get("requests", 0) == 0 and stats.get("dropped_sends"):
        reasons.append(
            f"far past capacity: all {stats['dropped_sends']} sends due in the window were still "
            f"unsent when it ended (every sender was waiting), so latency is unmeasurable; "
            f"achieved {stats.get('rps', 0):.1f} req/s"
        )
    elif stats.get("requests", 0) == 0:
        reasons.append("no request completed in the measured window")
    locust = cpu.get("cpu_locust_max", cpu.get("cpu_locust"))
    if locust is not None and locust > LOAD_GENERATOR_CPU_LIMIT:
        reasons.append(
            f"load generator saturated: Locust used {locust:.0f}% of a core "
            f"(limit {LOAD_GENERATOR_CPU_LIMIT:.0f}%)"
        )
    machine = cpu.get("cpu_machine")
    if machine is not None and machine > MACHINE_CPU_LIMIT:
        reasons.append(
            f"machine CPU saturated: {machine:.0f}% of all cores busy, so the load generator "
            "competes with the server for CPU"
        )
    upstream = cpu.get("cpu_upstream")
    if upstream is not None and upstream > AUXILIARY_CPU_LIMIT:
        reasons.append(f"upstream saturated: {upstream:.0f}% of a core")
    if stats.get("abandoned"):
        reasons.append(
            f"{stats['abandoned']} requests were still unanswered when the cell ended, so the "
            "slowest requests are missing from the percentiles"
        )
    requests = stats.get("requests", 0)
    offered = stats.get("offered_rps")
    kept_up = offered and stats.get("rps", 0) >= 0.95 * offered
    late = (stats.get("late_sends") or 0) + (stats.get("dropped_sends") or 0)
    if kept_up and requests and late / requests > MAX_FAILURE_RATE:
        # The server kept up, so the senders, not the server, missed the schedule.
        reasons.append(f"load generator missed the schedule: {late} late or dropped sends")
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


def predicted_rps(
    users: int, slots: float | None, delay_ms: int, rate: float = 0.0
) -> float | None:
    """throughput = min(users, slots) / delay for a closed loop with no think time;
    min(rate, slots / delay) for an open loop offering ``rate``."""
    if slots is None or delay_ms <= 0:
        return rate or None
    capacity = slots / (delay_ms / 1000)
    return min(rate, capacity) if rate else min(users, slots) / (delay_ms / 1000)


# --- Across cells: the comparison the report shows ----------------------------------------------
#
# A "level" is one scenario × server × load, where the load is the number of users (closed loop)
# or the offered rate (open loop, ``rate`` > 0); its repeats are the cells. Only *included* cells
# (valid and status "ok") enter a level's statistics; the others are kept, with their reason, so
# the report can show them greyed out. A scenario's closed-loop and open-loop levels are
# compared separately (``loop`` is "closed" or "open").

LEVEL = ["scenario", "server", "rate", "users"]
SPREAD_METRICS = ("rps", "p50_ms", "p90_ms", "p99_ms")
UNSTABLE_COV = 0.10  # a spread across repeats above this is flagged, not hidden (as pyperf does)
PLATEAU_GROWTH = 0.25  # rps "stops growing": it gains < 25% of what more load ideally adds


def included(results: pd.DataFrame) -> pd.Series:
    """Which cells count: valid and measured (``status == "ok"``); never the invalid or failed."""
    valid = results["valid"].astype(str).str.lower().eq("true")
    return valid & results["status"].astype(str).eq("ok")


def cell_table(results: pd.DataFrame, samples: pd.DataFrame) -> pd.DataFrame:
    """``results.csv`` with every measured cell's throughput and percentiles recomputed from its
    raw in-window samples (``cell_stats``), plus ``included``, ``loop`` and ``load`` columns.

    A cell without samples (a failed one) keeps its stored numbers, which are empty.
    """
    cells = results.copy().reset_index(drop=True)
    cells["reason"] = cells["reason"].fillna("").astype(str)
    cells["rate"] = cells["rate"].fillna(0.0) if "rate" in cells else 0.0
    if not samples.empty and len(cells):
        by_cell = dict(tuple(samples.groupby("cell_id", sort=False)))
        for i, row in cells.iterrows():
            own = by_cell.get(row["cell_id"])
            if own is None or pd.isna(row["window_start"]) or pd.isna(row["window_end"]):
                continue
            stats = cell_stats(own, row["window_start"], row["window_end"], rate=row["rate"])
            for column, value in stats.items():
                cells.loc[i, column] = value
    cells["included"] = included(cells) if len(cells) else pd.Series(dtype=bool)
    cells["loop"] = np.where(cells["rate"] > 0, "open", "closed")
    cells["load"] = np.where(cells["rate"] > 0, cells["rate"], cells["users"]).astype(float)
    return cells


def aggregate(cells: pd.DataFrame) -> pd.DataFrame:
    """One row per scenario × server × load: median, min, max and CoV across included repeats of
    rps and p50/p90/p99, the gap to the predicted rps, and the ratio to the best model at that
    load. Levels whose cells were all excluded keep a row (with empty statistics)."""
    columns = _aggregate_columns()
    if cells.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for (scenario, server, rate, users), group in cells.groupby(LEVEL, sort=True):
        kept = group[group["included"]]
        row: dict = {
            "scenario": scenario, "server": server, "rate": float(rate), "users": int(users),
            "loop": group["loop"].iloc[0], "load": float(group["load"].iloc[0]),
            "cells": len(group), "repeats": len(kept),
            "invalid": int((group["status"] == "invalid").sum()),
            "failed": int((group["status"] == "failed").sum()),
            "delay_ms": _first(group["delay_ms"]), "workers": _first(group["workers"]),
            "slots": _first(group["slots"]), "predicted_rps": _first(group["predicted_rps"]),
            "cpu_server": _median(kept, "cpu_server"), "cpu_locust": _median(kept, "cpu_locust"),
            "cpu_machine": _median(kept, "cpu_machine"),
            **{c: _median(kept, c) for c in OPEN_LOOP_MEDIANS},
            "reasons": "; ".join(sorted({r for r in group.loc[~group["included"], "reason"] if r})),
        }  # fmt: skip
        for metric in SPREAD_METRICS:
            row.update(_spread(kept[metric].dropna().to_numpy(dtype=float), metric))
        rows.append(row)
    agg = pd.DataFrame(rows, columns=columns)
    agg["rps_gap"] = agg["rps_median"] / agg["predicted_rps"] - 1
    level = agg.groupby(["scenario", "rate", "users"])
    agg["best_rps"] = level["rps_median"].transform("max")
    agg["rps_ratio"] = agg["rps_median"] / agg["best_rps"]
    agg["p99_ratio"] = agg["p99_ms_median"] / level["p99_ms_median"].transform("min")
    agg["best"] = agg["rps_median"].notna() & (agg["rps_median"] == agg["best_rps"])
    agg["unstable"] = (agg[[f"{m}_cov" for m in SPREAD_METRICS]] > UNSTABLE_COV).any(axis=1)
    return agg


# Open loop only: the uncorrected latency (from the actual send) and the missed schedule.
OPEN_LOOP_MEDIANS = ("p50_uncorrected_ms", "p99_uncorrected_ms", "late_sends", "dropped_sends")


def _aggregate_columns() -> list[str]:
    head = [*LEVEL, "loop", "load", "cells", "repeats", "invalid", "failed", "delay_ms",
            "workers", "slots", "predicted_rps", "cpu_server", "cpu_locust", "cpu_machine",
            *OPEN_LOOP_MEDIANS, "reasons"]  # fmt: skip
    spread = [f"{m}_{s}" for m in SPREAD_METRICS for s in ("median", "min", "max", "cov")]
    tail = ["rps_gap", "best_rps", "rps_ratio", "p99_ratio", "best", "unstable"]
    return head + spread + tail


def _spread(values: np.ndarray, metric: str) -> dict:
    """Median, min, max and coefficient of variation (sample std / mean; needs two repeats)."""
    if not len(values):
        return {f"{metric}_{s}": math.nan for s in ("median", "min", "max", "cov")}
    mean = values.mean()
    cov = float(values.std(ddof=1) / mean) if len(values) > 1 and mean else math.nan
    return {
        f"{metric}_median": float(np.median(values)),
        f"{metric}_min": float(values.min()),
        f"{metric}_max": float(values.max()),
        f"{metric}_cov": cov,
    }


def _first(column: pd.Series):
    values = column.dropna()
    return values.iloc[0].item() if len(values) else None


def _median(frame: pd.DataFrame, column: str) -> float:
    if column not in frame or frame[column].isna().all():
        return math.nan
    return float(frame[column].median())


def section(frame: pd.DataFrame, scenario: str, loop: str = "closed") -> pd.DataFrame:
    """The rows (of ``cell_table`` or ``aggregate``) of one scenario's closed or open loop."""
    return frame[(frame["scenario"] == scenario) & (frame["loop"] == loop)]


def comparison_level(agg: pd.DataFrame, scenario: str, loop: str = "closed") -> float | None:
    """The highest load of a scenario at which the most models have included cells (all of them
    when possible): the load the verdict and the latency distribution compare."""
    rows = section(agg, scenario, loop)
    rows = rows[rows["rps_median"].notna()]
    if rows.empty:
        return None
    models = rows.groupby("load")["server"].nunique()
    return float(models[models == models.max()].index.max())


def plateaus(agg: pd.DataFrame, scenario: str, loop: str = "closed") -> dict[str, dict]:
    """Per model, where its median rps stops growing with the load.

    Between two consecutive included loads l0 < l1, rps "stops growing" when it gains less than
    ``PLATEAU_GROWTH`` of the proportional gain ``rps(l0) * (l1/l0 - 1)``. The result gives the
    two loads, the ceiling (the highest median rps from there on), and — for a delayed scenario —
    how many requests that ceiling keeps in service at once (Little's law: rps × delay), to compare
    with the model's slots. Models still growing at their last load are absent.
    """
    out = {}
    rows = section(agg, scenario, loop)
    rows = rows[rows["rps_median"].notna()]
    for server, group in rows.groupby("server", sort=False):
        group = group.sort_values("load")
        loads, rps = group["load"].to_list(), group["rps_median"].to_list()
        for i in range(len(loads) - 1):
            ideal_gain = rps[i] * (loads[i + 1] / loads[i] - 1)
            if rps[i + 1] - rps[i] < PLATEAU_GROWTH * ideal_gain:
                ceiling = max(rps[i:])
                delay = group["delay_ms"].iloc[0]
                out[server] = {
                    "after": float(loads[i]), "before": float(loads[i + 1]),
                    "ceiling_rps": float(ceiling),
                    "in_service": float(ceiling * delay / 1000) if delay else None,
                    "slots": _first(group["slots"]),
                }  # fmt: skip
                break
    return out


def level_latencies(
    cells: pd.DataFrame,
    samples: pd.DataFrame,
    scenario: str,
    server: str,
    load: float,
    loop: str = "closed",
) -> np.ndarray:
    """The in-window latencies of one level's included cells, pooled across repeats and sorted
    (open loop: corrected, from the intended send time)."""
    chosen = section(cells, scenario, loop)
    chosen = chosen[(chosen["server"] == server) & (chosen["load"] == load) & chosen["included"]]
    parts = []
    for row in chosen.itertuples():
        own = samples[samples["cell_id"] == row.cell_id] if not samples.empty else samples
        if own.empty:
            continue
        window = in_window(own, row.window_start, row.window_end)
        latency = corrected_latency_ms(window) if row.rate > 0 else window["latency_ms"]
        parts.append(latency.to_numpy())
    return np.sort(np.concatenate(parts)) if parts else np.array([])


def cdf_points(latencies: np.ndarray, points: int = 200) -> tuple[list[float], list[float]]:
    """An empirical CDF reduced to ``points`` quantiles, plus the far tail (p99.1 … max)."""
    if not len(latencies):
        return [], []
    probs = np.unique(np.concatenate([np.linspace(0, 1, points + 1), np.linspace(0.99, 1, 11)]))
    return np.quantile(latencies, probs).tolist(), probs.tolist()


def compare_runs(agg: pd.DataFrame, baseline: pd.DataFrame) -> pd.DataFrame:
    """``agg`` with the relative change of median rps and p99 against another run's same level."""
    base = baseline[[*LEVEL, "rps_median", "p99_ms_median"]].rename(
        columns={"rps_median": "base_rps", "p99_ms_median": "base_p99_ms"}
    )
    out = agg.merge(base, on=LEVEL, how="left")
    out["rps_change"] = out["rps_median"] / out["base_rps"] - 1
    out["p99_change"] = out["p99_ms_median"] / out["base_p99_ms"] - 1
    return out


KNEE_SHORTFALL = 0.9  # achieved below 90 % of the offered rate: the server fell behind
KNEE_LATENCY = 3.0  # or corrected p50 above 3× the scenario's delay: a queue is building


def knees(agg: pd.DataFrame, scenario: str) -> dict[str, dict]:
    """Per model, where an open loop's hockey stick bends: the last offered rate it kept up with
    and the first it did not, beside the predicted capacity ``slots / delay``."""
    rows = section(agg, scenario, "open")
    found = {}
    for server, group in rows[rows["rps_median"].notna()].groupby("server", sort=False):
        group = group.sort_values("load")
        delay = _first(group["delay_ms"]) or 0
        slots = _first(group["slots"])
        behind = (group["rps_median"] < KNEE_SHORTFALL * group["load"]) | (
            delay > 0 and group["p50_ms_median"] > KNEE_LATENCY * delay
        )
        first_bad = group[behind]["load"].min()
        kept_up = group[group["load"] < first_bad]["load"] if behind.any() else group["load"]
        found[server] = {
            "kept_up_to": float(kept_up.max()) if len(kept_up) else None,
            "fell_behind_at": float(first_bad) if behind.any() else None,
            "capacity_rps": slots * 1000 / delay if slots and delay else None,
        }
    return found
