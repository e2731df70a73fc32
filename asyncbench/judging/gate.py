"""The regression gate: a run against a baseline, level by level, and k6-style thresholds.

``asyncbench compare RUN --baseline OTHER`` exits with ``GateResult.status`` (0: nothing
regressed beyond the noise floor, 1: something did) and 2 on ``ComparisonInputError``;
``asyncbench run --check`` applies a scenario's absolute thresholds with ``check_thresholds``.

A request level is judged on its rps and p99. A room level (rows with ``room`` true) is judged
on its delivery p99, against its scenario's room floor, and on its lost deliveries: one that
lost any where the baseline lost none regresses whatever the floor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from asyncbench.judging.comparison import Comparison, NoiseFloor, compare, format_ratio
from asyncbench.planning.thresholds import ComparisonInputError, Thresholds

LEVEL = ("scenario", "server", "users", "rate")
GATE_COLUMNS = (*LEVEL, "repeat", "rps", "p99_ms")
# A room level's rows: one per measured cell, ``included`` or not (a cell that lost deliveries is
# excluded, yet its loss counts); its delivery p99 is read from the included ones. Optional: a
# table without them has request levels only.
ROOM_COLUMNS = {"room": False, "included": True, "delivery_p99_ms": math.nan, "lost": 0.0}


@dataclass(frozen=True)
class LevelCheck:
    """One level of the gate: its comparisons to the baseline and the thresholds that failed."""

    scenario: str
    server: str
    users: int
    rate: float
    rps: Comparison | None  # None without a baseline
    p99: Comparison | None
    failures: tuple[str, ...]  # one line each: a regression beyond the noise floor, a threshold
    notes: tuple[str, ...] = ()  # changes shown but not counted, each with its evidence
    # A room level: its delivery p99 (None when either run has no included cell of it) and its
    # lost deliveries (run, baseline); rps and p99 are None.
    room: bool = False
    delivery: Comparison | None = None
    lost: tuple[int, int] | None = None

    @property
    def regressed(self) -> bool:
        return bool(self.failures)

    @property
    def comparisons(self) -> tuple[Comparison, ...]:
        return tuple(c for c in (self.rps, self.p99, self.delivery) if c is not None)

    @property
    def label(self) -> str:
        unit = "members" if self.room else "users"
        load = f"{self.rate:g} req/s offered" if self.rate > 0 else f"{self.users} {unit}"
        return f"{self.scenario} / {self.server} / {load}"


@dataclass(frozen=True)
class GateResult:
    """Every level checked; ``status`` is the exit code (0 nothing failed, 1 something did)."""

    levels: tuple[LevelCheck, ...]

    @property
    def status(self) -> int:
        return 1 if any(level.regressed for level in self.levels) else 0

    @property
    def failures(self) -> tuple[str, ...]:
        return tuple(f"{lv.label}: {f}" for lv in self.levels for f in lv.failures)

    def to_frame(self) -> pd.DataFrame:
        """One row per level: ratios, intervals, verdicts (a room level's ``delivery_*`` and lost
        deliveries), ``regressed`` and ``reasons``."""
        rows = []
        for lv in self.levels:
            row = {"scenario": lv.scenario, "server": lv.server, "users": lv.users,
                   "rate": lv.rate, "room": lv.room,
                   "lost_run": lv.lost[0] if lv.lost else math.nan,
                   "lost_baseline": lv.lost[1] if lv.lost else math.nan}  # fmt: skip
            for name, c in (("rps", lv.rps), ("p99", lv.p99), ("delivery", lv.delivery)):
                row |= {f"{name}_ratio": c.ratio if c else math.nan,
                        f"{name}_low": c.low if c else math.nan,
                        f"{name}_high": c.high if c else math.nan,
                        f"{name}_verdict": c.verdict if c else ""}  # fmt: skip
            rows.append(row | {"regressed": lv.regressed, "reasons": "; ".join(lv.failures)})
        return pd.DataFrame(rows)


def regression_gate(
    run: pd.DataFrame,
    baseline: pd.DataFrame,
    noise_floors: Mapping[str, float | NoiseFloor],
    *,
    thresholds: Mapping[str, Thresholds] | None = None,
    confidence: float = 0.95,
    seed: int = 0,
    scenario_floors: Mapping[str, Mapping[str, float | NoiseFloor]] | None = None,
) -> GateResult:
    """``asyncbench compare RUN --baseline OTHER``: for every level present in both tables (one
    row per repeat: scenario, server, users, rate, repeat, rps, p99_ms), the run-to-baseline
    ratios of rps and p99 with their intervals. A level fails when either *loses* (beyond its
    interval and the noise floor of ``noise_floors["rps"]`` / ``["p99_ms"]``; a missing key
    means none was measured; ``scenario_floors[scenario]`` instead where a scenario has its own)
    or a threshold of its scenario fails. A room level (``ROOM_COLUMNS``) fails when its
    delivery p99 loses beyond ``["delivery_p99_ms"]`` of its floors, or when the run lost
    deliveries where the baseline lost none."""
    run, baseline = _gate_table(run, "run"), _gate_table(baseline, "baseline")
    common = run[list(LEVEL)].drop_duplicates().merge(baseline[list(LEVEL)].drop_duplicates())
    if common.empty:
        raise ComparisonInputError("no level (scenario, server, users, rate) is in both runs")
    levels = []
    for key in common.sort_values(list(LEVEL)).itertuples(index=False):
        mine, theirs = _level_rows(run, key), _level_rows(baseline, key)
        floors = (scenario_floors or {}).get(key.scenario, noise_floors)
        if mine["room"].any() or theirs["room"].any():
            levels.append(_room_check(key, mine, theirs, floors, confidence, seed))
            continue
        rps, p99 = (
            compare(mine[column], theirs[column], floors.get(column, 0.0), a_label="run",
                    b_label="baseline", metric=metric, higher_is_better=higher,
                    confidence=confidence, seed=seed)
            for column, metric, higher in (("rps", "rps", True), ("p99_ms", "p99", False))
        )  # fmt: skip
        limits = (thresholds or {}).get(key.scenario, Thresholds())
        failures = [c.sentence() for c in (rps, p99) if c.verdict == "loses"]
        failures += _threshold_failures(mine, limits, rps, p99)
        levels.append(_level_check(key, rps, p99, failures))
    return GateResult(tuple(levels))


def check_thresholds(run: pd.DataFrame, thresholds: Mapping[str, Thresholds]) -> GateResult:
    """``asyncbench run --check``: the absolute thresholds (``max_p99_ms``, ``min_rps``) of each
    scenario on every level of one run; the ratio thresholds need a baseline and are skipped."""
    run = _gate_table(run, "run")
    run = run[~run["room"]]
    levels = []
    for key in run[list(LEVEL)].drop_duplicates().sort_values(list(LEVEL)).itertuples(index=False):
        limits = thresholds.get(key.scenario, Thresholds())
        failures = _threshold_failures(_level_rows(run, key), limits, None, None)
        levels.append(_level_check(key, None, None, failures))
    return GateResult(tuple(levels))


def _gate_table(table: pd.DataFrame, name: str) -> pd.DataFrame:
    missing = [c for c in GATE_COLUMNS if c not in table.columns]
    if missing:
        raise ComparisonInputError(f"{name} table lacks column(s): {', '.join(missing)}")
    if table.empty:
        raise ComparisonInputError(f"{name} table has no rows")
    out = table[list(GATE_COLUMNS)].copy()
    out["rate"] = out["rate"].fillna(0.0).astype(float)
    out["users"] = out["users"].astype(int)
    for column, default in ROOM_COLUMNS.items():
        values = table[column] if column in table else pd.Series(default, index=table.index)
        out[column] = values.fillna(default).astype(type(default))
    return out


def _room_check(key, mine: pd.DataFrame, theirs: pd.DataFrame, floors, confidence, seed):
    """A room level: its delivery p99 against the baseline's (included cells of both), and its
    lost deliveries (every measured cell)."""
    now, before = mine[mine["included"]], theirs[theirs["included"]]
    delivery = None
    if len(now) and len(before):
        delivery = compare(now["delivery_p99_ms"], before["delivery_p99_ms"],
                           floors.get("delivery_p99_ms", 0.0), a_label="run",
                           b_label="baseline", metric="delivery p99", higher_is_better=False,
                           confidence=confidence, seed=seed)  # fmt: skip
    failures = [delivery.sentence()] if delivery and delivery.verdict == "loses" else []
    lost, lost_before = int(mine["lost"].sum()), int(theirs["lost"].sum())
    if lost > 0 and lost_before == 0:
        lossy = int((mine["lost"] > 0).sum())
        failures.append(f"lost {lost} deliveries ({lossy} of {len(mine)} cells) where the "
                        "baseline lost none")  # fmt: skip
    return replace(_level_check(key, None, None, failures), room=True, delivery=delivery,
                   lost=(lost, lost_before))  # fmt: skip


def _level_rows(table: pd.DataFrame, key) -> pd.DataFrame:
    mask = np.ones(len(table), dtype=bool)
    for column in LEVEL:
        mask &= (table[column] == getattr(key, column)).to_numpy()
    return table[mask]


def _threshold_failures(
    rows: pd.DataFrame, limits: Thresholds, rps: Comparison | None, p99: Comparison | None
) -> list[str]:
    failures = []
    p99_ms, rps_mean = rows["p99_ms"].mean(), rows["rps"].mean()
    if limits.max_p99_ms is not None and not p99_ms <= limits.max_p99_ms:
        failures.append(f"p99 {p99_ms:.1f} ms above max_p99_ms {limits.max_p99_ms:g}")
    if limits.min_rps is not None and not rps_mean >= limits.min_rps:
        failures.append(f"{rps_mean:.1f} req/s below min_rps {limits.min_rps:g}")
    if rps and limits.min_rps_ratio is not None and not rps.ratio >= limits.min_rps_ratio:
        failures.append(f"rps {format_ratio(rps.ratio)}× the baseline, below min_rps_ratio "
                        f"{limits.min_rps_ratio:g}")  # fmt: skip
    if p99 and limits.max_p99_ratio is not None and not p99.ratio <= limits.max_p99_ratio:
        failures.append(f"p99 {format_ratio(p99.ratio)}× the baseline, above max_p99_ratio "
                        f"{limits.max_p99_ratio:g}")  # fmt: skip
    return failures


def _level_check(key, rps, p99, failures) -> LevelCheck:
    return LevelCheck(
        scenario=str(key.scenario), server=str(key.server), users=int(key.users),
        rate=float(key.rate), rps=rps, p99=p99, failures=tuple(failures),
    )  # fmt: skip
