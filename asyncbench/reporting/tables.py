"""The per-level table of each report section, its columns declared once for both row types.

A table has a row per model and load (the aggregate over included repeats) and, under it, a
greyed row per excluded cell (with its reason). Each ``Column`` says its header and how it reads
either kind of row, so the two row types cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from asyncbench.judging import analyze
from asyncbench.reporting import view
from asyncbench.reporting.view import Section


@dataclass(frozen=True)
class Column:
    header: str
    level: Callable[[pd.Series], str]  # from an ``analyze.aggregate`` row
    cell: Callable[[pd.Series], str] = lambda c: ""  # from an excluded ``cell_table`` row


def _missed(r: pd.Series) -> str:
    return " · ".join("—" if view.missing(v) else f"{v:.0f}" for v in
                      (r["late_sends"], r["dropped_sends"]))  # fmt: skip


def _uncorrected(r: pd.Series) -> str:
    if view.missing(r["p50_uncorrected_ms"]):
        return "—"
    return f"{view.ms(r['p50_uncorrected_ms'])} · {view.ms(r['p99_uncorrected_ms'])}"


def _explained(predicted, gap) -> str:
    """The second prediction (overhead and CPU demands) and how far the measurement is off."""
    return "—" if view.missing(predicted) else f"{view.rps(predicted)} ({view.pct(gap)})"


def _pair(queue, lag) -> str:
    queued = "—" if view.missing(queue) else f"{queue:.0f}"
    return f"{queued} · {view.ms(lag)}"


def _split(handler, outside) -> str:
    return "—" if view.missing(handler) else f"{view.ms(handler)} · {view.ms(outside)}"


def _memory(rss, per_request) -> str:
    """Server RSS, and what each request in flight costs over the idle server."""
    if view.missing(rss):
        return "—"
    return f"{rss:.0f} · {'—' if view.missing(per_request) else f'{per_request:,.0f}'}"


def _share(share, workers) -> str:
    """The busiest serving process's share of the window's requests, against a fair 1/workers."""
    if view.missing(share) or share >= 0.999:  # one process: nothing to balance
        return "—"
    return f"{share:.0%} (fair {1 / workers:.0%})" if workers else f"{share:.0%}"


def _landing(c) -> str:
    """A cell's busiest worker, and how its users landed on the workers where they stayed."""
    share = _share(c.get("busiest_process_share"), c["workers"])
    users = str(c.get("process_users") or "")
    return f"{share} · users {users}" if share != "—" and len(users.split()) > 1 else share


def _load(r: pd.Series) -> str:
    return f"{r['load']:g}"


# The binding limit the judging named (``judging.bottleneck``), a level's most common.
LIMIT = Column("limit", lambda r: r.get("bottleneck") or "", lambda c: c.get("bottleneck") or "")

