"""The report: one self-contained HTML page per run, built as plain data first, then rendered.

``report_data`` turns a run directory into a JSON-serialisable dict of everything the page shows
(verdicts, banners, plotly figure specs, tables, configuration); ``render`` turns that dict into
HTML with ``templates/report.html`` (autoescaped, no logic beyond loops and ifs). The page works
offline: plotly.js is inlined once, nothing is fetched from anywhere.
"""

from __future__ import annotations

import copy
import importlib.metadata
import shlex
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import jinja2
import markupsafe
import pandas as pd
import plotly.io as pio

from asyncbench.judging import analyze, regression
from asyncbench.judging.noise import NoiseFloors, noise_floors
from asyncbench.planning.kinds import ENDPOINTS, KINDS
from asyncbench.planning.thresholds import ComparisonInputError
from asyncbench.reporting import figures, room_section, view
from asyncbench.reporting.export import HLOG_DIR, write_hlogs
from asyncbench.reporting.summary import summary_table
from asyncbench.reporting.tables import level_table
from asyncbench.reporting.verdicts import verdict
from asyncbench.reporting.view import Section
from asyncbench.storing.records import RunMeta
from asyncbench.storing.store import RunDir
from servers.registry import LIBRARY

TEMPLATES = Path(__file__).resolve().parent / "templates"
PLOT_CONFIG = {"displaylogo": False, "displayModeBar": False, "responsive": True}

# What built the page, named in its footer (each a dependency of the report).
GENERATOR_PACKAGES = ("asyncbench", "plotly", "jinja2", "pandas")


def build_after_run(run: RunDir, meta: RunMeta, warn) -> None:
    """Rebuild the report after an invocation, interrupted ones included, and record how long
    it took in the invocation's timing (``run.json``)."""
    started = time.monotonic()
    try:
        build_report(run)
    except Exception as exc:  # the results are safe on disk; a report bug must not hide them
        warn(f"could not build the report ({type(exc).__name__}: {exc}); "
             f"retry with `asyncbench report {run.path}`")  # fmt: skip
    invocation = meta.invocations[-1]
    meta.invocations[-1] = invocation.timed(invocation.finished, time.monotonic() - started)
    run.write_meta(meta)


def build_report(run: RunDir, baseline: RunDir | None = None) -> Path:
    """Write ``<run>/index.html`` (replacing it atomically) and the run's HdrHistogram logs
    (``<run>/hlog/``), and return the page's path."""
    data, cells, samples = _report_data(run, baseline)
    write_hlogs(run.path, cells, samples)
    html = render(data)
    target = run.path / "index.html"
    run.write_files([(target, html.encode("utf-8"))])
    return target


# --- Data -----------------------------------------------------------------------------------


def report_data(run: RunDir, baseline: RunDir | None = None) -> dict:
    """Everything the page shows, as plain JSON-serialisable data."""
    return _report_data(run, baseline)[0]


def _report_data(run: RunDir, baseline: RunDir | None) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """The page's data, and the cell table and samples it came from (for the raw export)."""
    meta = run.read_meta()
    samples = run.samples()
    every_cell = analyze.stored_cells(run, samples)
    floors = noise_floors(every_cell)
    cells, _ = analyze.split_replicas(every_cell)
    agg = analyze.aggregate(cells)
    notes = []
    if baseline is not None:
        agg, notes = _with_baseline(run, agg, every_cell, baseline)
    models = _model_order(meta, cells)
    palette = figures.colors(models)
    sections = _sections(meta, cells, agg)
    blocks = [
        SECTION_BUILDERS[_section_kind(section.spec)](
            section, meta, samples, models, palette, floors, baseline is not None
        )
        for section in sections
    ]
    summary = summary_table(sections, blocks, models, palette, floors)
    transports = room_section.transports_block(sections, models, palette)
    blocks += [transports] if transports else []
    data = {
        "title": f"asyncbench · run {meta.run_id}",
        "run_id": meta.run_id,
        "status": meta.status,
        "created": view.when(meta.created),
        "updated": view.when(meta.updated),
        "generated": view.when(datetime.now(UTC).timestamp()),
        "generator": ", ".join(
            f"{name} {importlib.metadata.version(name)}" for name in GENERATOR_PACKAGES
        ),
        "baseline": baseline.run_id if baseline is not None else None,
        "banners": _banners(meta, cells, baseline) + notes,
        "noise": " ".join(floors.sentences()),
        "throughput": _throughput_note(cells),
        "verdicts": [{"name": b["name"], "anchor": b["anchor"], **b["verdict"]} for b in blocks],
        "summary": summary,
        "models": [{"name": m, "color": palette[m]} for m in models],
        "has_excluded": bool((~cells["included"]).any()),
        "scenarios": blocks,
        "config": _config(meta),
        "hlog": f"{HLOG_DIR}/ in the run directory: one HdrHistogram interval log (.hlog) per "
        "level, the included repeats' requests in 1 s intervals, latency in µs (open loop: "
        "corrected), readable by any HdrHistogram tool (e.g. HistogramLogProcessor)",
        "profiles": [{"cell": p.stem, "href": f"profiles/{p.name}"}
                     for p in sorted((run.path / "profiles").glob("*.svg"))],  # fmt: skip
    }
    return data, cells, samples


