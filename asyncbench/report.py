"""The report: one self-contained HTML page per run, built as plain data first, then rendered.

``report_data`` turns a run directory into a JSON-serialisable dict of everything the page shows
(verdicts, banners, plotly figure specs, tables, configuration); ``render`` turns that dict into
HTML with ``templates/report.html`` (autoescaped, no logic beyond loops and ifs). The page works
offline: plotly.js is inlined once, nothing is fetched from anywhere.
"""

from __future__ import annotations

import copy
import math
import os
import shlex
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import jinja2
import markupsafe
import pandas as pd
import plotly.io as pio

from asyncbench import analyze, figures
from asyncbench import metadata as run_metadata
from asyncbench.store import RunDir, RunMeta

TEMPLATES = Path(__file__).resolve().parent / "templates"
PLOT_CONFIG = {"displaylogo": False, "displayModeBar": False, "responsive": True}
GAP_WORTH_EXPLAINING = 0.10  # |measured / predicted - 1| above this is called out in the verdict
CLEAR_WIN = 1.5  # "N×" from here on; below it, a percentage
TIE = 1.10  # less than 10% apart with overlapping min–max ranges: no winner


def build_report(run: RunDir, baseline: RunDir | None = None) -> Path:
    """Write ``<run>/index.html`` (replacing it atomically) and return its path."""
    html = render(report_data(run, baseline))
    target = run.path / "index.html"
    tmp = target.with_suffix(".html.tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, target)
    return target


@dataclass(frozen=True)
class _Section:
    """One block of the page: a scenario's closed-loop (or open-loop) levels."""

    scenario: str
    loop: str  # "closed" (load = users) or "open" (load = offered req/s)
    spec: dict
    cells: pd.DataFrame
    agg: pd.DataFrame

    @property
    def name(self) -> str:
        return self.scenario if self.loop == "closed" else f"{self.scenario} (open loop)"

    @property
    def slug(self) -> str:
        return self.scenario if self.loop == "closed" else f"{self.scenario}-open"

    @property
    def load_title(self) -> str:
        return "concurrent users" if self.loop == "closed" else "offered load, req/s"

    def at(self, load: float) -> str:
        if self.loop == "open":
            return f"{load:g} req/s offered"
        return f"{load:g} user" if load == 1 else f"{load:g} users"


# --- Data -----------------------------------------------------------------------------------


def report_data(run: RunDir, baseline: RunDir | None = None) -> dict:
    """Everything the page shows, as plain JSON-serialisable data."""
    meta = run.read_meta()
    samples = run.samples()
    cells = analyze.cell_table(run.results(), samples)
    agg = analyze.aggregate(cells)
    if baseline is not None:
        base_cells = analyze.cell_table(baseline.results(), baseline.samples())
        agg = analyze.compare_runs(agg, analyze.aggregate(base_cells))
    models = _model_order(meta, cells)
    palette = figures.colors(models)
    blocks = [
        _section_data(section, meta, samples, models, palette, baseline is not None)
        for section in _sections(meta, cells, agg)
    ]
    return {
        "title": f"asyncbench · run {meta.run_id}",
        "run_id": meta.run_id,
        "status": meta.status,
        "created": _when(meta.created),
        "updated": _when(meta.updated),
        "generated": _when(datetime.now(UTC).timestamp()),
        "generator": ", ".join(
            f"{name} {version}" for name, version in
            run_metadata.package_versions(("asyncbench", "plotly", "jinja2", "pandas")).items()
        ),
        "baseline": baseline.run_id if baseline is not None else None,
        "banners": _banners(meta, cells, baseline),
        "verdicts": [{"name": b["name"], "anchor": b["anchor"], **b["verdict"]} for b in blocks],
        "models": [{"name": m, "color": palette[m]} for m in models],
        "has_excluded": bool((~cells["included"]).any()),
        "scenarios": blocks,
        "config": _config(meta),
    }


def _sections(meta: RunMeta, cells: pd.DataFrame, agg: pd.DataFrame) -> list[_Section]:
    names = list(meta.scenarios) + sorted(set(cells["scenario"]) - set(meta.scenarios))
    out = []
    for name in names:
        spec = meta.scenarios.get(name, {})
        loops = [loop for loop in ("closed", "open") if len(analyze.section(cells, name, loop))]
        for loop in loops or ["closed"]:
            out.append(
                _Section(name, loop, spec, analyze.section(cells, name, loop),
                         analyze.section(agg, name, loop))
            )  # fmt: skip
    return out


def _section_data(sec: _Section, meta, samples, models, palette, with_baseline: bool) -> dict:
    level = analyze.comparison_level(sec.agg, sec.scenario, sec.loop)
    charts = [
        figures.throughput(f"fig-{sec.slug}-throughput", sec.agg, sec.cells, models, palette,
                           sec.load_title),
        figures.latency(f"fig-{sec.slug}-latency", sec.agg, models, palette, sec.load_title),
    ]  # fmt: skip
    if level is not None:
        latencies = {
            m: analyze.level_latencies(sec.cells, samples, sec.scenario, m, level, sec.loop)
            for m in models
        }
        kind = "corrected latency" if sec.loop == "open" else "raw samples"
        title = f"Latency CDF at {sec.at(level)} ({kind}, repeats pooled)"
        charts.append(figures.cdf(f"fig-{sec.slug}-cdf", title, latencies, palette))
    return {
        "name": sec.name,
        "anchor": f"scenario-{sec.slug}",
        "description": sec.spec.get("description", ""),
        "path": _request_path(sec.spec),
        "verdict": _verdict(sec, meta),
        "figures": charts,
        "table": _table(sec, models, palette, with_baseline),
    }


def _verdict(sec: _Section, meta: RunMeta) -> dict:
    """The section's verdict, computed from the aggregates: a headline and its evidence."""
    level = analyze.comparison_level(sec.agg, sec.scenario, sec.loop)
    if level is None:
        reasons = sorted({r for r in sec.cells["reason"] if r}) or ["no cell has results yet"]
        return {
            "headline": "No valid measurements.",
            "text": f"All {len(sec.cells)} cells of {sec.name} are excluded: {'; '.join(reasons)}.",
        }
    rows = sec.agg[(sec.agg["load"] == level) & sec.agg["rps_median"].notna()]
    rows = rows.sort_values("rps_median", ascending=False)
    winner, others = rows.iloc[0], rows.iloc[1:]
    at = sec.at(level)
    sentences = []
    if others.empty:
        headline = f"Only {winner['server']} has valid cells at {at}."
        sentences.append(f"It served {_rps(winner['rps_median'])} req/s.")
    else:
        margins = [_margin(winner, other) for _, other in others.iterrows()]
        runner_up = others.iloc[0]
        if margins[0].startswith("tied"):
            headline = (
                f"No clear winner at {at}: {winner['server']} and {runner_up['server']} are "
                "within the spread across repeats."
            )
        else:
            ratio = winner["rps_median"] / runner_up["rps_median"]
            lead = f"{ratio:.1f}×" if ratio >= CLEAR_WIN else f"{ratio - 1:.0%} more than"
            headline = (
                f"{winner['server']} wins at {at}: {lead} {runner_up['server']}'s throughput."
            )
        sentences.append(
            f"At {at}, the highest load where the most models have valid cells, it served "
            f"{_rps(winner['rps_median'])} req/s: " + ", ".join(margins) + "."
        )
        p99 = ", ".join(f"{r['server']} {_ms(r['p99_ms_median'])} ms" for _, r in rows.iterrows())
        sentences.append(f"Median p99 there: {p99}.")
    sentences += _knee_sentences(sec) if sec.loop == "open" else _plateau_sentences(sec, meta)
    sentences += _prediction_sentences(sec)
    excluded = int((~sec.cells["included"]).sum())
    unstable = int(sec.agg["unstable"].sum())
    if excluded or unstable:
        parts = [f"{excluded} of {len(sec.cells)} cells excluded"] if excluded else []
        if unstable:
            parts.append(
                f"{unstable} of {len(sec.agg)} levels vary by more than "
                f"{analyze.UNSTABLE_COV:.0%} CoV across repeats"
            )
        text = " and ".join(parts)
        sentences.append(text[0].upper() + text[1:] + " (see the table).")
    return {"headline": headline, "text": " ".join(sentences)}


def _margin(winner: pd.Series, other: pd.Series) -> str:
    """How the winner compares with one other model, e.g. ``7.6× tornado-forked (40.0 req/s)``."""
    ratio = winner["rps_median"] / other["rps_median"] if other["rps_median"] else math.inf
    theirs = f"{other['server']} ({_rps(other['rps_median'])} req/s)"
    if winner["rps_min"] <= other["rps_max"] and ratio < TIE:
        return f"tied with {theirs} within the spread across repeats"
    if ratio >= CLEAR_WIN:
        return f"{ratio:.1f}× {theirs}"
    return f"{ratio - 1:.0%} more than {theirs}"


def _unstable(row: pd.Series) -> str:
    """The metric of a level that varies most across repeats, e.g. ``p99 CoV 44%``."""
    covs = {m: row[f"{m}_cov"] for m in analyze.SPREAD_METRICS if not _missing(row[f"{m}_cov"])}
    worst = max(covs, key=covs.get)
    return f"{worst.removesuffix('_ms')} CoV {covs[worst]:.0%}"


def _plateau_sentences(sec: _Section, meta: RunMeta) -> list[str]:
    """Where each model stops growing, compared with its slots (Little's law: rps × delay)."""
    found = analyze.plateaus(sec.agg, sec.scenario, sec.loop)
    delay = sec.spec.get("delay_ms") or 0
    unit = "users" if sec.loop == "closed" else "req/s offered"
    limited, unexplained, cpu_bound = [], [], []
    for server, p in found.items():
        where = f"{server} between {p['after']:g} and {p['before']:g} {unit}"
        if p["in_service"] is None:
            cpu_bound.append(f"{where} ({_rps(p['ceiling_rps'])} req/s)")
        elif p["slots"]:
            kind = "workers" if meta.servers.get(server, {}).get("blocking") else "slots"
            limited.append(
                f"{where} at {_rps(p['ceiling_rps'])} req/s, {p['in_service']:.1f} requests in "
                f"service (rps × {delay} ms) for its {p['slots']:.0f} {kind}"
            )
        else:
            unexplained.append(
                f"{where} at {_rps(p['ceiling_rps'])} req/s ({p['in_service']:.1f} in service)"
            )
    out = []
    if limited:
        out.append("Throughput stops growing at the slot limit: " + "; ".join(limited) + ".")
    if unexplained:
        out.append(
            "Stops growing with no slot limit, a bottleneck to explain: "
            + "; ".join(unexplained)
            + "."
        )
    if cpu_bound:
        out.append(
            "Throughput stops growing (no I/O to overlap, so CPU-bound): "
            + "; ".join(cpu_bound)
            + "."
        )
    rows = sec.agg[sec.agg["rps_median"].notna()]
    still = [
        f"{server} (up to {sec.at(group['load'].max())})"
        for server, group in rows.groupby("server", sort=False)
        if server not in found and group["load"].nunique() > 1
    ]
    if still:
        out.append("Still scaling: " + ", ".join(still) + ".")
    return out


def _knee_sentences(sec: _Section) -> list[str]:
    """Where each model's corrected latency turns upwards (the knee of the hockey stick)."""
    parts = []
    for server, knee in analyze.knees(sec.agg, sec.scenario).items():
        capacity = knee["capacity_rps"]
        expected = f" (predicted capacity {_rps(capacity)} req/s)" if capacity else ""
        if knee["fell_behind_at"] is None:
            parts.append(f"{server} kept up to {knee['kept_up_to']:g} req/s{expected}")
        elif knee["kept_up_to"] is None:
            parts.append(f"{server} fell behind already at {knee['fell_behind_at']:g} req/s"
                         f"{expected}")  # fmt: skip
        else:
            parts.append(f"{server} between {knee['kept_up_to']:g} and "
                         f"{knee['fell_behind_at']:g} req/s{expected}")  # fmt: skip
    if not parts:
        return []
    return [
        "Knee, where the server falls behind the offered rate and corrected latency climbs: "
        + "; ".join(parts) + ". Past it, the queue grows for as long as the load lasts."
    ]


def _prediction_sentences(sec: _Section) -> list[str]:
    rows = sec.agg[sec.agg["rps_gap"].notna()]
    if rows.empty:
        return ["No queueing prediction applies (no delay): this measures framework cost."]
    order = rows["rps_gap"].abs().sort_values(ascending=False).index
    worst, others = rows.loc[order[0]], rows.loc[order[1:]]
    others = others[others["rps_gap"].abs() > GAP_WORTH_EXPLAINING].head(3)
    also = "; ".join(
        f"{r['server']} at {sec.at(r['load'])} {r['rps_gap']:+.0%}" for _, r in others.iterrows()
    )
    if abs(worst["rps_gap"]) <= GAP_WORTH_EXPLAINING:
        closed = sec.loop == "closed"
        formula = "min(users, slots) / delay" if closed else "min(rate, slots / delay)"
        return [
            f"Measured throughput is within {abs(worst['rps_gap']):.0%} of the queueing "
            f"prediction {formula} everywhere."
        ]
    return [
        f"Largest gap to the prediction: {worst['server']} at {sec.at(worst['load'])} measured "
        f"{_rps(worst['rps_median'])} req/s against {_rps(worst['predicted_rps'])} predicted "
        f"({worst['rps_gap']:+.0%}; CPU there: {_cpu_context(worst)}) — a finding to explain, "
        "not to hide." + (f" Other gaps above {GAP_WORTH_EXPLAINING:.0%}: {also}." if also else "")
    ]


def _cpu_context(row: pd.Series) -> str:
    parts = [("server", "cpu_server", "of a core"), ("Locust", "cpu_locust", "of a core"),
             ("machine", "cpu_machine", "of all cores")]  # fmt: skip
    shown = [
        f"{name} {row[col]:.0f}% {unit}" for name, col, unit in parts if not _missing(row[col])
    ]
    return ", ".join(shown) or "not sampled"


def _banners(meta: RunMeta, cells: pd.DataFrame, baseline: RunDir | None) -> list[dict]:
    banners = []
    if meta.status != "complete":
        done = set(cells["cell_id"])
        missing = [c for c in meta.planned_cells if c not in done]
        banners.append({
            "level": "warn" if meta.status == "running" else "error",
            "text": f"This run is {meta.status}, not complete: {len(done)} of "
            f"{len(meta.planned_cells) or len(done)} planned cells have results"
            + (f" ({len(missing)} missing)" if missing else "")
            + ". Numbers below are partial.",
        })  # fmt: skip
    excluded = cells[~cells["included"]]
    if len(excluded):
        counts = ", ".join(
            f"{n} {status}" for status, n in excluded["status"].value_counts().items()
        )
        banners.append({
            "level": "warn",
            "text": f"{len(excluded)} of {len(cells)} cells are excluded from the aggregates "
            f"({counts}); they are greyed in the tables with their reason.",
        })  # fmt: skip
    if baseline is not None:
        banners.append({
            "level": "info",
            "text": f"Δ columns compare with run {baseline.run_id} (same scenario, model, load).",
        })  # fmt: skip
    return banners


# --- Tables ----------------------------------------------------------------------------------


def _table(sec: _Section, models, palette, with_baseline: bool) -> dict:
    """One row per model and load; each excluded cell gets its own greyed row with the reason."""
    open_loop = sec.loop == "open"
    columns = ["model", "offered" if open_loop else "users", "repeats", "req/s",
               "min–max", "CoV", "predicted", "vs pred.", "vs best", "p50 ms", "p90 ms",
               "p99 ms", "p99 min–max", "CPU server · locust · all"]  # fmt: skip
    if open_loop:  # corrected latency above; what a closed-loop tool would have reported here
        columns += ["uncorrected p50 · p99", "late · dropped sends"]
    if with_baseline:
        columns += ["Δ req/s", "Δ p99"]
    rows = []
    for model in models:
        for _, r in sec.agg[sec.agg["server"] == model].sort_values("load").iterrows():
            measured = not _missing(r["rps_median"])
            values = [
                model, f"{r['load']:g}", f"{r['repeats']}/{r['cells']}", _rps(r["rps_median"]),
                _range(r["rps_min"], r["rps_max"], _rps), _pct(r["rps_cov"], plus=False),
                _rps(r["predicted_rps"]), _pct(r["rps_gap"]), _ratio(r["rps_ratio"]),
                _ms(r["p50_ms_median"]), _ms(r["p90_ms_median"]), _ms(r["p99_ms_median"]),
                _range(r["p99_ms_min"], r["p99_ms_max"], _ms),
                _cpus(r["cpu_server"], r["cpu_locust"], r["cpu_machine"]),
            ]  # fmt: skip
            if open_loop:
                values += _open_loop_values(r)
            if with_baseline:
                values += [_pct(r.get("rps_change")), _pct(r.get("p99_change"))]
            note = "" if measured else "no valid repeat"
            if measured and r["unstable"]:
                note = f"unstable ({_unstable(r)})"
            css = ("best " if r["best"] else "") + ("" if measured else "excluded")
            rows.append({"label": values[0], "values": values[1:], "css": css.strip(),
                         "note": note, "color": palette[model]})  # fmt: skip
            extra = 2 * open_loop + 2 * with_baseline  # columns beyond the common ones
            rows += _excluded_rows(sec.cells, model, r["load"], palette[model], extra)
    return {"columns": columns, "rows": rows, "width": len(columns) + 1}


def _open_loop_values(r: pd.Series) -> list[str]:
    uncorrected = f"{_ms(r['p50_uncorrected_ms'])} · {_ms(r['p99_uncorrected_ms'])}"
    missed = [r["late_sends"], r["dropped_sends"]]
    shown = " · ".join("—" if _missing(v) else f"{v:.0f}" for v in missed)
    return [uncorrected if not _missing(r["p50_uncorrected_ms"]) else "—", shown]


def _excluded_rows(cells, model: str, load: float, color: str, extra: int) -> list[dict]:
    chosen = cells[(cells["server"] == model) & (cells["load"] == load) & ~cells["included"]]
    rows = []
    for c in chosen.sort_values("repeat").itertuples():
        values = [f"↳ repeat {c.repeat}", f"{load:g}", c.status, _rps(c.rps), "", "", "", "", "",
                  _ms(c.p50_ms), _ms(c.p90_ms), _ms(c.p99_ms), "",
                  _cpus(c.cpu_server, c.cpu_locust, getattr(c, "cpu_machine", None))]  # fmt: skip
        values += [""] * extra  # open-loop and baseline columns
        rows.append({"label": values[0], "values": values[1:], "css": "excluded",
                     "note": f"{c.status}: {c.reason}", "color": color})  # fmt: skip
    return rows


# --- Configuration and reproduction -------------------------------------------------------------


def _config(meta: RunMeta) -> dict:
    keys = list(dict.fromkeys(k for conf in meta.servers.values() for k in conf))
    models = list(meta.servers)
    invocations = []
    for i, inv in enumerate(meta.invocations, 1):
        invocations.append({
            "number": i, "started": _when(inv.get("started")),
            "finished": _when(inv.get("finished")), "status": inv.get("status", "running"),
            "seed": inv.get("seed"), "cells": len(inv.get("cells", [])),
            "command": _reproduce(inv.get("command") or meta.command, inv.get("seed")),
        })  # fmt: skip
    return {
        "servers": {
            "models": models,
            "rows": [[k] + [_value(meta.servers[m].get(k)) for m in models] for k in keys],
        },
        "services": [
            {"name": name, "items": _items(conf)} for name, conf in sorted(meta.services.items())
        ],
        "machine": _items(meta.machine),
        "packages": _items(meta.packages),
        "settings": _items(meta.settings),
        "seed": meta.seed,
        "scenarios": [
            {"name": name, "items": _items({k: v for k, v in spec.items() if k != "name"})}
            for name, spec in meta.scenarios.items()
        ],
        # Each invocation ran (or replaced) some cells with its own seed: replaying them in order
        # rebuilds the run. A run without that record falls back to its last command.
        "commands": [i["command"] for i in invocations] or [_reproduce(meta.command, meta.seed)],
        "invocations": invocations,
    }


def _reproduce(command: list[str], seed: int | None) -> str:
    """The recorded command, pinned to the recorded seed so the cell order repeats too."""
    command = list(command or [])
    if command and seed is not None and "--seed" not in command:
        command += ["--seed", str(seed)]
    if command:
        command[0] = Path(command[0]).name
    return shlex.join(command)


def _items(mapping: dict) -> list[list[str]]:
    return [[str(k), _value(v)] for k, v in mapping.items()]


def _value(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(_value(v) for v in value) or "—"
    if isinstance(value, dict):
        return "; ".join(f"{k} = {_value(v)}" for k, v in value.items()) or "—"
    return str(value)


# --- Rendering -------------------------------------------------------------------------------


def render(data: dict) -> str:
    """The page: the template filled with ``data``, each figure turned into an inline plot
    (plotly.js inlined with the first one only)."""
    view = copy.deepcopy(data)
    first = True
    for block in view["scenarios"]:
        for chart in block["figures"]:
            html = pio.to_html(
                chart["figure"], include_plotlyjs=first, full_html=False, validate=False,
                div_id=chart["id"], config=PLOT_CONFIG, default_height=f"{figures.HEIGHT}px",
            )  # fmt: skip
            chart["html"] = markupsafe.Markup(html)
            first = False
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("report.html").render(**view)


# --- Helpers ---------------------------------------------------------------------------------


def _model_order(meta: RunMeta, cells: pd.DataFrame) -> list[str]:
    present = set(cells["server"])
    known = [m for m in meta.servers if m in present]
    return known + sorted(present - set(known))


def _request_path(spec: dict) -> str:
    endpoint = spec.get("endpoint", "")
    return f"{endpoint}?ms={spec['delay_ms']}" if spec.get("delay_ms") else endpoint


def _when(epoch: float | None) -> str:
    if not epoch:
        return "—"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _rps(value) -> str:
    if _missing(value):
        return "—"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _ms(value) -> str:
    if _missing(value):
        return "—"
    return f"{value:,.0f}" if value >= 1000 else f"{value:.1f}"


def _pct(value, plus: bool = True) -> str:
    if _missing(value):
        return "—"
    return f"{value:+.0%}" if plus else f"{value:.1%}"


def _ratio(value) -> str:
    return "—" if _missing(value) else f"{value:.2f}×"


def _cpus(*values) -> str:
    """Mean CPU over the window: % of a core (server, Locust), % of the machine (all)."""
    return " · ".join("—" if _missing(v) else f"{v:.0f}%" for v in values)


def _range(low, high, fmt) -> str:
    return "—" if _missing(low) else f"{fmt(low)}–{fmt(high)}"
