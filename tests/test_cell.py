"""The cell runner's time accounting (pure: no process)."""

from __future__ import annotations

import pytest

from asyncbench.cell import PhaseClock
from asyncbench.measure import LocustOutcome


def _outcome(**times) -> LocustOutcome:
    return LocustOutcome(samples=None, locust_requests=0, exit_code=0, workers=(), abandoned=0,
                         stuck=0, **times)  # fmt: skip


def test_a_locust_run_splits_into_its_stages():
    clock = PhaseClock()
    clock.locust(_outcome(launched=100.0, test_start=100.3, spawn_complete=100.35,
                          window_start=101.35, window_end=104.35, exited=105.0))  # fmt: skip
    totals = clock.rounded()
    assert totals["locust_start"] == 0.3 and totals["spawn"] == 0.05
    assert totals["warmup"] == 1.0 and totals["window"] == 3.0
    assert totals["locust_stop"] == pytest.approx(0.65)
    assert sum(totals.values()) == pytest.approx(5.0)


def test_stages_add_up_across_cells_and_an_unmarked_stage_adds_nothing():
    clock = PhaseClock()
    for _ in range(3):
        clock.mark("save")
        clock.since("save", "save")
    clock.since("verify", "verify")  # never marked
    clock.add("server_stop", -1.0)  # a clock step backwards never subtracts
    totals = clock.rounded()
    assert totals["verify"] == 0.0 and totals["server_stop"] == 0.0
    assert 0 <= totals["save"] < 0.1
    assert set(totals) == set(PhaseClock.STAGES)


def test_a_failed_locust_run_without_timestamps_adds_nothing():
    clock = PhaseClock()
    clock.locust(_outcome(window_start=0.0, window_end=0.0))
    assert sum(clock.rounded().values()) == 0.0
