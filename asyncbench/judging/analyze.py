"""Analysis across cells: repeats aggregated per level, predictions, plateaus, knees, verdicts.

Raw samples are the truth: ``cell_table`` re-evaluates every measured cell from its stored raw
facts with ``evaluate.evaluate_cell`` (the one judgement), and everything else here is computed
from that table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from asyncbench.judging.comparison import Comparison, compare
from asyncbench.judging.evaluate import corrected_latency_ms, in_window
from asyncbench.judging.explanation import median_of, with_explained_prediction
from asyncbench.judging.noise import NoiseFloors
from asyncbench.judging.resources import ResourceUsage
from asyncbench.judging.workloads import judge_of
from asyncbench.planning.kinds import RECORDED_ENDPOINTS, section_of_endpoint
from asyncbench.planning.plan import AA

if TYPE_CHECKING:
    from asyncbench.storing.store import RunDir

# --- Across cells: the comparison the report shows ----------------------------------------------
#
# A "level" is one scenario × server × load, where the load is the number of users (closed loop)
# or the offered rate (open loop, ``rate`` > 0); its repeats are the cells. Only *included* cells
# (valid and status "ok") enter a level's statistics; the others are kept, with their reason, so
# the report can show them greyed out. A scenario's closed-loop and open-loop levels are
# compared separately (``loop`` is "closed" or "open").

LEVEL = ["scenario", "server", "rate", "users"]
CONFIDENCE = 0.95  # of every interval on a comparison
SPREAD_METRICS = ("rps", "p50_ms", "p90_ms", "p99_ms")
UNSTABLE_COV = 0.10  # a spread across repeats above this is flagged, not hidden (as pyperf does)


def included(results: pd.DataFrame) -> pd.Series:
    """Which cells count: valid and measured (``status == "ok"``); never the invalid or failed."""
    valid = results["valid"].astype(str).str.lower().eq("true")
    return valid & results["status"].astype(str).eq("ok")


def cell_table(
    results: pd.DataFrame,
    samples: pd.DataFrame,
    resources: pd.DataFrame | None = None,
    deliveries: pd.DataFrame | None = None,
    messages: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """``results.csv`` with every measured cell re-evaluated from its stored raw facts (samples,
    resource samples, window, abandoned requests; a room's deliveries and messages) by its
    workload: the same judgement the runner made, with today's rules. Adds ``included``,
    ``loop`` and ``load`` columns.

    A cell without samples (a failed one) keeps its stored numbers and status.
    """
    cells = results.copy().reset_index(drop=True)
    cells["reason"] = cells["reason"].fillna("").astype(str)
    cells["rate"] = cells["rate"].fillna(0.0) if "rate" in cells else 0.0
    if not samples.empty and len(cells):
        facts = {name: _by_cell(frame) for name, frame in (
            ("samples", samples), ("resources", resources), ("deliveries", deliveries),
            ("messages", messages))}  # fmt: skip
        updates = {}
        for i, row in cells.iterrows():
            own = {name: found.get(row["cell_id"], pd.DataFrame()) for name, found in facts.items()}
            if own["samples"].empty or row["status"] == "failed" or pd.isna(row["window_start"]):
                continue
            judge = judge_of(RECORDED_ENDPOINTS[row["endpoint"]])
            changed = judge.reevaluate(row, own, _stored_usage(row))
            updates[i] = {**changed, **judge.derived({**row.to_dict(), **changed})}
        cells = _apply(cells, updates)
    cells["replica"] = cells["replica"].fillna("") if "replica" in cells else ""
    return with_explained_prediction(with_levels(cells))


def stored_cells(run: RunDir, samples: pd.DataFrame | None = None) -> pd.DataFrame:
    """``cell_table`` of a stored run from every raw fact it keeps: without its deliveries and
    messages a room cell cannot be re-evaluated (its status and reason come back empty)."""
    samples = run.samples() if samples is None else samples
    return cell_table(run.results(), samples, run.resources(), run.deliveries(), run.messages())


def with_levels(cells: pd.DataFrame) -> pd.DataFrame:
    """``included``, ``loop`` (open or closed) and ``load`` (offered rate or users)."""
    rate = cells["rate"].fillna(0.0)
    return cells.assign(
        included=included(cells) if len(cells) else pd.Series(dtype=bool),
        loop=np.where(rate > 0, "open", "closed"),
        load=np.where(rate > 0, rate, cells["users"]).astype(float),
    )


def explain(results: pd.DataFrame) -> pd.DataFrame:
    """``results.csv`` rows with their second prediction filled in from the stored numbers
    (what the runner stores as each cell arrives; the report recomputes it after re-judging)."""
    cells = results.reset_index(drop=True)
    work = with_explained_prediction(with_levels(cells))
    named = {"bottleneck": work["bottleneck"]} if "bottleneck" in work else {}  # with it
    return cells.assign(explained_rps=work["explained_rps"], explained_gap=work["explained_gap"],
                        **named)  # fmt: skip


def explain_model(results: pd.DataFrame, scenario: str, server: str) -> pd.DataFrame:
    """``explain`` for the cells of one scenario and model, the rest unchanged: a new cell
    changes no other model's second prediction (a run stores a cell in constant time)."""
    columns = ["explained_rps", "explained_gap"]
    results = results.reset_index(drop=True).astype(dict.fromkeys(columns, float))
    mine = (results["scenario"] == scenario) & (results["server"] == server)
    columns += ["bottleneck"] if "bottleneck" in results else []
    results.loc[mine, columns] = explain(results[mine])[columns].to_numpy()
    return results


def _apply(cells: pd.DataFrame, updates: dict[int, dict]) -> pd.DataFrame:
    """Write re-evaluated columns back, one column at a time (a cell at a time is slow)."""
    if not updates:
        return cells
    frame = pd.DataFrame.from_dict(updates, orient="index")
    for column in frame.columns:
        if column not in cells:
            cells[column] = None
        if cells[column].dtype != object and frame[column].dtype == object:
            cells[column] = cells[column].astype(object)
        cells.loc[frame.index, column] = frame[column]
    return cells


def _stored_usage(row: pd.Series) -> ResourceUsage:
    """The resource means stored in ``results.csv`` (for a cell whose samples are gone)."""
    stored = {f.name: row.get(f.name) for f in fields(ResourceUsage)}
    known = {k: v for k, v in stored.items() if v is not None and not pd.isna(v)}
    return ResourceUsage(**{k: v if isinstance(v, str) else float(v) for k, v in known.items()})


def _by_cell(frame: pd.DataFrame | None) -> dict[str, pd.DataFrame]:
    if frame is None or frame.empty or "cell_id" not in frame:
        return {}
    return dict(tuple(frame.groupby("cell_id", sort=False)))


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
            **{c: first_of(group[c]) if c in group else None for c in LEVEL_FACTS},
            **{c: median_of(kept, c) for c in LEVEL_MEDIANS},
            "bottleneck": _most_common(kept, "bottleneck"),
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


# Facts shared by a level's repeats (taken from the first that has them).
LEVEL_FACTS = ("delay_ms", "workers", "threads", "slots", "slot_limit", "predicted_rps", "spawn",
               "predicted_held")  # fmt: skip
# Open loop only: the uncorrected latency (from the actual send) and the missed schedule.
OPEN_LOOP_MEDIANS = ("p50_uncorrected_ms", "p99_uncorrected_ms", "late_sends", "dropped_sends")
# Medians over a level's included repeats.
WHY_MEDIANS = ("handler_p50_ms", "outside_p50_ms", "accept_queue_max", "loop_lag_max_ms",
               "cpu_ms_server",
               "cpu_ms_locust", "explained_rps", "explained_gap")  # fmt: skip
ROOM_MEDIANS = ("delivery_p50_ms", "delivery_p99_ms", "last_member_p50_ms", "members_held",
                "members_held_max", "mem_per_member_kb", "probe_p50_ms", "probe_p99_ms", "lost",
                "member_errors", "members_connected", "reconnects",
                "cpu_ms_per_delivery")  # fmt: skip
LEVEL_MEDIANS = ("cpu_server", "cpu_locust", "cpu_machine", *OPEN_LOOP_MEDIANS, "rss_server_mb",
                 "rss_per_inflight_kb", "busiest_process_share", *ROOM_MEDIANS,
                 *WHY_MEDIANS)  # fmt: skip


def _aggregate_columns() -> list[str]:
    head = [*LEVEL, "loop", "load", "cells", "repeats", "invalid", "failed", *LEVEL_FACTS,
            *LEVEL_MEDIANS, "bottleneck", "reasons"]  # fmt: skip
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


def first_of(column: pd.Series):
    values = column.dropna()
    values = values[values != ""] if values.dtype == object else values
    if not len(values):
        return None
    value = values.iloc[0]
    return value.item() if hasattr(value, "item") else value


def _most_common(frame: pd.DataFrame, column: str) -> str:
    if column not in frame:
        return ""
    values = frame[column].dropna().astype(str)
    values = values[values != ""]
    return values.mode().iloc[0] if len(values) else ""


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


def split_replicas(cells: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``cell_table`` rows → (the regular cells, the A/A pair's copies). Only the regular cells
    enter aggregates, tables, figures and verdicts; the copies only measure the noise floor."""
    copy = cells["replica"].eq(AA) if "replica" in cells else pd.Series(False, cells.index)
    return cells[~copy], cells[copy]


def repeat_table(cells: pd.DataFrame) -> pd.DataFrame:
    """One row per included regular request cell: the per-repeat values the regression gate
    takes as the unit."""
    regular, _ = split_replicas(cells)
    kept = regular[regular["included"]] if len(regular) else regular
    kept = kept[kept["p99_ms"].notna()]  # a room level has no request p99 (``room_repeat_table``)
    return kept[["scenario", "server", "users", "rate", "repeat", "rps", "p99_ms"]]


def room_repeat_table(cells: pd.DataFrame) -> pd.DataFrame:
    """One row per measured regular room cell (not failed), ``included`` or not: the gate reads
    a room level's delivery p99 from its included cells and its lost deliveries from every one
    (a cell that lost any is excluded, yet its loss is the regression)."""
    columns = ["scenario", "server", "users", "rate", "repeat", "rps", "p99_ms",
               "delivery_p99_ms", "lost", "included"]  # fmt: skip
    regular, _ = split_replicas(cells)
    if regular.empty or "endpoint" not in regular or "lost" not in regular:
        return pd.DataFrame(columns=[*columns, "room"])
    rooms = regular[regular["endpoint"].map(section_of_endpoint) == "room"]
    measured = rooms[(rooms["status"] != "failed") & rooms["lost"].notna()]
    return measured[columns].assign(room=True)


def gate_table(cells: pd.DataFrame) -> pd.DataFrame:
    """What ``regression.gate`` judges: ``repeat_table``'s request rows, then
    ``room_repeat_table``'s."""
    requests = repeat_table(cells).assign(room=False, included=True)
    rooms = room_repeat_table(cells)
    parts = [table for table in (requests, rooms) if len(table)]
    return pd.concat(parts, ignore_index=True) if parts else requests


@dataclass(frozen=True)
class ModelComparison:
    """The level's best model against another model at the comparison level: the ratios of
    their repeats' throughput and p99, each with its interval and verdict."""

    other: str
    rps: Comparison
    p99: Comparison


def compare_models(
    cells: pd.DataFrame, load: float, winner: str, others: list[str], floors: NoiseFloors
) -> list[ModelComparison]:
    """The win/tie decision at one load of a section (``cells``: its included regular cells):
    ``comparison.compare`` on the repeats, repeats as the unit. A win needs the interval to
    exclude 1 *and* the ratio to exceed the noise floor; otherwise "no clear difference"."""
    at = cells[(cells["load"] == load) & cells["included"]]
    mine = at[at["server"] == winner]
    out = []
    for other in others:
        theirs = at[at["server"] == other]
        rps, p99 = (
            compare(mine[column], theirs[column], floors.of(column), a_label=winner,
                    b_label=other, metric=metric, higher_is_better=higher,
                    confidence=CONFIDENCE)
            for column, metric, higher in (("rps", "rps", True), ("p99_ms", "p99", False))
        )  # fmt: skip
        out.append(ModelComparison(other, rps, p99))
    return out


def compare_runs(
    agg: pd.DataFrame, baseline: pd.DataFrame, intervals: pd.DataFrame | None = None
) -> pd.DataFrame:
    """``agg`` with the relative change of median rps and p99 against another run's same level,
    and (``intervals``: ``gate.GateResult.to_frame()``) the run/baseline ratios with their
    intervals and verdicts as ``base_rps_ratio``, ``base_rps_low`` … ``base_p99_verdict``."""
    base = baseline[[*LEVEL, "rps_median", "p99_ms_median"]].rename(
        columns={"rps_median": "base_rps", "p99_ms_median": "base_p99_ms"}
    )
    out = agg.merge(base, on=LEVEL, how="left")
    out["rps_change"] = out["rps_median"] / out["base_rps"] - 1
    out["p99_change"] = out["p99_ms_median"] / out["base_p99_ms"] - 1
    if intervals is not None and len(intervals):
        named = {c: f"base_{c}" for c in intervals.columns if c not in LEVEL}
        out = out.merge(intervals.rename(columns=named), on=LEVEL, how="left")
    return out


