"""Scenario files are validated at the edge, and the matrix is planned reproducibly."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from asyncbench.planning.plan import AA_REPEAT, ScenarioError, plan_cells
from asyncbench.planning.scenario_files import available_scenarios, load_scenario, resolve_scenarios
from servers import MODELS
from servers.config import ServerConfig

GOOD = """
description = "test"
endpoint = "/sleep"
delay_ms = 100
users = [10, 1]
warmup_s = 1
measure_s = 2
servers = ["tornado-coroutine", "flask-blocking"]
"""


def write(tmp_path: Path, text: str, name: str = "custom.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_shipped_scenarios_load_and_cover_every_endpoint():
    scenarios = resolve_scenarios(None)
    assert {s.name for s in scenarios} >= {"hello", "sleep", "fetch", "sql", "longwait"}
    assert {s.endpoint for s in scenarios} >= {"/hello", "/sleep", "/fetch", "/sql"}
    default = {name for name, spec in MODELS.items() if spec.default_run}
    for s in scenarios:
        assert set(s.servers) <= set(MODELS)
        if s.name != "longwait":  # threads against the event loop only
            assert set(s.servers) == default and len(default) >= 5
        assert s.quick, f"{s.name} has no quick profile"


def test_good_file_is_normalised(tmp_path):
    scenario = load_scenario(write(tmp_path, GOOD))
    assert scenario.name == "custom"
    assert scenario.users == (1, 10)
    assert scenario.path == "/sleep?ms=100"
    assert scenario.servers == ("tornado-coroutine", "flask-blocking")


def test_a_file_without_servers_runs_every_model_of_a_default_run(tmp_path):
    text = GOOD.replace('servers = ["tornado-coroutine", "flask-blocking"]\n', "")
    scenario = load_scenario(write(tmp_path, text))
    assert scenario.servers == tuple(n for n, spec in MODELS.items() if spec.default_run)
    variant = next(n for n, spec in MODELS.items() if not spec.default_run)
    cells = plan_cells([scenario], [variant], repeat=1, seed=1)
    assert {c.server for c in cells} == {variant}  # asked for by name, it runs


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (("delay_ms = 100", "delay_ms = -5"), "delay_ms"),
        (("delay_ms = 100", "delay_ms = 100.5"), "delay_ms"),
        (("delay_ms = 100", 'delay_ms = "100"'), "delay_ms"),
        (("users = [10, 1]", "users = []"), "users"),
        (("users = [10, 1]", "users = [0]"), "users"),
        (('servers = ["tornado-coroutine", "flask-blocking"]', "servers = []"), "servers"),
        (('servers = ["tornado-coroutine", "flask-blocking"]', 'servers = ["node"]'), "servers"),
        (('endpoint = "/sleep"', 'endpoint = "/admin"'), "endpoint"),
        (("measure_s = 2", "measure_s = 0"), "measure_s"),
        (("warmup_s = 1", "warmup_s = true"), "warmup_s"),
        (("warmup_s = 1", "warmup_s = 1\nrampup = 3"), "rampup"),
        (("measure_s = 2", ""), "measure_s"),
    ],
)
def test_bad_field_names_file_and_field(tmp_path, change, field):
    path = write(tmp_path, GOOD.replace(*change))
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    message = str(err.value)
    assert str(path) in message and field in message
    assert "\n" not in message


def test_bad_quick_profile_is_named(tmp_path):
    path = write(tmp_path, GOOD + "\n[quick]\nusers = [1]\nwarmup = 2\n")
    with pytest.raises(ScenarioError, match=r"quick\.warmup: unknown key"):
        load_scenario(path)


def test_not_toml_is_one_line(tmp_path):
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load_scenario(write(tmp_path, "endpoint = [\n"))


def test_unknown_scenario_name():
    with pytest.raises(ScenarioError, match="unknown scenario 'nope'"):
        resolve_scenarios(["nope"])


def test_scenario_by_path(tmp_path):
    path = write(tmp_path, GOOD)
    assert [s.name for s in resolve_scenarios([str(path)])] == ["custom"]


def test_plan_is_complete_and_seeded():
    scenarios = [load_scenario(p) for p in available_scenarios().values()]
    cells = plan_cells(scenarios, None, repeat=2, seed=7)
    pairs = sum(1 for s in scenarios if s.aa)
    expected = (sum(len(s.users) * len(s.servers) for s in scenarios) + pairs) * 2
    assert pairs >= 1, "the default suite measures its noise floor"
    assert len(cells) == expected == len({c.cell_id for c in cells})
    assert cells == plan_cells(scenarios, None, repeat=2, seed=7)
    assert cells != plan_cells(scenarios, None, repeat=2, seed=8)
    only = plan_cells(scenarios, ["tornado-coroutine"], repeat=1, seed=1)
    assert {c.server for c in only} == {"tornado-coroutine"}


def test_plan_rejects_unknown_server():
    with pytest.raises(ScenarioError, match="unknown server"):
        plan_cells(resolve_scenarios(["sleep"]), ["nginx"], repeat=1, seed=1)


def test_aa_pair_is_planned_as_shuffled_replica_cells():
    sleep = resolve_scenarios(["sleep"])[0]
    assert sleep.aa is not None
    cells = plan_cells([sleep], None, repeat=2, seed=3)
    copies = [c for c in cells if c.replica == "aa"]
    assert [(c.server, c.users) for c in copies] == [(sleep.aa.server, sleep.aa.users)] * 2
    assert {c.cell_id for c in copies} == {
        f"sleep.{sleep.aa.server}.u{sleep.aa.users}.aa.r{r}" for r in (1, 2)
    }
    # no A/A copy when its first half is not planned: other levels, other models, open loop
    assert not any(c.replica for c in plan_cells([replace(sleep, users=(1, 4))], None, 2, 3))
    assert not any(c.replica for c in plan_cells([sleep], ["flask-blocking"], 2, 3))
    assert not any(c.replica for c in plan_cells([sleep], None, 2, 3, rates=(50.0,)))


def test_the_long_poll_room_plans_its_aa_pair_in_the_default_profile():
    """Its floor is what rooms are gated by; the default profile is what a run measures."""
    room = resolve_scenarios(["room-longpoll"])[0]
    assert (room.aa.server, room.aa.users) == ("tornado-coroutine", 100)
    default = room.profile("default")
    assert 100 in default.users
    cells = plan_cells([default], None, repeat=1, seed=3, balance_repeats=True)
    copies = sorted(c.cell_id for c in cells if c.replica == "aa")
    # 2 + 2 cells: a 1 + 1 pair states its floor with one degree of freedom (t = 64 at 99 %)
    assert copies == [f"room-longpoll.tornado-coroutine.u100.aa.r{r}" for r in (1, 2)]
    ids = {c.cell_id for c in cells}
    assert {f"room-longpoll.tornado-coroutine.u100.r{r}" for r in (1, 2)} <= ids
    second = next(c for c in cells if c.cell_id == "room-longpoll.tornado-coroutine.u100.r2")
    assert "A/A pair" in second.why
    assert not any(c.replica for c in plan_cells([room.profile("quick")], None, 1, 3))


def test_a_room_aa_pair_is_validated_like_a_request_one(tmp_path):
    path = write(tmp_path, 'description = "d"\nkind = "room"\nmembers = [10]\nwarmup_s = 0\n'
                 'measure_s = 1\naa = { server = "tornado-coroutine", members = 10 }\n')
    with pytest.raises(ScenarioError, match=r"aa\.members: unknown key"):
        load_scenario(path)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('aa = { server = "nginx", users = 4 }', "aa.server: must be one of"),
        ('aa = { server = "tornado-coroutine", users = 0 }', "aa.users: must be an integer"),
        ('aa = { server = "tornado-coroutine", users = 4, x = 1 }', "aa.x: unknown key"),
        ("[thresholds]\nmax_p99 = 3", "thresholds: unknown threshold 'max_p99'"),
        ("[thresholds]\nmin_rps = -1", "thresholds.min_rps: expected a positive number"),
    ],
)
def test_aa_and_thresholds_errors_name_file_and_field(tmp_path, extra, message):
    path = tmp_path / "s.toml"
    path.write_text('description = "d"\nendpoint = "/sleep"\ndelay_ms = 10\nusers = [1]\n'
                    f'warmup_s = 0\nmeasure_s = 1\n{extra}\n')  # fmt: skip
    with pytest.raises(ScenarioError, match=f"{path}: {message}".replace("(", r"\(")):
        load_scenario(path)


def test_thresholds_are_read_from_the_scenario(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('description = "d"\nendpoint = "/sleep"\ndelay_ms = 10\nusers = [1]\n'
                    'warmup_s = 0\nmeasure_s = 1\n[thresholds]\nmax_p99_ms = 250\n')  # fmt: skip
    scenario = load_scenario(path)
    assert scenario.thresholds == {"max_p99_ms": 250.0}
    assert scenario.limits.max_p99_ms == 250.0


def test_each_profile_takes_its_table_and_full_the_top_level():
    sleep = resolve_scenarios(["sleep"])[0]
    assert sleep.profile("full").users == sleep.users == (1, 4, 16, 64)
    assert sleep.profile("default").users == (1, 8, 64)
    assert sleep.profile("quick").users == (32,)
    room = resolve_scenarios(["room-longpoll"])[0].profile("default")
    assert room.users == (100, 1000) and room.message_rate == 2


def test_a_file_without_a_default_table_runs_its_top_level_by_default(tmp_path):
    scenario = load_scenario(write(tmp_path, GOOD))
    assert scenario.profile("default") == scenario


def test_bad_default_table_is_named(tmp_path):
    path = write(tmp_path, GOOD + "\n[default]\nusers = [1]\nrepeat = 2\n")
    with pytest.raises(ScenarioError, match=r"default\.repeat: unknown key"):
        load_scenario(path)
    path = write(tmp_path, GOOD + "\n[default]\nusers = []\n")
    with pytest.raises(ScenarioError, match=r"default\.users: must be a non-empty list"):
        load_scenario(path)


def test_balance_repeats_are_planned_for_pinned_multi_process_request_levels():
    scenarios = [s.profile("default") for s in resolve_scenarios(["sleep", "room-websocket"])]
    cells = plan_cells(scenarios, None, repeat=1, seed=5, balance_repeats=True)
    seconds = [c for c in cells if c.repeat == 2 and not c.replica]
    assert seconds and all(c.why for c in seconds)
    assert {c.cell_id for c in seconds if c.why == AA_REPEAT} == {"sleep.tornado-coroutine.u64.r2"}
    seconds = [c for c in seconds if c.why != AA_REPEAT]
    config = ServerConfig()
    for cell in seconds:
        spec = MODELS[cell.server]
        assert cell.scenario == "sleep" and cell.users > 1
        assert spec.multi_process and spec.keep_alive
        assert cell.users > spec.concurrency.slots(spec.configure(config)) / config.workers
    # 64 users fit in one of flask-threaded's 64-thread workers: wherever they land, each
    # holds a thread; tornado-forked's one-request children queue them from 2 users on
    assert ("tornado-forked", 64) in {(c.server, c.users) for c in seconds}
    assert ("flask-threaded", 64) not in {(c.server, c.users) for c in seconds}
    small = plan_cells(scenarios, None, 1, 5, balance_repeats=True,
                       config=ServerConfig(workers=2, threads=4))  # fmt: skip
    assert ("flask-threaded", 64, 2) in {(c.server, c.users, c.repeat) for c in small}
    assert not [c for c in plan_cells(scenarios, None, 1, 5) if c.repeat == 2]
    # the reason does not name the cell: it is the same cell however it came to be planned
    assert seconds[0] == replace(seconds[0], why="")


def test_an_adaptive_windows_floor_is_checked_against_its_cap(tmp_path):
    path = write(tmp_path, GOOD + "\n[default]\nusers = [1]\nmeasure_min_s = 4\nmeasure_s = 3\n")
    with pytest.raises(ScenarioError, match=r"default\.measure_min_s: must be at most measure_s"):
        load_scenario(path)
    path = write(tmp_path, GOOD + "\n[default]\nusers = [1]\nmeasure_min_s = 2\nmeasure_s = 4\n")
    scenario = load_scenario(path)
    assert scenario.measure_min_s is None  # the full sweep keeps its fixed windows
    assert scenario.profile("default").measure_min_s == 2