def _with_baseline(run, agg, every_cell, baseline: RunDir):
    """The aggregates with the change against the baseline and the run/baseline intervals of
    ``asyncbench compare``, and a banner saying what the intervals found."""
    base_cells = analyze.stored_cells(baseline)
    base_agg = analyze.aggregate(analyze.split_replicas(base_cells)[0])
    floors = regression.gate_floors(every_cell, base_cells)
    try:
        result = regression.gate(every_cell, base_cells, floors.judged,
                                 regression.thresholds_of(run))  # fmt: skip
    except ComparisonInputError as exc:
        note = {"level": "warn", "text": f"No interval against the baseline: {exc}."}
        return analyze.compare_runs(agg, base_agg), [note]
    note = {"level": "error" if result.status else "info",
            "text": f"Against baseline {baseline.run_id} (as `asyncbench compare`): "
            f"{regression.summary(result)}. {' '.join(floors.sentences())}"}  # fmt: skip
    return analyze.compare_runs(agg, base_agg, result.to_frame()), [note]


def _throughput_note(cells: pd.DataFrame) -> str:
    """How throughput was estimated, and its worst relative standard error among the included
    cells."""
    kept = cells[cells["included"]] if len(cells) else cells
    if kept.empty or "rps_rel_stderr" not in kept or kept["rps_rel_stderr"].isna().all():
        return ""
    worst = kept.loc[kept["rps_rel_stderr"].idxmax()]
    # "closed-loop per process (4: completions, cycles)" and its kin are one method: each
    # cell's own detail is its rps_method in results.csv.
    methods = kept["rps_method"].dropna().astype(str).str.split(" (", regex=False).str[0]
    counts = methods[methods != ""].value_counts()  # rooms have none
    listed = ", ".join(f"{name} ({n} {'cell' if n == 1 else 'cells'})"
                       for name, n in sorted(counts.items()))  # fmt: skip
    return (f"Throughput: {listed}; each cell's method is its rps_method in results.csv, the "
            f"count-based figure beside it (rps_count). Worst standard error among included "
            f"cells: {worst['rps_rel_stderr']:.2%} ({worst['cell_id']}).")  # fmt: skip


def _sections(meta: RunMeta, cells: pd.DataFrame, agg: pd.DataFrame) -> list[Section]:
    names = list(meta.scenarios) + sorted(set(cells["scenario"]) - set(meta.scenarios))
    out = []
    for name in names:
        spec = meta.scenarios.get(name, {})
        loops = [loop for loop in ("closed", "open") if len(analyze.section(cells, name, loop))]
        for loop in loops or ["closed"]:
            out.append(
                Section(name, loop, spec, analyze.section(cells, name, loop),
                         analyze.section(agg, name, loop))
            )  # fmt: skip
    return out


def _section_data(
    sec: Section, meta, samples, models, palette, floors: NoiseFloors, with_baseline: bool
) -> dict:
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
        "verdict": asdict(verdict(sec, meta, floors)),
        "figures": charts,
        "table": level_table(sec, models, palette, with_baseline),
    }


SECTION_BUILDERS = {"requests": _section_data, "room": room_section.section_data}


def _section_kind(spec: dict) -> str:
    """How a stored scenario is shown: its kind's section (requests when too old to say)."""
    kind = KINDS.get(spec.get("kind_name", "")) or ENDPOINTS.get(spec.get("endpoint", ""))
    return kind.section if kind else "requests"


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
    if meta.settings.get("defaults") == LIBRARY:
        banners.append({
            "level": "info",
            "text": "Library defaults: this run uses each library's own pool sizes "
            "(AsyncHTTPClient max_clients, the aiomysql pool, thread pools) instead of the "
            "harness's sized ones, so the caps a default install hides show in the numbers.",
        })  # fmt: skip
    if baseline is not None:
        banners.append({
            "level": "info",
            "text": f"Δ columns compare with run {baseline.run_id} (same scenario, model, load).",
        })  # fmt: skip
    return banners


# --- Configuration and reproduction -------------------------------------------------------------


def _config(meta: RunMeta) -> dict:
    keys = list(dict.fromkeys(k for conf in meta.servers.values() for k in conf))
    models = list(meta.servers)
    invocations = []
    for i, inv in enumerate(meta.invocations, 1):
        invocations.append({
            "number": i, "started": view.when(inv.started), "finished": view.when(inv.finished),
            "status": inv.status, "seed": inv.seed, "cells": len(inv.cells),
            "command": _reproduce(inv.command or meta.command, inv.seed),
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
    kind = ENDPOINTS.get(spec.get("endpoint", ""))
    return kind.path(spec.get("delay_ms", 0)) if kind else spec.get("endpoint", "")
