"""The cell runner's time accounting (pure: no process)."""

from __future__ import annotations

import time

import pytest

from asyncbench.measuring.cell import PhaseClock
from asyncbench.measuring.measure import LocustOutcome


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


def test_a_timed_stage_adds_up_across_cells_even_when_it_raises():
    clock = PhaseClock()
    for _ in range(3):
        with clock.timing("save"):
            time.sleep(0.02)
    with pytest.raises(RuntimeError), clock.timing("verify"):
        time.sleep(0.02)
        raise RuntimeError("verification failed")
    clock.add("server_stop", -1.0)  # a clock step backwards never subtracts
    totals = clock.rounded()
    assert 0.06 <= totals["save"] < 1.0 and 0.02 <= totals["verify"] < 1.0
    assert totals["server_stop"] == 0.0
    assert set(totals) == set(PhaseClock.STAGES)


def test_a_failed_locust_run_without_timestamps_adds_nothing():
    clock = PhaseClock()
    clock.locust(_outcome(window_start=0.0, window_end=0.0))
    assert sum(clock.rounded().values()) == 0.0
