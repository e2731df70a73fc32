"""The default profile's second repeats: pure logic over a stored results table."""

from __future__ import annotations

from dataclasses import asdict

import pandas as pd

from asyncbench.judging.repeats import second_repeats
from asyncbench.planning.plan import Cell
from asyncbench.storing.records import CellResult


def row(server: str, users: int, rps: float, rel: float, repeat: int = 1, **extra) -> dict:
    """A stored results row (every column ``results.csv`` has) of a sleep cell."""
    cell = Cell("sleep", server, users, repeat)
    fields = {"status": "ok", "valid": True, "reason": "", **extra}
    result = CellResult(
        cell_id=cell.cell_id, scenario="sleep", server=server, users=users, repeat=repeat,
        endpoint="/sleep", delay_ms=100, workers=4, slots=None, predicted_rps=rps,
        warmup_s=1, measure_s=3, rps=rps, rps_stderr=rps * rel, rps_rel_stderr=rel,
        p50_ms=101.0, p90_ms=105.0, p99_ms=110.0, **fields,
    )  # fmt: skip
    return asdict(result)


def plan_of(rows: list[dict]) -> list[Cell]:
    return [Cell("sleep", r["server"], r["users"], r["repeat"]) for r in rows]


def test_an_imprecise_first_repeat_gets_a_second_and_says_why():
    rows = [row("a", 1, 10.0, 0.004), row("a", 64, 600.0, 0.013), row("b", 64, 300.0, 0.002)]
    extra = second_repeats(pd.DataFrame(rows), plan_of(rows))
    assert [(c.server, c.users, c.repeat) for c in extra] == [("a", 64, 2)]
    assert extra[0].why == "standard error 1.3% over 1%"


def test_overlapping_intervals_at_the_comparison_level_get_second_repeats():
    rows = [row("a", 64, 600.0, 0.005), row("b", 64, 604.0, 0.005), row("c", 64, 300.0, 0.005),
            row("a", 1, 10.0, 0.005), row("b", 1, 10.0, 0.005)]  # fmt: skip
    extra = second_repeats(pd.DataFrame(rows), plan_of(rows))
    assert {(c.server, c.users) for c in extra} == {("a", 64), ("b", 64)}
    assert all("overlaps" in c.why and "64 users" in c.why for c in extra)
    # below the comparison level equal models are expected: no repeat for that


def test_levels_already_planned_twice_and_invalid_or_room_cells_get_none():
    rows = [row("a", 64, 600.0, 0.02), row("a", 64, 601.0, 0.02, repeat=2),
            row("b", 64, 300.0, 0.03, valid=False, status="invalid"),
            row("r", 100, 200.0, 0.05, message_rate=2.0)]  # fmt: skip
    assert second_repeats(pd.DataFrame(rows), plan_of(rows)) == []


def test_the_comparison_level_is_set_by_every_models_cells_not_only_those_run_once():
    """A default run (c2c423e) judged the overlap at 1 user: the cells of the models planned
    twice at 64 users were left out of the table the level came from, so 1 user looked like the
    level where the most models were, and every model's 1-user cell (all 10 req/s) got a second
    repeat. The level is 64 users; there "a" overlaps "b", which is repeated already."""
    rows = [row("a", 1, 10.0, 0.002), row("b", 1, 10.0, 0.002), row("c", 1, 10.0, 0.002),
            row("a", 64, 600.0, 0.004), row("c", 64, 300.0, 0.004),
            row("b", 64, 603.0, 0.004), row("b", 64, 598.0, 0.004, repeat=2)]  # fmt: skip
    extra = second_repeats(pd.DataFrame(rows), plan_of(rows))
    assert [(c.server, c.users, c.repeat) for c in extra] == [("a", 64, 2)]
    assert "overlaps b" in extra[0].why
