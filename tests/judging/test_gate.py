"""The regression gate: per-level verdicts against a baseline, thresholds, and bad input."""

from __future__ import annotations

import pandas as pd
import pytest

from asyncbench.judging.gate import (
    ComparisonInputError,
    Thresholds,
    check_thresholds,
    regression_gate,
)


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


def room(p99s, lost=None, included=None, server="tornado-coroutine", members=1000):
    """A room level's rows: one per measured cell, rps the offered rate, no request p99."""
    lost = lost or [0] * len(p99s)
    included = included or [n == 0 for n in lost]
    return pd.DataFrame([{"scenario": "room-longpoll", "server": server, "users": members,
                          "rate": 0.0, "repeat": r, "rps": 2000.0, "p99_ms": float("nan"),
                          "room": True, "included": ok, "delivery_p99_ms": p, "lost": n}
                         for r, (p, n, ok) in enumerate(zip(p99s, lost, included, strict=True),
                                                        start=1)])  # fmt: skip


ROOM_FLOORS = {"room-longpoll": {"delivery_p99_ms": 0.3}}


def room_gate(run, base, floors=None):
    requests = table(BASELINE)
    return regression_gate(pd.concat([requests, run]), pd.concat([requests, base]), FLOORS,
                           scenario_floors=ROOM_FLOORS if floors is None else floors)


def test_a_room_level_regresses_on_delivery_p99_beyond_its_floor_only():
    base = room([2000.0, 2040.0])
    within = room_gate(room([2400.0, 2440.0]), base)  # 1.2×: inside the ±30 % floor
    assert within.status == 0
    (level,) = [lv for lv in within.levels if lv.room]
    assert level.label == "room-longpoll / tornado-coroutine / 1000 members"
    assert level.rps is None and level.p99 is None
    assert level.delivery.ratio == pytest.approx(1.2, rel=0.01) and level.delivery.low > 1
    assert level.delivery.verdict == "no clear difference"  # the floor, not the interval
    beyond = room_gate(room([3000.0, 3040.0]), base)  # 1.5×, the interval excluding 1
    assert beyond.status == 1
    (failure,) = beyond.failures
    assert failure.startswith("room-longpoll / tornado-coroutine / 1000 members: run loses on "
                              "delivery p99: 1.50× baseline (95 % CI")  # fmt: skip
    frame = beyond.to_frame().set_index("scenario").loc["room-longpoll"]
    assert frame["room"] and frame["delivery_verdict"] == "loses" and frame["regressed"]
    # the request floors would have let 1.5× pass: a room level is judged by its own
    assert room_gate(room([3000.0, 3040.0]), base, {"room-longpoll": {"delivery_p99_ms": 0.6}}
                     ).status == 0  # fmt: skip


def test_a_room_level_that_lost_deliveries_regresses_whatever_the_floor():
    base = room([2000.0, 2040.0])
    lossy = room([2000.0, 2040.0], lost=[0, 37])  # the lossy cell is excluded, its loss counts
    gated = room_gate(lossy, base, {"room-longpoll": {"delivery_p99_ms": 100.0}})
    assert gated.status == 1
    (failure,) = gated.failures
    assert failure == ("room-longpoll / tornado-coroutine / 1000 members: lost 37 deliveries "
                       "(1 of 2 cells) where the baseline lost none")  # fmt: skip
    assert [lv.lost for lv in gated.levels if lv.room] == [(37, 0)]
    every = room_gate(room([2000.0], lost=[5]), base)  # no valid cell left: judged on the loss
    (level,) = [lv for lv in every.levels if lv.room]
    assert level.delivery is None and level.regressed
    assert room_gate(lossy, room([2000.0, 2040.0], lost=[3, 0])).status == 0  # lost there too


def test_request_levels_are_judged_as_before_beside_room_levels():
    gated = room_gate(room([2000.0, 2040.0]), room([2000.0, 2040.0]))
    alone = regression_gate(table(BASELINE), table(BASELINE), FLOORS)
    requests = [lv for lv in gated.levels if not lv.room]
    assert [(lv.label, lv.rps, lv.p99) for lv in requests] == \
        [(lv.label, lv.rps, lv.p99) for lv in alone.levels]  # fmt: skip
    assert check_thresholds(pd.concat([table(BASELINE), room([1.0])]),
                            {"sleep": Thresholds(max_p99_ms=200)}).levels == \
        check_thresholds(table(BASELINE), {"sleep": Thresholds(max_p99_ms=200)}).levels
