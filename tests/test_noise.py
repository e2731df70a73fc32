"""The run's noise floor from its A/A pair, and the stated default without one."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from asyncbench.noise import DEFAULT_FLOORS, between_runs, noise_floors


def cells(aa_rps=(101.0, 99.0), aa_included=True) -> pd.DataFrame:
    rows = [("", 1, 100.0, 110.0, True), ("", 2, 102.0, 112.0, True),
            ("aa", 1, aa_rps[0], 111.0, aa_included), ("aa", 2, aa_rps[1], 115.0, aa_included),
            ("", 1, 10.0, 900.0, True)]  # fmt: skip
    frame = pd.DataFrame(rows, columns=["replica", "repeat", "rps", "p99_ms", "included"])
    frame["scenario"], frame["users"], frame["rate"] = "sleep", 64, 0.0
    frame["server"] = ["tornado-coroutine"] * 4 + ["flask-blocking"]
    return frame


def test_floor_comes_from_the_aa_pair():
    floors = noise_floors(cells())
    assert floors.measured("rps") and floors.measured("p99_ms")
    assert floors.pair == "sleep / tornado-coroutine / 64 users" and floors.cells == (2, 2)
    assert floors.rps.ratio == pytest.approx(101 / 100)
    assert 0.01 < floors.relative("rps") < DEFAULT_FLOORS["rps"] * 4
    assert floors.sentence().startswith("Noise floor ±")
    assert "measured by the A/A pair sleep / tornado-coroutine / 64 users" in floors.sentence()


def test_a_wider_pair_gives_a_wider_floor():
    assert noise_floors(cells((110.0, 90.0))).relative("rps") > noise_floors(cells()).relative(
        "rps"
    )


def test_without_a_usable_pair_the_default_is_used_and_said():
    for frame in (cells(aa_included=False), cells().query("replica == ''")):
        floors = noise_floors(frame)
        assert not floors.measured("rps") and not floors.measured("p99_ms")
        assert floors.relative("rps") == DEFAULT_FLOORS["rps"]
        assert floors.rps.cell_rel_sd > 0 and math.isnan(floors.rps.ratio)
        assert "no usable A/A pair" in floors.sentence()


def test_comparing_two_runs_takes_the_larger_floor():
    measured, default = noise_floors(cells()), noise_floors(cells(aa_included=False))
    both = measured.larger(default)
    assert both.relative("rps") == max(measured.relative("rps"), DEFAULT_FLOORS["rps"])
    assert both.relative("p99_ms") == max(measured.relative("p99_ms"), DEFAULT_FLOORS["p99_ms"])


def two_pairs() -> pd.DataFrame:
    """A tight pair on sleep (it waits 100 ms) and a wide one on hello (CPU-bound)."""
    hello = cells((130.0, 95.0)).assign(scenario="hello", delay_ms=0)
    return pd.concat([cells().assign(delay_ms=100), hello], ignore_index=True)


def test_a_scenario_with_its_own_pair_is_judged_by_it_and_the_rest_by_the_waiting_ones():
    """On this 2-core machine hello's repeats differ by 20-30 %; its pair must not widen the
    floor every waiting scenario is judged by, nor theirs narrow hello's."""
    floors = noise_floors(two_pairs())
    sleep_only = noise_floors(cells().assign(delay_ms=100))
    assert floors.relative("rps") == sleep_only.relative("rps")
    assert floors.pair == "sleep / tornado-coroutine / 64 users"
    hello = floors.for_scenario("hello")
    assert hello.pair == "hello / tornado-coroutine / 64 users"
    assert hello.relative("rps") > 3 * floors.relative("rps")
    assert floors.for_scenario("fetch") is floors
    assert floors.sentences()[1].startswith("hello: Noise floor ±")
    both = floors.larger(sleep_only)  # comparing with a run that had no hello pair
    assert both.for_scenario("hello").relative("rps") == hello.relative("rps")


def test_two_runs_are_judged_by_how_far_their_shared_aa_level_moved_between_them():
    """Within each run the pair agrees to 2 %; the second run measured it 30 % slower, as a
    machine that drifted between the runs does: the floor between them says so."""
    before = cells()
    after = cells((71.0, 69.0))
    after["rps"] = after["rps"].where(after["replica"] == "aa", 0.7 * after["rps"])
    within = noise_floors(after).larger(noise_floors(before))
    between = between_runs(after, before)
    assert between.across_runs and between.pair == "sleep / tornado-coroutine / 64 users"
    assert between.cells == (4, 4)
    assert between.rps.ratio == pytest.approx(0.7, rel=0.02)
    assert between.relative("rps") >= 0.4 > 4 * within.relative("rps")
    assert between.sentence().startswith("Between the two runs, the A/A level sleep / ")
    assert within.larger(between).relative("rps") == between.relative("rps")
    hello_only = cells().assign(scenario="hello")
    assert between_runs(after, hello_only) is None  # no A/A level in both runs
