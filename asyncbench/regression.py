"""``asyncbench compare`` and ``asyncbench run --check``: the gate (``gate.py``) on stored runs.

A stored run becomes the gate's inputs here: its re-evaluated cells (the same judgement the
report uses), one row per included repeat, its noise floor and its scenarios' thresholds as
recorded in ``run.json``. Two runs are compared only when they were written by the same schema
version: a version changes what a column means (e.g. version 4's ``rps`` is the cycle estimator,
earlier ones a count), so a mixed comparison would report the change of method as a regression.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from asyncbench import analyze
from asyncbench.confidence import Comparison, format_ratio
from asyncbench.gate import (
    ComparisonInputError,
    GateResult,
    LevelCheck,
    Thresholds,
    check_thresholds,
    regression_gate,
)
from asyncbench.noise import NoiseFloors, noise_floors
from asyncbench.store import RunDir


@dataclass(frozen=True)
class StoredRun:
    """What the gate needs from one run directory."""

    run: RunDir
    cells: pd.DataFrame  # ``analyze.cell_table``: every cell, A/A copies included
    floors: NoiseFloors
    thresholds: dict[str, Thresholds]
    versions: tuple[int, ...]  # the schema versions its run.json and results.csv were written in

    @property
    def repeats(self) -> pd.DataFrame:
        return analyze.repeat_table(self.cells)


def load(path: Path) -> StoredRun:
    """Open a run directory for the gate; a missing one raises ``StoreError`` (one line)."""
    run = RunDir.open(Path(path))
    cells = analyze.cell_table(run.results(), run.samples(), run.resources())
    return StoredRun(run, cells, noise_floors(cells), thresholds_of(run), stored_versions(run))


def stored_versions(run: RunDir) -> tuple[int, ...]:
    """The schema versions the run's files were *written* in (before any upgrade on reading)."""
    versions = {json.loads(run.meta_json.read_text()).get("schema_version")}
    if run.results_csv.exists():
        header = pd.read_csv(run.results_csv, nrows=0).columns
        if "schema_version" in header:
            stored = pd.read_csv(run.results_csv, usecols=["schema_version"])["schema_version"]
            versions |= {int(v) for v in stored.dropna()}
        else:
            versions.add(1)
    return tuple(sorted(v for v in versions if isinstance(v, int)))


def thresholds_of(run: RunDir) -> dict[str, Thresholds]:
    """Each scenario's thresholds as the run recorded it (``run.json``)."""
    scenarios = run.read_meta().scenarios
    return {name: Thresholds(**(spec.get("thresholds") or {}))
            for name, spec in scenarios.items()}  # fmt: skip


def compare(run: StoredRun, baseline: StoredRun, confidence: float = 0.95) -> GateResult:
    """Every level present in both runs: run/baseline ratios with intervals, regressions beyond
    the larger of the two noise floors, and the run's scenario thresholds."""
    if run.versions != baseline.versions:
        raise ComparisonInputError(
            f"cannot compare {run.run.path} (schema version {_versions(run)}) with "
            f"{baseline.run.path} (schema version {_versions(baseline)}): rerun the older one "
            "with this asyncbench"
        )
    result = gate(run.repeats, baseline.repeats, run.floors.larger(baseline.floors),
                  run.thresholds, confidence)  # fmt: skip
    return _balance_explained(result, _balance(run.cells), _balance(baseline.cells))


# A multi-process level whose busiest worker's share moved this much between the two runs landed
# its connections on the workers differently (forked Tornado's greedy accept, SO_REUSEPORT's
# hash): its throughput moves with that, whatever the code did, so it is shown, not counted.
BALANCE_SHIFT = 0.05


def _balance(cells: pd.DataFrame) -> dict[tuple, float]:
    if "busiest_process_share" not in cells:
        return {}
    kept = cells[cells["included"]]
    shares = kept.groupby(["scenario", "server", "users", "rate"])["busiest_process_share"]
    return {key: value for key, value in shares.median().items() if not pd.isna(value)}


def _balance_explained(result: GateResult, now: dict, before: dict) -> GateResult:
    levels = []
    for level in result.levels:
        key = (level.scenario, level.server, level.users, level.rate)
        shift = abs(now.get(key, 0) - before.get(key, 0)) if key in now and key in before else 0
        if level.regressed and shift >= BALANCE_SHIFT and now[key] < 0.999:
            note = (f"workers balanced differently (busiest worker {before[key]:.0%} → "
                    f"{now[key]:.0%} of the requests): " + "; ".join(level.failures))
            level = replace(level, failures=(), notes=(note,))
        levels.append(level)
    return GateResult(tuple(levels))


def gate(
    repeats: pd.DataFrame,
    base_repeats: pd.DataFrame,
    floors: NoiseFloors,
    thresholds: dict[str, Thresholds],
    confidence: float = 0.95,
) -> GateResult:
    """``gate.regression_gate`` on two ``analyze.repeat_table``s (also the report's baseline)."""
    return regression_gate(repeats, base_repeats, floors.mapping(), thresholds=thresholds,
                           confidence=confidence)  # fmt: skip


def check(run: StoredRun) -> GateResult:
    """``asyncbench run --check``: the run's absolute thresholds on each of its levels."""
    return check_thresholds(run.repeats, run.thresholds)


def _versions(run: StoredRun) -> str:
    return "/".join(str(v) for v in run.versions) or "?"


# --- Text for the terminal ---------------------------------------------------------------------


def lines(result: GateResult, floors: NoiseFloors | None = None) -> list[str]:
    """A compact per-level table, then the noise floor and a one-line summary."""
    width = max((len(level.label) for level in result.levels), default=5)
    shown = [c for lv in result.levels for c in (lv.rps, lv.p99) if c is not None]
    ci = f" ({shown[0].confidence * 100:g} % CI)" if shown else ""
    out = [f"{'level':{width}}  {'rps run/base' + ci:28}  {'p99 run/base' + ci:28}  result"]
    for level in result.levels:
        out.append(f"{level.label:{width}}  {_cell(level.rps):28}  {_cell(level.p99):28}  "
                   f"{_outcome(level)}")  # fmt: skip
    if floors is not None:
        out.append(floors.sentence())
    out.append(summary(result))
    return out


def summary(result: GateResult) -> str:
    n = len(result.levels)
    noted = [f"{lv.label}: {note}" for lv in result.levels for note in lv.notes]
    if not result.status:
        shown = f"; shown, not counted: {'; '.join(noted)}" if noted else ""
        return (f"OK: {n} levels, none regressed beyond the noise floor or failed a "
                f"threshold{shown}")  # fmt: skip
    failed = result.failures
    return f"REGRESSED: {sum(lv.regressed for lv in result.levels)} of {n} levels — " + \
        "; ".join(failed)  # fmt: skip


def _cell(c: Comparison | None) -> str:
    if c is None:
        return "—"
    if c.verdict == "insufficient data":
        return f"{format_ratio(c.ratio)}× (no interval)"
    return f"{format_ratio(c.ratio)}× ({format_ratio(c.low)}–{format_ratio(c.high)}×)"


def _outcome(level: LevelCheck) -> str:
    if level.regressed:
        return "REGRESSED"
    if level.notes:
        return "balance changed (not counted)"
    better = [c.metric for c in (level.rps, level.p99) if c is not None and c.verdict == "wins"]
    return f"ok (better {', '.join(better)})" if better else "ok"
