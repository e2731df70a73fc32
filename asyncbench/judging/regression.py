"""``asyncbench compare`` and ``asyncbench run --check``: the gate (``gate.py``) on stored runs.

A stored run becomes the gate's inputs here: its re-evaluated cells (the same judgement the
report uses), one row per included repeat, its noise floor and its scenarios' thresholds as
recorded in ``run.json``. Two runs are compared only when they were written by the same schema
version: a version changes what a column means (e.g. version 4's ``rps`` is the cycle estimator,
earlier ones a count), so a mixed comparison would report the change of method as a regression.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from asyncbench.judging import analyze
from asyncbench.judging.bottleneck import parse_counts
from asyncbench.judging.comparison import Comparison, format_ratio
from asyncbench.judging.gate import (
    ComparisonInputError,
    GateResult,
    LevelCheck,
    Thresholds,
    check_thresholds,
    regression_gate,
)
from asyncbench.judging.noise import NoiseFloors, between_runs, noise_floors
from asyncbench.storing.store import RunDir


@dataclass(frozen=True)
class StoredRun:
    """What the gate needs from one run directory."""

    run: RunDir
    cells: pd.DataFrame  # ``analyze.cell_table``: every cell, A/A copies included
    thresholds: dict[str, Thresholds]
    versions: tuple[int, ...]  # the schema versions its run.json and results.csv were written in

    @property
    def repeats(self) -> pd.DataFrame:
        return analyze.repeat_table(self.cells)


def load(path: Path) -> StoredRun:
    """Open a run directory for the gate; a missing one raises ``StoreError`` (one line)."""
    run = RunDir.open(Path(path))
    return StoredRun(run, analyze.stored_cells(run), thresholds_of(run), stored_versions(run))


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


@dataclass(frozen=True)
class GateFloors:
    """The floors a run is judged by against a baseline: the larger of the two runs' own
    (``within``) and, unless the caller asked for those alone, of what the runs' shared A/A
    levels moved between them (``between``)."""

    within: NoiseFloors
    between: NoiseFloors | None = None

    @property
    def judged(self) -> NoiseFloors:
        return self.within.larger(self.between) if self.between else self.within

    def sentences(self) -> list[str]:
        return self.within.sentences() + (self.between.sentences() if self.between else [])


def gate_floors(
    cells: pd.DataFrame, base_cells: pd.DataFrame, *, across_runs: bool = True
) -> GateFloors:
    """The floors of two ``analyze.cell_table``s compared (``asyncbench compare`` and the
    report's baseline alike)."""
    within = noise_floors(cells).larger(noise_floors(base_cells))
    return GateFloors(within, between_runs(cells, base_cells) if across_runs else None)


def compare(
    run: StoredRun, baseline: StoredRun, floors: GateFloors, confidence: float = 0.95
) -> GateResult:
    """Every level present in both runs: run/baseline ratios with intervals, regressions beyond
    the noise floors (``gate_floors``), and the run's scenario thresholds."""
    if run.versions != baseline.versions:
        raise ComparisonInputError(
            f"cannot compare {run.run.path} (schema version {_versions(run)}) with "
            f"{baseline.run.path} (schema version {_versions(baseline)}): rerun the older one "
            "with this asyncbench"
        )
    return gate(run.cells, baseline.cells, floors.judged, run.thresholds, confidence)


# A multi-process level whose busiest worker's share moved this much between the two runs landed
# its connections on the workers differently (forked Tornado's greedy accept, SO_REUSEPORT's
# hash): its throughput moves with that, whatever the code did, so it is shown, not counted.
# Where users queue on the worker that holds their connection, the share of the *users* on the
# busiest one sets its queue, so the level's p99 moves with it even when every worker is busy
# and the request shares stay even (64 users on tornado-forked's four one-slot children: p99
# 2.4-2.9 s in one default run, 5.0-5.7 s in the next, the same code).
BALANCE_SHIFT = 0.05


def _balance(cells: pd.DataFrame, share) -> dict[tuple, float]:
    """Per level, the median over included repeats of ``share(cells)`` where it is known."""
    kept = cells[cells["included"]]
    shares = share(kept)
    if shares is None:
        return {}
    by_level = shares.groupby([kept[c] for c in ("scenario", "server", "users", "rate")])
    return {key: value for key, value in by_level.median().items() if not pd.isna(value)}


def _request_share(cells: pd.DataFrame) -> pd.Series | None:
    return cells["busiest_process_share"] if "busiest_process_share" in cells else None


def _user_share(cells: pd.DataFrame) -> pd.Series | None:
    """The busiest process's share of the users, from ``process_users`` ("22 18 14 10")."""
    if "process_users" not in cells:
        return None
    counts = cells["process_users"].map(parse_counts)
    return counts.map(lambda n: max(n) / sum(n) if sum(n) else math.nan)


def _balance_explained(result: GateResult, run: pd.DataFrame, baseline: pd.DataFrame) -> GateResult:
    requests = _balance(run, _request_share), _balance(baseline, _request_share)
    users = _balance(run, _user_share), _balance(baseline, _user_share)
    levels = []
    for level in result.levels:
        key = (level.scenario, level.server, level.users, level.rate)
        note = None
        if level.room:  # judged on its deliveries, where the request shares say nothing
            levels.append(level)
            continue
        if level.regressed and _shifted(key, *requests):
            note = (f"workers balanced differently (busiest worker {requests[1][key]:.0%} → "
                    f"{requests[0][key]:.0%} of the requests)")  # fmt: skip
        elif _only_p99_lost(level) and _shifted(key, *users):
            note = (f"users landed differently on the workers (busiest worker held "
                    f"{users[1][key]:.0%} → {users[0][key]:.0%} of them)")  # fmt: skip
        if note:
            level = replace(level, failures=(), notes=(f"{note}: " + "; ".join(level.failures),))
        levels.append(level)
    return GateResult(tuple(levels))


def _shifted(key: tuple, now: dict, before: dict) -> bool:
    """Both runs measured the share, it moved by ``BALANCE_SHIFT``, and more than one process
    served (a share of 100 % is a single process: nothing to balance)."""
    if key not in now or key not in before:
        return False
    return abs(now[key] - before[key]) >= BALANCE_SHIFT and now[key] < 0.999


def _only_p99_lost(level: LevelCheck) -> bool:
    return (level.p99 is not None and level.p99.verdict == "loses"
            and level.failures == (level.p99.sentence(),))  # fmt: skip


def gate(
    cells: pd.DataFrame,
    base_cells: pd.DataFrame,
    floors: NoiseFloors,
    thresholds: dict[str, Thresholds],
    confidence: float = 0.95,
) -> GateResult:
    """``gate.regression_gate`` on two ``analyze.cell_table``s, request and room levels, with
    what the workers' balance explains shown, not counted (``asyncbench compare`` and the
    report's baseline alike). A room level is judged by its scenario's room floors
    (``NoiseFloors.scenarios``: its own pair's or the default), never a request pair's."""
    own = {name: floor.mapping() for name, floor in floors.scenarios.items()}
    run, baseline = analyze.gate_table(cells), analyze.gate_table(base_cells)
    for table, name in ((run, "the run"), (baseline, "the baseline")):
        if table.empty:
            raise ComparisonInputError(f"{name} has no measured level to compare")
    result = regression_gate(run, baseline, floors.mapping(), thresholds=thresholds,
                             confidence=confidence, scenario_floors=own)  # fmt: skip
    return _balance_explained(result, cells, base_cells)


def check(run: StoredRun) -> GateResult:
    """``asyncbench run --check``: the run's absolute thresholds on each of its levels."""
    return check_thresholds(run.repeats, run.thresholds)


def _versions(run: StoredRun) -> str:
    return "/".join(str(v) for v in run.versions) or "?"


# --- Text for the terminal ---------------------------------------------------------------------


def lines(result: GateResult, floors: GateFloors | None = None) -> list[str]:
    """A compact per-level table (a delivery p99 column when room levels were judged), then the
    noise floor and a one-line summary."""
    width = max((len(level.label) for level in result.levels), default=5)
    shown = [c for lv in result.levels for c in lv.comparisons]
    ci = f" ({shown[0].confidence * 100:g} % CI)" if shown else ""
    columns = [("rps", lambda lv: lv.rps), ("p99", lambda lv: lv.p99)]
    if any(lv.room for lv in result.levels):
        columns.append(("delivery p99", lambda lv: lv.delivery))
    size = max(28, *(len(f"{name} run/base{ci}") for name, _ in columns))
    heads = "  ".join(f"{name + ' run/base' + ci:{size}}" for name, _ in columns)
    out = [f"{'level':{width}}  {heads}  result"]
    for level in result.levels:
        cells = "  ".join(f"{_cell(get(level)):{size}}" for _, get in columns)
        out.append(f"{level.label:{width}}  {cells}  {_outcome(level)}")
    if floors is not None:
        out += floors.sentences()
    out.append(summary(result))
    return out


def summary(result: GateResult) -> str:
    n = len(result.levels)
    rooms = sum(lv.room for lv in result.levels)
    judged = f"{n} levels ({rooms} of them room levels)" if rooms else f"{n} levels"
    noted = [f"{lv.label}: {note}" for lv in result.levels for note in lv.notes]
    if not result.status:
        shown = f"; shown, not counted: {'; '.join(noted)}" if noted else ""
        lost = ", lost a delivery" if rooms else ""
        return (f"OK: {judged}, none regressed beyond the noise floor{lost} or failed a "
                f"threshold{shown}")  # fmt: skip
    failed = result.failures
    return f"REGRESSED: {sum(lv.regressed for lv in result.levels)} of {judged} — " + \
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
    better = [c.metric for c in level.comparisons if c.verdict == "wins"]
    if level.room and level.delivery is None:
        return "ok (judged on lost deliveries only: a run has no valid cell)"
    return f"ok (better {', '.join(better)})" if better else "ok"
