"""The run's noise floor from its A/A pair, and the stated default without one."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from asyncbench.judging.noise import DEFAULT_FLOORS, between_runs, noise_floors


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


ROOM = "room-longpoll"


def room_cells(aa_p99=(2100.0, 2150.0), regular_p99=(2000.0, 2050.0)) -> pd.DataFrame:
    """A room's A/A level (1000 members on tornado-coroutine: 2 + 2 cells) and another model's
    level. Every cell's rps is the offered message rate, the same for all; p99_ms is a request
    p99, which a room cell has none of."""
    rows = [("", 1, regular_p99[0]), ("", 2, regular_p99[1]), ("aa", 1, aa_p99[0]),
            ("aa", 2, aa_p99[1]), ("", 1, 1200.0)]  # fmt: skip
    frame = pd.DataFrame(rows, columns=["replica", "repeat", "delivery_p99_ms"])
    frame["server"] = ["tornado-coroutine"] * 4 + ["flask-blocking"]
    return frame.assign(scenario=ROOM, users=1000, rate=0.0, rps=2000.0, p99_ms=math.nan,
                        included=True, endpoint="/room/poll", delay_ms=0, lost=0.0)


def with_rooms(requests: pd.DataFrame, rooms: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([requests.assign(endpoint="/sleep", delay_ms=100), rooms], ignore_index=True)


def test_a_room_pair_is_judged_on_its_delivery_p99():
    floors = noise_floors(with_rooms(cells(), room_cells())).for_scenario(ROOM)
    assert floors.room and floors.mapping().keys() == {"delivery_p99_ms"}
    assert floors.measured("delivery_p99_ms") and floors.cells == (2, 2)
    assert floors.pair == "room-longpoll / tornado-coroutine / 1000 members"
    assert floors.delivery_p99_ms.ratio == pytest.approx(2025 / 2125)
    assert 0.04 < floors.relative("delivery_p99_ms") < 1
    wider = noise_floors(with_rooms(cells(), room_cells((2600.0, 3000.0)))).for_scenario(ROOM)
    assert wider.relative("delivery_p99_ms") > 3 * floors.relative("delivery_p99_ms")
    sentences = noise_floors(with_rooms(cells(), room_cells())).sentences()
    (room,) = [s for s in sentences if s.startswith(f"{ROOM}: ")]
    assert room.startswith(f"{ROOM}: delivery p99 ±{floors.relative('delivery_p99_ms') * 100:.1f} "
                           "%, measured by the A/A pair room-longpoll / tornado-coroutine / "
                           "1000 members (2 + 2 cells")  # fmt: skip


def test_a_room_pair_never_becomes_a_request_floor_nor_a_request_pair_a_room_floor():
    alone = noise_floors(cells().assign(endpoint="/sleep", delay_ms=100))
    wide_room = room_cells((4000.0, 1000.0))
    both = noise_floors(with_rooms(cells(), wide_room))
    for metric in ("rps", "p99_ms"):
        assert both.of(metric) == alone.of(metric) and both.measured(metric)
    assert (both.pair, both.cells, both.room) == (alone.pair, alone.cells, False)
    assert both.for_scenario("sleep").mapping() == alone.for_scenario("sleep").mapping()
    assert both.for_scenario("fetch") is both  # another request scenario: the request floors
    # only a room pair in the run: the request floors are the defaults, said so
    rooms_only = noise_floors(with_rooms(cells().query("replica == ''"), wide_room))
    assert not rooms_only.measured("rps") and rooms_only.relative("rps") == DEFAULT_FLOORS["rps"]
    assert rooms_only.for_scenario(ROOM).measured("delivery_p99_ms")
    # a room scenario without a pair of its own: the default room floor, never a request one
    socket = room_cells().query("replica == ''").assign(scenario="room-websocket",
                                                        endpoint="/room/ws")  # fmt: skip
    own = noise_floors(with_rooms(cells(), socket)).for_scenario("room-websocket")
    assert own.room and not own.measured("delivery_p99_ms")
    assert own.relative("delivery_p99_ms") == DEFAULT_FLOORS["delivery_p99_ms"]
    assert "room-websocket: delivery p99 ±50.0 %, the default" in " ".join(
        noise_floors(with_rooms(cells(), socket)).sentences())


def test_two_runs_keep_room_and_request_floors_apart():
    """Against a baseline without rooms, or sharing only the room's A/A level, the request
    floors are the runs' own; the room's are the larger of its own pairs."""
    run = with_rooms(cells(), room_cells((2600.0, 3000.0)))
    request_only = cells().assign(endpoint="/sleep", delay_ms=100)
    judged = noise_floors(run).larger(noise_floors(request_only))
    assert (judged.rps, judged.p99_ms) == (noise_floors(request_only).rps,
                                           noise_floors(request_only).p99_ms)
    assert judged.for_scenario(ROOM) == noise_floors(run).for_scenario(ROOM)  # kept, not mixed
    base = with_rooms(cells().query("replica == ''"), room_cells())
    between = between_runs(run, base)  # only the room's A/A level is in both
    assert between.for_scenario(ROOM).across_runs and between.for_scenario(ROOM).cells == (4, 4)
    within = noise_floors(run).larger(noise_floors(base))
    judged = within.larger(between)
    assert (judged.rps, judged.p99_ms, judged.pair) == (within.rps, within.p99_ms, within.pair)
    assert judged.for_scenario(ROOM).relative("delivery_p99_ms") == max(
        within.for_scenario(ROOM).relative("delivery_p99_ms"),
        between.for_scenario(ROOM).relative("delivery_p99_ms"))
    assert between.sentences()[0].startswith(f"{ROOM}: between the two runs, the A/A level ")
