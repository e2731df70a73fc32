"""The regression gate: per-level verdicts against a baseline, thresholds, and bad input."""

from __future__ import annotations

import pandas as pd
import pytest

from asyncbench.gate import ComparisonInputError, Thresholds, check_thresholds, regression_gate


def table(rows):
    """Per-repeat rows from {(scenario, server, users): (rps values, p99 values)}."""
    records = []
    for (scenario, server, users), (rps, p99) in rows.items():
        for repeat, (r, p) in enumerate(zip(rps, p99, strict=True), start=1):
            records.append({"scenario": scenario, "server": server, "users": users,
                            "rate": 0.0, "repeat": repeat, "rps": r, "p99_ms": p})  # fmt: skip
    return pd.DataFrame(records)


BASELINE = {
    ("sleep", "flask-blocking", 4): ([39.0, 39.4], [104.0, 105.0]),
    ("sleep", "tornado-coroutine", 64): ([620.0, 625.0], [110.0, 112.0]),
}
FLOORS = {"rps": 0.03, "p99_ms": 0.05}


def test_gate_passes_an_unchanged_run():
    run = table({key: ([r * 1.005 for r in rps], p99) for key, (rps, p99) in BASELINE.items()})
    result = regression_gate(run, table(BASELINE), FLOORS)
    assert result.status == 0 and result.failures == ()
    frame = result.to_frame()
    assert len(frame) == 2 and not frame["regressed"].any()
    assert {"rps_ratio", "rps_low", "rps_high", "p99_verdict", "reasons"} <= set(frame.columns)


def test_gate_fails_a_throughput_regression_and_names_the_level():
    run = table({**BASELINE, ("sleep", "tornado-coroutine", 64): ([496.0, 500.0], [111.0, 112.0])})
    result = regression_gate(run, table(BASELINE), FLOORS)
    assert result.status == 1
    (failure,) = result.failures
    assert failure.startswith("sleep / tornado-coroutine / 64 users: run loses on rps: 0.")


def test_gate_fails_a_p99_regression():
    run = table({**BASELINE, ("sleep", "flask-blocking", 4): ([39.0, 39.4], [140.0, 142.0])})
    result = regression_gate(run, table(BASELINE), FLOORS)
    assert result.status == 1
    assert "loses on p99" in result.failures[0]


def test_gate_applies_scenario_thresholds_k6_style():
    limits = {"sleep": Thresholds.from_mapping({"max_p99_ms": 108, "min_rps_ratio": 0.9})}
    result = regression_gate(table(BASELINE), table(BASELINE), FLOORS, thresholds=limits)
    assert result.status == 1
    assert result.failures == (
        "sleep / tornado-coroutine / 64 users: p99 111.0 ms above max_p99_ms 108",
    )
    assert check_thresholds(table(BASELINE), limits).status == 1
    relaxed = {"sleep": Thresholds(max_p99_ms=200, min_rps=30)}
    assert check_thresholds(table(BASELINE), relaxed).status == 0


@pytest.mark.parametrize(
    ("run", "message"),
    [
        (
            table(BASELINE).drop(columns=["p99_ms", "rate"]),
            "run table lacks column(s): rate, p99_ms",
        ),
        (table({("hello", "flask-blocking", 1): ([700.0], [2.0])}), "no level"),
        (table(BASELINE).iloc[0:0], "run table has no rows"),
    ],
)
def test_gate_rejects_bad_input_with_one_line(run, message):
    with pytest.raises(ComparisonInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        regression_gate(run, table(BASELINE), FLOORS)
    assert issubclass(ComparisonInputError, ValueError)


@pytest.mark.parametrize(
    ("data", "message"),
    [({"max_p99": 100}, "unknown threshold 'max_p99'"), ({"min_rps": -1}, "min_rps: expected")],
)
def test_thresholds_name_the_bad_field(data, message):
    with pytest.raises(ComparisonInputError, match=message):
        Thresholds.from_mapping(data, where="scenarios/sleep.toml [thresholds]")


def test_a_scenario_with_its_own_floor_is_gated_by_it():
    """The same 20 % loss fails a waiting scenario's level (floor 8 %) and not a CPU-bound one
    judged by its own pair (floor 35 %)."""
    def level(scenario, rps):
        return pd.DataFrame([{"scenario": scenario, "server": "m", "users": 16, "rate": 0.0,
                              "repeat": r, "rps": rps * (1 + 0.005 * r), "p99_ms": 10.0}
                             for r in (1, 2)])  # fmt: skip

    run = pd.concat([level("sleep", 80.0), level("hello", 800.0)])
    base = pd.concat([level("sleep", 100.0), level("hello", 1000.0)])
    floors = {"rps": 0.08, "p99_ms": 0.5}
    gated = regression_gate(run, base, floors, scenario_floors={"hello": {"rps": 0.35,
                                                                          "p99_ms": 0.5}})
    assert [lv.regressed for lv in gated.levels] == [False, True]  # hello, sleep (sorted)
    assert regression_gate(run, base, floors).status == 1
    assert all(lv.regressed for lv in regression_gate(run, base, floors).levels)
