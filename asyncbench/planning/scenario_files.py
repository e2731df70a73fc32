"""Scenario files: ``scenarios/*.toml`` read and validated into ``Scenario`` records, every error
naming the file and the field; and a run's choice of scenarios resolved to files."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

from asyncbench.planning.kinds import ENDPOINTS, kind_of_endpoint
from asyncbench.planning.plan import (
    DEFAULT,
    MAX_SECONDS,
    MAX_SPAWN_RATE,
    MAX_USERS,
    QUICK,
    AAPair,
    Scenario,
    ScenarioError,
)
from asyncbench.planning.thresholds import ComparisonInputError, Thresholds
from asyncbench.planning.transports import DEFAULT_TRANSPORT, TRANSPORTS
from servers import MODELS, room
from servers.endpoints import MAX_MS

SCENARIO_DIR = Path(__file__).resolve().parents[2] / "scenarios"
MAX_MESSAGE_RATE = 100.0
_PROFILE_KEYS = {"users", "warmup_s", "measure_s", "measure_min_s"}
_KEYS = {"description", "endpoint", "delay_ms", "servers", DEFAULT, QUICK, "spawn_rate", "aa",
         "thresholds"} | _PROFILE_KEYS  # fmt: skip
_ROOM_KEYS = {"description", "kind", "members", "transport", "message_rate", "hold_s",
              "probe_rate", "servers", DEFAULT, QUICK, "spawn_rate", "warmup_s",
              "measure_s", "measure_min_s", "aa"}  # fmt: skip
_ROOM_PROFILE_KEYS = {"members", "warmup_s", "measure_s", "measure_min_s", "message_rate"}
ROOM_DEFAULTS = {"message_rate": 1.0, "hold_s": 30.0, "probe_rate": 2.0}



def load_scenario(path: Path) -> Scenario:
    """Read and validate one scenario file; any problem raises ``ScenarioError`` naming it."""
    where = str(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ScenarioError(f"{where}: no such scenario file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{where}: not valid TOML: {exc}") from None
    except OSError as exc:  # a directory, no permission, an I/O error
        raise ScenarioError(f"{where}: cannot read the scenario file: {exc.strerror}") from None
    check = _Checker(where)
    if "kind" in data:
        return _load_room(path, data, check)
    check.known_keys(data, _KEYS, "")
    endpoint = check.choice(data, "endpoint", tuple(ENDPOINTS))
    kind = kind_of_endpoint(endpoint)
    delay = check.integer(data, "delay_ms", 0, MAX_MS) if kind.takes_delay else 0
    if not kind.takes_delay and "delay_ms" in data:
        check.fail("delay_ms", f"{endpoint} takes no delay; remove delay_ms")
    servers = check.servers(data)
    spawn_rate = _spawn_rate(check, data)
    tables = {name: _profile_table(check, data, name, _PROFILE_KEYS, "users")
              for name in (DEFAULT, QUICK)}  # fmt: skip
    return Scenario(
        aa=check.aa_pair(data) if "aa" in data else None,
        thresholds=check.thresholds(data) if "thresholds" in data else None,
        name=path.stem,
        description=check.text(data, "description"),
        endpoint=endpoint,
        delay_ms=delay,
        servers=servers,
        source=where,
        spawn_rate=spawn_rate,
        **tables,
        **_profile_fields(check, data, required=True),
    )


def _load_room(path: Path, data: dict, check: _Checker) -> Scenario:
    """A chat-room scenario: ``kind = "room"``, its members as the load levels."""
    check.choice(data, "kind", ("room",))
    check.known_keys(data, _ROOM_KEYS, "")
    fields = {k: check.number(data, k, minimum=0.01) if k in data else v
              for k, v in ROOM_DEFAULTS.items()}  # fmt: skip
    if "message_rate" in data:
        fields["message_rate"] = _message_rate(check, data)
    if not 1 <= fields["hold_s"] <= room.MAX_HOLD_S:
        check.fail("hold_s", f"must be from 1 to {room.MAX_HOLD_S:g} seconds")
    tables = {name: _profile_table(check, data, name, _ROOM_PROFILE_KEYS, "members")
              for name in (DEFAULT, QUICK)}  # fmt: skip
    transport = check.choice(data, "transport", tuple(TRANSPORTS)) if "transport" in data \
        else DEFAULT_TRANSPORT
    return Scenario(
        aa=check.aa_pair(data) if "aa" in data else None,  # ``users``: its members
        name=path.stem, description=check.text(data, "description"),
        endpoint=TRANSPORTS[transport].endpoint, delay_ms=0, servers=check.servers(data),
        source=str(path), **tables, kind_name="room", transport=transport,
        spawn_rate=_spawn_rate(check, data), **fields,
        **_profile_fields(check, _members(data), required=True, levels="members"),
    )  # fmt: skip


def _profile_table(
    check: _Checker, data: dict, name: str, keys: set[str], levels: str
) -> dict | None:
    """A profile table's overrides (``[default]``, ``[quick]``: the levels, windows and, for a
    room, its message rate), checked like the top level."""
    if name not in data:
        return None
    table = data[name]
    if not isinstance(table, dict):
        check.fail(name, f"must be a table of {' / '.join(sorted(keys))} overrides")
    check.known_keys(table, keys, f"{name}.")
    inner = _Checker(check.where, f"{name}.")
    fields = _profile_fields(inner, _members(table), required=False, levels=levels)
    if "message_rate" in table:
        fields["message_rate"] = _message_rate(inner, table)
    return fields


def _message_rate(check: _Checker, data: dict) -> float:
    rate = check.number(data, "message_rate", minimum=0.01)
    if rate > MAX_MESSAGE_RATE:
        check.fail("message_rate", f"must be at most {MAX_MESSAGE_RATE:g} messages/s")
    return rate


def _members(data: dict) -> dict:
    """A room's members are its load levels (``users`` inside)."""
    return {("users" if k == "members" else k): v for k, v in data.items()}


