"""Generated scenario files: each loads into a valid ``Scenario`` or is refused in one line.

Hypothesis writes TOML documents from the known keys (and unknown ones) with values of every
type: wrong types, missing fields, huge and negative numbers, NaN and infinities, nested tables,
odd strings; and raw bytes: a shipped file cut short or with bytes changed, and bytes that are
not UTF-8 at all. ``scenario_files.load_scenario`` must return a scenario whose every field is
in range (and that plans into cells) or raise ``ScenarioError`` naming the file; nothing else.

Run with ``-s`` to see how many files were tried; ``ASYNCBENCH_FUZZ_SCALE=20`` tries more.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from asyncbench import cli
from asyncbench.planning.kinds import ENDPOINTS
from asyncbench.planning.plan import (
    MAX_SECONDS,
    MAX_USERS,
    PROFILES,
    Scenario,
    ScenarioError,
    plan_cells,
)
from asyncbench.planning.scenario_files import (
    _KEYS,
    _PROFILE_KEYS,
    _ROOM_KEYS,
    SCENARIO_DIR,
    load_scenario,
)
from servers import MODELS
from servers.endpoints import MAX_MS

SCALE = int(os.environ.get("ASYNCBENCH_FUZZ_SCALE", "1"))
FUZZ = settings(
    max_examples=200 * SCALE, deadline=None, database=None,
    suppress_health_check=list(HealthCheck),
)  # fmt: skip
TRIED: Counter[str] = Counter()
SHIPPED = [p.read_bytes() for p in sorted(SCENARIO_DIR.glob("*.toml"))]

SCALARS = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-5, 6000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(0, 10),
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from([*ENDPOINTS, *MODELS, "", " ", "/admin", "sleep"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(sorted(_PROFILE_KEYS | {"x"})), inner, max_size=3),
    ),
    max_leaves=8,
)
PLAUSIBLE = {  # values of the right type, so that checks past the type are exercised too
    "description": st.text(min_size=0, max_size=20),
    "endpoint": st.sampled_from([*ENDPOINTS, "/nope"]),
    "delay_ms": st.integers(-1, MAX_MS + 1),
    "users": st.lists(st.integers(0, MAX_USERS + 1), max_size=4),
    "warmup_s": st.floats(allow_nan=True, allow_infinity=True) | st.integers(-1, 10**6),
    "measure_s": st.floats(allow_nan=True, allow_infinity=True) | st.integers(-1, 10**6),
    "measure_min_s": st.floats(allow_nan=True, allow_infinity=True) | st.integers(-1, 10**6),
    "servers": st.lists(st.sampled_from([*MODELS, "node"]), max_size=3),
    "spawn_rate": st.floats(allow_nan=True, allow_infinity=True),
    "kind": st.sampled_from(["room", "chat"]),
    "members": st.lists(st.integers(0, MAX_USERS + 1), max_size=4),
    "transport": st.sampled_from(["long-poll", "websocket", ""]),
    "message_rate": st.floats(allow_nan=True, allow_infinity=True) | st.integers(-1, 1000),
    "hold_s": st.floats(allow_nan=True, allow_infinity=True) | st.integers(-1, 100),
    "probe_rate": st.floats(allow_nan=True, allow_infinity=True) | st.integers(-1, 100),
}
ALL_KEYS = _KEYS | _ROOM_KEYS | {"colour", "rampup"}


def toml_value(value) -> str:
    """A TOML literal for a JSON-like value (tomllib reads TOML; nothing here writes it)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") \
            if math.isinf(value) else repr(value)  # fmt: skip
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a TOML basic string for most text
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"


@st.composite
def documents(draw) -> bytes:
    keys = draw(st.sets(st.sampled_from(sorted(ALL_KEYS)), max_size=9))
    lines = []
    for key in sorted(keys):
        plausible = key in PLAUSIBLE and draw(st.integers(0, 3)) > 0
        value = draw(PLAUSIBLE[key] if plausible else VALUES)
        lines.append(f"{key} = {toml_value(value)}")
    return "\n".join(lines).encode("utf-8", "surrogatepass")


VALID = {"description": "x", "endpoint": "/sleep", "delay_ms": 10, "users": [1, 4],
         "warmup_s": 0.5, "measure_s": 1}  # fmt: skip