COMMON = (
    Column("users", _load, _load),
    Column("repeats", lambda r: f"{r['repeats']}/{r['cells']}", lambda c: c["status"]),
    Column("req/s", lambda r: view.rps(r["rps_median"]), lambda c: view.rps(c["rps"])),
    Column("min–max", lambda r: view.span(r["rps_min"], r["rps_max"], view.rps)),
    Column("CoV", lambda r: view.pct(r["rps_cov"], plus=False)),
    Column("predicted", lambda r: view.rps(r["predicted_rps"])),
    Column("vs pred.", lambda r: view.pct(r["rps_gap"])),
    Column("vs best", lambda r: view.ratio(r["rps_ratio"])),
    Column("explained (gap)", lambda r: _explained(r["explained_rps"], r["explained_gap"]),
           lambda c: _explained(c.get("explained_rps"), c.get("explained_gap"))),
    Column("p50 ms", lambda r: view.ms(r["p50_ms_median"]), lambda c: view.ms(c["p50_ms"])),
    Column("p90 ms", lambda r: view.ms(r["p90_ms_median"]), lambda c: view.ms(c["p90_ms"])),
    Column("p99 ms", lambda r: view.ms(r["p99_ms_median"]), lambda c: view.ms(c["p99_ms"])),
    Column("p99 min–max", lambda r: view.span(r["p99_ms_min"], r["p99_ms_max"], view.ms)),
    Column("in handler · outside p50 ms",
           lambda r: _split(r["handler_p50_ms"], r["outside_p50_ms"]),
           lambda c: _split(c.get("handler_p50_ms"), c.get("outside_p50_ms"))),
    Column("accept queue · loop lag ms",
           lambda r: _pair(r["accept_queue_max"], r["loop_lag_max_ms"]),
           lambda c: _pair(c.get("accept_queue_max"), c.get("loop_lag_max_ms"))),
    LIMIT,
    Column("RSS MB · KB/req", lambda r: _memory(r["rss_server_mb"], r["rss_per_inflight_kb"]),
           lambda c: _memory(c["rss_server_mb"], c.get("rss_per_inflight_kb"))),
    Column("busiest worker", lambda r: _share(r["busiest_process_share"], r["workers"]),
           _landing),
    Column("CPU server · locust · all",
           lambda r: view.cpus(r["cpu_server"], r["cpu_locust"], r["cpu_machine"]),
           lambda c: view.cpus(c["cpu_server"], c["cpu_locust"], c.get("cpu_machine"))),
)  # fmt: skip
OPEN_LOOP = (
    # corrected latency above; what a closed-loop tool would have reported here
    Column("uncorrected p50 · p99", _uncorrected),
    Column("late · dropped sends", _missed),
)
def _against_base(metric: str):
    """The change against the baseline with ``asyncbench compare``'s interval, e.g.
    ``+2% (−3% to +7%)``; a regression beyond the noise floor is marked."""

    def text(r: pd.Series) -> str:
        low, high = r.get(f"base_{metric}_low"), r.get(f"base_{metric}_high")
        change = view.pct(r.get(f"{'rps' if metric == 'rps' else 'p99'}_change"))
        if view.missing(low) or view.missing(high):
            return change
        worse = " worse" if r.get(f"base_{metric}_verdict") == "loses" else ""
        return f"{change} ({view.pct(low - 1)} to {view.pct(high - 1)}){worse}"

    return text


BASELINE = (
    Column("Δ req/s (95 % CI)", _against_base("rps")),
    Column("Δ p99 (95 % CI)", _against_base("p99")),
)


def columns_for(sec: Section, with_baseline: bool) -> list[Column]:
    first = Column("offered", _load, _load) if sec.loop == "open" else COMMON[0]
    chosen = [first, *COMMON[1:]]
    if sec.loop == "open":
        chosen += OPEN_LOOP
    if with_baseline:
        chosen += BASELINE
    return chosen


def level_table(sec: Section, models, palette, with_baseline: bool, columns=None) -> dict:
    """One row per model and load; each excluded cell gets its own greyed row with the reason."""
    columns = columns or columns_for(sec, with_baseline)
    rows = []
    for model in models:
        for _, r in sec.agg[sec.agg["server"] == model].sort_values("load").iterrows():
            rows.append(_level_row(r, model, columns, palette[model]))
            excluded = sec.cells[(sec.cells["server"] == model) & (sec.cells["load"] == r["load"])
                                 & ~sec.cells["included"]]  # fmt: skip
            for _, c in excluded.sort_values("repeat").iterrows():
                rows.append(_excluded_row(c, columns, palette[model]))
    headers = ["model", *(c.header for c in columns)]
    return {"columns": headers, "rows": rows, "width": len(headers) + 1}


def _level_row(r: pd.Series, model: str, columns: list[Column], color: str) -> dict:
    measured = not view.missing(r["rps_median"])
    note = "" if measured else "no valid repeat"
    if measured and r["unstable"]:
        note = f"unstable ({_unstable(r)})"
    css = ("best " if r["best"] else "") + ("" if measured else "excluded")
    return {"label": model, "values": [c.level(r) for c in columns], "css": css.strip(),
            "note": note, "color": color}  # fmt: skip


def _excluded_row(c: pd.Series, columns: list[Column], color: str) -> dict:
    return {"label": f"↳ repeat {c['repeat']}", "values": [col.cell(c) for col in columns],
            "css": "excluded", "note": f"{c['status']}: {c['reason']}", "color": color}  # fmt: skip


def _unstable(row: pd.Series) -> str:
    """The metric of a level that varies most across repeats, e.g. ``p99 CoV 44%``."""
    covs = {m: row[f"{m}_cov"] for m in analyze.SPREAD_METRICS
            if not view.missing(row[f"{m}_cov"])}  # fmt: skip
    worst = max(covs, key=covs.get)
    return f"{worst.removesuffix('_ms')} CoV {covs[worst]:.0%}"