def _spawn_rate(check: _Checker, data: dict) -> float | None:
    if "spawn_rate" not in data:
        return None
    spawn_rate = check.number(data, "spawn_rate", minimum=0.1)
    if spawn_rate > MAX_SPAWN_RATE:
        check.fail("spawn_rate", f"must be at most {MAX_SPAWN_RATE:g} users/s")
    return spawn_rate


def _profile_fields(check: _Checker, data: dict, required: bool, levels: str = "users") -> dict:
    fields = {}
    if required or "users" in data:
        fields["users"] = check.user_levels(data, "users", shown=levels)
    if required or "warmup_s" in data:
        fields["warmup_s"] = check.number(data, "warmup_s", minimum=0, maximum=MAX_SECONDS)
    if required or "measure_s" in data:
        fields["measure_s"] = check.number(data, "measure_s", minimum=0.5, maximum=MAX_SECONDS)
    if "measure_min_s" in data:
        shortest = check.number(data, "measure_min_s", minimum=0.5, maximum=MAX_SECONDS)
        if "measure_s" in data and shortest > fields["measure_s"]:
            check.fail("measure_min_s", f"must be at most measure_s ({fields['measure_s']:g})")
        fields["measure_min_s"] = shortest
    return fields


class _Checker:
    """Field validators that raise ``ScenarioError`` with ``file: field: problem``."""

    def __init__(self, where: str, prefix: str = "") -> None:
        self.where, self.prefix = where, prefix

    def fail(self, field: str, problem: str) -> None:
        raise ScenarioError(f"{self.where}: {self.prefix}{field}: {problem}")

    def known_keys(self, data: dict, allowed: set[str], prefix: str) -> None:
        for key in data:
            if key not in allowed:
                names = ", ".join(sorted(allowed))
                raise ScenarioError(f"{self.where}: {prefix}{key}: unknown key (allowed: {names})")

    def get(self, data: dict, field: str):
        if field not in data:
            self.fail(field, "missing")
        return data[field]

    def text(self, data: dict, field: str) -> str:
        value = self.get(data, field)
        if not isinstance(value, str) or not value.strip():
            self.fail(field, "must be a non-empty string")
        return value.strip()

    def choice(self, data: dict, field: str, allowed: tuple[str, ...]) -> str:
        value = self.get(data, field)
        if value not in allowed:
            self.fail(field, f"must be one of {', '.join(allowed)}, got {value!r}")
        return value

    def integer(self, data: dict, field: str, low: int, high: int) -> int:
        value = self.get(data, field)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(field, f"must be an integer from {low} to {high}, got {value!r}")
        return value

    def number(self, data: dict, field: str, minimum: float, maximum: float = math.inf) -> float:
        value = self.get(data, field)
        ok = not isinstance(value, bool) and isinstance(value, int | float)
        if isinstance(value, float) and not math.isfinite(value):  # TOML has nan and inf
            ok = False
        if not ok or not minimum <= value <= maximum:
            bound = f" and ≤ {maximum:g}" if maximum < math.inf else ""
            self.fail(field, f"must be a finite number ≥ {minimum}{bound}, got {value!r}")
        return float(value)

    def user_levels(self, data: dict, field: str, shown: str = "users") -> tuple[int, ...]:
        if field not in data:
            self.fail(shown, "missing")
        value = data[field]
        ok = (
            isinstance(value, list)
            and value
            and all(
                isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_USERS
                for v in value
            )
        )
        if not ok:
            self.fail(shown, f"must be a non-empty list of integers from 1 to {MAX_USERS}")
        return tuple(sorted(set(value)))

    def servers(self, data: dict) -> tuple[str, ...]:
        """The models a run of it includes unless told otherwise; when the file names none,
        every registered model that is part of a default run."""
        if "servers" not in data:
            return tuple(name for name, spec in MODELS.items() if spec.default_run)
        value = data["servers"]
        if not isinstance(value, list) or not value:
            self.fail("servers", "must be a non-empty list of server model names")
        for name in value:
            if not isinstance(name, str) or name not in MODELS:
                self.fail("servers", f"unknown server {name!r} (known: {', '.join(MODELS)})")
        return tuple(dict.fromkeys(value))


    def aa_pair(self, data: dict) -> AAPair:
        table = data["aa"]
        if not isinstance(table, dict):
            self.fail("aa", 'must be a table like {server = "MODEL", users = 64}')
        self.known_keys(table, {"server", "users"}, "aa.")
        check = _Checker(self.where, "aa.")
        server = check.choice(table, "server", tuple(MODELS))
        return AAPair(server, check.integer(table, "users", 1, MAX_USERS))

    def thresholds(self, data: dict) -> dict:
        table = data["thresholds"]
        if not isinstance(table, dict):
            self.fail("thresholds", "must be a table, e.g. [thresholds] max_p99_ms = 250")
        try:
            Thresholds.from_mapping(table, where=f"{self.where}: thresholds")
        except ComparisonInputError as exc:
            raise ScenarioError(str(exc)) from None
        return {name: float(value) for name, value in table.items()}


def available_scenarios(directory: Path = SCENARIO_DIR) -> dict[str, Path]:
    return {p.stem: p for p in sorted(directory.glob("*.toml"))}


def resolve_scenarios(choices: list[str] | None, directory: Path = SCENARIO_DIR) -> list[Scenario]:
    """Scenarios by name (from ``scenarios/``) or by path; all of them when ``choices`` is empty."""
    known = available_scenarios(directory)
    if not choices:
        return [load_scenario(p) for p in known.values()]
    scenarios = []
    for choice in choices:
        if choice in known:
            scenarios.append(load_scenario(known[choice]))
        elif choice.endswith(".toml") or _exists(Path(choice)):
            scenarios.append(load_scenario(Path(choice)))
        else:
            raise ScenarioError(
                f"unknown scenario {choice!r}: give a name ({', '.join(known)}) or a .toml path"
            )
    return scenarios


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # e.g. a name too long: it is no file, whatever it was meant to be
        return False