VALID_ROOM = {"description": "x", "kind": "room", "members": [2, 8], "message_rate": 2.0,
              "warmup_s": 0.5, "measure_s": 1}  # fmt: skip


@st.composite
def near_valid_documents(draw) -> bytes:
    """A valid file with a few fields changed, removed or added (the quick table included)."""
    data: dict = dict(draw(st.sampled_from([VALID, VALID_ROOM])))
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(sorted(ALL_KEYS)))
        if draw(st.integers(0, 4)) == 0:
            data.pop(key, None)
        elif key in ("quick", "default"):
            data[key] = {k: draw(PLAUSIBLE[k]) for k in draw(st.sets(st.sampled_from(
                sorted(_PROFILE_KEYS))))}  # fmt: skip
        else:
            data[key] = draw(PLAUSIBLE.get(key, VALUES))
    return "\n".join(f"{k} = {toml_value(v)}" for k, v in data.items()).encode()


@st.composite
def damaged_shipped_files(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SHIPPED)))
    action = draw(st.sampled_from(["cut", "flip", "insert"]))
    at = draw(st.integers(0, len(data)))
    if action == "cut":
        return bytes(data[:at])
    if action == "flip" and at < len(data):
        data[at] = draw(st.integers(0, 255))
    else:
        data[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


FILES = st.one_of(
    near_valid_documents(), near_valid_documents(), documents(), damaged_shipped_files(),
    st.binary(max_size=200),
)


@pytest.fixture(scope="module", autouse=True)
def report_counts() -> Iterator[None]:
    yield
    print(f"\ngenerated scenario files tried: {dict(TRIED)}, total {sum(TRIED.values())}")


def assert_valid(scenario: Scenario) -> None:
    assert scenario.kind is not None and 0 <= scenario.delay_ms <= MAX_MS
    for name in ("message_rate", "hold_s", "probe_rate"):  # a room's, when it has them
        value = getattr(scenario, name, None)
        assert value is None or (math.isfinite(value) and value > 0), (name, value)
    assert scenario.users and all(1 <= u <= MAX_USERS for u in scenario.users)
    assert 0 <= scenario.warmup_s <= MAX_SECONDS and 0.5 <= scenario.measure_s <= MAX_SECONDS
    assert scenario.servers and set(scenario.servers) <= set(MODELS)
    assert scenario.spawn_rate is None or math.isfinite(scenario.spawn_rate)
    for profile in (scenario.profile(name) for name in PROFILES):
        assert 0.5 <= profile.measure_s <= MAX_SECONDS and profile.users
    assert plan_cells([scenario], None, repeat=1, seed=1)


@FUZZ
@given(FILES)
def test_any_scenario_file_loads_valid_or_is_refused_naming_the_file(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.toml"
        path.write_bytes(data)
        try:
            scenario = load_scenario(path)
        except ScenarioError as exc:
            line = cli.one_line(str(exc))
            assert line.startswith(f"{path}: ") and len(line.splitlines()) == 1, line
            outcome = "refused: " + ("not TOML" if "not valid TOML" in line else "a field")
        else:
            assert_valid(scenario)
            outcome = "loaded"
    TRIED[outcome.split(":")[0]] += 1
    event(outcome)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("measure_s = nan", "measure_s"),
        ("measure_s = inf", "measure_s"),
        ("measure_s = 1e300", "measure_s"),
        ("warmup_s = -inf", "warmup_s"),
        ("spawn_rate = nan", "spawn_rate"),
        ("servers = [[1]]", "servers"),
        ("servers = [{a = 1}]", "servers"),
    ],
)
def test_values_that_used_to_get_through(tmp_path, text, field):
    base = dict(line.split(" = ", 1) for line in (
        'description = "x"', 'endpoint = "/sleep"', "delay_ms = 1", "users = [1]",
        "warmup_s = 0", "measure_s = 1",
    ))  # fmt: skip
    key, value = text.split(" = ", 1)
    base[key] = value
    path = tmp_path / "x.toml"
    path.write_text("\n".join(f"{k} = {v}" for k, v in base.items()))
    with pytest.raises(ScenarioError, match=f"{field}: "):
        load_scenario(path)


def test_a_directory_or_an_unreadable_path_is_refused(tmp_path):
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path)
