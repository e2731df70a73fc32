"""Scenario files are validated at the edge, and the matrix is planned reproducibly."""

from __future__ import annotations

from pathlib import Path

import pytest

from asyncbench.plan import (
    ScenarioError,
    available_scenarios,
    load_scenario,
    plan_cells,
    resolve_scenarios,
)
from servers import MODELS

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
    expected = sum(len(s.users) * len(s.servers) for s in scenarios) * 2
    assert len(cells) == expected == len({c.cell_id for c in cells})
    assert cells == plan_cells(scenarios, None, repeat=2, seed=7)
    assert cells != plan_cells(scenarios, None, repeat=2, seed=8)
    only = plan_cells(scenarios, ["tornado-coroutine"], repeat=1, seed=1)
    assert {c.server for c in only} == {"tornado-coroutine"}


def test_plan_rejects_unknown_server():
    with pytest.raises(ScenarioError, match="unknown server"):
        plan_cells(resolve_scenarios(["sleep"]), ["nginx"], repeat=1, seed=1)
