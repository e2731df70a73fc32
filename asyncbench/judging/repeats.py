"""The default profile's second repeats: where a level's first repeat does not settle the answer.

The default profile measures each level once. Some levels get a second repeat planned ahead
(``plan.needs_balance_repeat``: a multi-process model's users land on its workers by chance);
the others get one only when their first repeat leaves the answer open, decided here from the
stored cells once every planned cell has run:

- its throughput's standard error is over ``PRECISE`` (the window ended at its cap, imprecise);
- at its scenario's comparison level, its throughput interval (± ``Z`` standard errors)
  overlaps another model's: which of the two is faster is not settled by one repeat each.

Each second repeat says why in its ``why`` (``results.csv``'s ``repeat_reason``).
"""

from __future__ import annotations

import pandas as pd

from asyncbench.judging import analyze
from asyncbench.planning.plan import Cell

PRECISE = 0.01  # a window is precise at a throughput standard error of 1 % or less
Z = 1.96  # the interval that must not overlap another model's: 95 %


def second_repeats(results: pd.DataFrame, planned: list[Cell]) -> list[Cell]:
    """Repeat 2 of every planned closed-loop request level that ran once and is not settled."""
    once = _levels_measured_once(planned)
    if not once or results.empty:
        return []
    cells = analyze.with_levels(results)
    requests = cells["message_rate"].isna()  # a room level is judged on its deliveries
    cells = cells[cells["included"] & (cells["loop"] == "closed") & requests & ~_replica(cells)]
    reasons = _imprecise(cells)
    for cell_id, why in _overlapping(cells).items():
        reasons.setdefault(cell_id, why)
    by_id = {c.cell_id: c for c in once.values()}
    return [_second(by_id[cell_id], why) for cell_id, why in sorted(reasons.items())
            if cell_id in by_id]  # fmt: skip


def _replica(cells: pd.DataFrame) -> pd.Series:
    """The A/A copies: they measure the noise, not a model."""
    if "replica" not in cells:
        return pd.Series(False, index=cells.index)
    return cells["replica"].fillna("").astype(str).ne("")


def _levels_measured_once(planned: list[Cell]) -> dict[tuple, Cell]:
    """The first repeat of each planned level that has no other repeat (A/A copies aside)."""
    counts: dict[tuple, int] = {}
    first: dict[tuple, Cell] = {}
    for cell in planned:
        if cell.replica:
            continue
        key = (cell.scenario, cell.server, cell.users, cell.rate)
        counts[key] = counts.get(key, 0) + 1
        if cell.repeat == 1:
            first[key] = cell
    return {key: cell for key, cell in first.items() if counts[key] == 1}


def _imprecise(cells: pd.DataFrame) -> dict[str, str]:
    rel = cells["rps_rel_stderr"]
    loose = cells[rel.notna() & (rel > PRECISE)]
    return {row.cell_id: f"standard error {row.rps_rel_stderr:.1%} over {PRECISE:.0%}"
            for row in loose.itertuples()}  # fmt: skip


def _overlapping(cells: pd.DataFrame) -> dict[str, str]:
    """Cells at their scenario's comparison level (from every model's cells, a level measured
    twice too) whose interval overlaps another model's."""
    found: dict[str, str] = {}
    agg = analyze.aggregate(cells)
    for scenario, group in cells.groupby("scenario"):
        level = analyze.comparison_level(agg, scenario)
        at = group[group["load"] == level]
        low = at["rps"] - Z * at["rps_stderr"].fillna(0)
        high = at["rps"] + Z * at["rps_stderr"].fillna(0)
        for i, row in at.iterrows():
            others = at.index != i
            hit = others & (low <= high[i]) & (high >= low[i])
            if hit.any():
                names = ", ".join(at.loc[hit, "server"])
                found[row["cell_id"]] = (f"its throughput interval overlaps {names}'s at "
                                         f"{level:g} users")  # fmt: skip
    return found


def _second(cell: Cell, why: str) -> Cell:
    return Cell(cell.scenario, cell.server, cell.users, 2, cell.rate, why=why)
