"""Planning: scenario files are validated into ``Scenario`` records and expanded into ``Cell``s.

A cell is one measurement: one scenario on one server model at one load level, one repeat.
Cells run in a shuffled order whose seed is recorded, so drift on the machine (thermal, other
load) spreads over all models instead of biasing whichever runs last.

A scenario may declare an A/A pair (``aa = {server = "...", users = N}``): that level is
measured a second time, as cells of ``replica`` "aa" shuffled among the others. What the two
halves differ by is the run's noise floor (``noise.py``). It may also declare ``[thresholds]``
(``thresholds.Thresholds``) that ``asyncbench run --check`` and ``asyncbench compare`` apply.
"""

from __future__ import annotations

import math
import random
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from asyncbench.planning.kinds import ENDPOINTS, KINDS, ScenarioKind, kind_of_endpoint
from asyncbench.planning.thresholds import ComparisonInputError, Thresholds
from asyncbench.planning.transports import DEFAULT_TRANSPORT, TRANSPORTS
from servers import MODELS, room
from servers.config import ServerConfig
from servers.endpoints import MAX_MS

SCENARIO_DIR = Path(__file__).resolve().parents[2] / "scenarios"
MAX_USERS = 5000
MAX_SPAWN_RATE = 100_000.0
MAX_SECONDS = 86_400.0  # a warm-up or measured window longer than a day is a typo
MAX_MESSAGE_RATE = 100.0
# The profiles a run can take: the default answers the question, ``full`` sweeps every level of
# the file's top level, ``quick`` is a smoke run. A scenario file's ``[default]`` and ``[quick]``
# tables override its top-level levels and windows for those profiles.
DEFAULT, FULL, QUICK = "default", "full", "quick"
PROFILES = (DEFAULT, FULL, QUICK)
_PROFILE_KEYS = {"users", "warmup_s", "measure_s", "measure_min_s"}
_KEYS = {"description", "endpoint", "delay_ms", "servers", DEFAULT, QUICK, "spawn_rate", "aa",
         "thresholds"} | _PROFILE_KEYS  # fmt: skip
AA = "aa"  # the ``replica`` of an A/A pair's second half
AA_HALF_REPEATS = 2  # the default profile measures each half of an A/A pair this many times
_ROOM_KEYS = {"description", "kind", "members", "transport", "message_rate", "hold_s",
              "probe_rate", "servers", DEFAULT, QUICK, "spawn_rate", "warmup_s",
              "measure_s", "measure_min_s", "aa"}  # fmt: skip
_ROOM_PROFILE_KEYS = {"members", "warmup_s", "measure_s", "measure_min_s", "message_rate"}
ROOM_DEFAULTS = {"message_rate": 1.0, "hold_s": 30.0, "probe_rate": 2.0}


class ScenarioError(ValueError):
    """A scenario file or choice is invalid; the message names the file and the field."""


@dataclass(frozen=True)
class AAPair:
    """The level a scenario measures twice: its noise floor (the same model, the same load)."""

    server: str
    users: int


@dataclass(frozen=True)
class Scenario:
    """What to measure: an endpoint with a delay, at which load levels, for how long."""

    name: str
    description: str
    endpoint: str
    delay_ms: int
    users: tuple[int, ...]
    warmup_s: float
    measure_s: float  # the window; with ``measure_min_s``, the longest it may last
    servers: tuple[str, ...]
    source: str = ""
    # An adaptive window: it ends once precise (``loadtests.recording.WindowPrecision``), from
    # this long on, at ``measure_s`` at the latest. None: a fixed window of ``measure_s``.
    measure_min_s: float | None = None
    quick: dict | None = None  # overrides of users/warmup_s/measure_s for --quick
    default: dict | None = None  # overrides for the default profile (``--full`` takes none)
    # How Locust opens its users: None = all at once (every user starts in the same instant,
    # as wrk does), else gradually at this many users per second.
    spawn_rate: float | None = None
    kind_name: str = ""  # set for kinds not chosen by their endpoint (the room)
    # The room's fields (kind "room"): its members are ``users``.
    transport: str | None = None
    message_rate: float | None = None  # messages published per second
    hold_s: float | None = None  # the server answers a held poll 204 after this long
    probe_rate: float | None = None  # GET /hello per second while the room is held
    aa: AAPair | None = None
    thresholds: dict | None = None  # validated ``Thresholds`` fields, e.g. max_p99_ms

    @property
    def limits(self) -> Thresholds:
        return Thresholds(**(self.thresholds or {}))

    @property
    def spawn(self) -> str:
        return "all at once" if self.spawn_rate is None else f"{self.spawn_rate:g} users/s"

    @property
    def path(self) -> str:
        """The request path Locust hits, e.g. ``/sleep?ms=100``."""
        return self.kind.path(self.delay_ms)

    @property
    def kind(self) -> ScenarioKind:
        return KINDS[self.kind_name] if self.kind_name else kind_of_endpoint(self.endpoint)

    def profile(self, name: str) -> Scenario:
        """The scenario as profile ``name`` runs it: its table's overrides applied (``full``
        and a profile the file has no table for run the top level)."""
        overrides = {DEFAULT: self.default, QUICK: self.quick}.get(name)
        return replace(self, **overrides) if overrides else self


@dataclass(frozen=True)
class Cell:
    """One measurement of the matrix. ``cell_id`` names it in every result file.

    A closed-loop cell has ``users`` and no ``rate``; an open-loop cell offers ``rate`` requests
    per second (its ``users`` are only the pool of senders, sized by the runner).
    """

    scenario: str
    server: str
    users: int
    repeat: int
    rate: float = 0.0
    replica: str = ""  # AA: the second half of an A/A pair
    # Why a repeat beyond the first runs where the profile plans one by default ("" for the
    # first, and for every repeat a fixed ``--repeat`` asked for).
    why: str = field(default="", compare=False)

    @property
    def level(self) -> str:
        return f"q{self.rate:g}" if self.rate else f"u{self.users}"

    @property
    def cell_id(self) -> str:
        replica = f".{self.replica}" if self.replica else ""
        return f"{self.scenario}.{self.server}.{self.level}{replica}.r{self.repeat}"


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


BALANCE_REPEAT = ("multi-process: where kept-alive connections land on the workers changes "
                  "from run to run")  # fmt: skip
AA_REPEAT = "the A/A pair: each half twice, so that its noise floor rests on 2 + 2 cells"


def plan_cells(
    scenarios: list[Scenario],
    servers: list[str] | None,
    repeat: int,
    seed: int,
    rates: tuple[float, ...] | None = None,
    balance_repeats: bool = False,
    config: ServerConfig | None = None,
) -> list[Cell]:
    """Every (scenario, server, level, repeat) combination, in an order shuffled by ``seed``.

    Levels are the scenario's user counts, or the offered ``rates`` in open-loop mode. Models
    named in ``servers`` replace the scenario's own list (any registered model may be asked for).
    ``balance_repeats`` (the default profile: one repeat a level) adds a second repeat where
    the first cannot settle the answer alone: a request level of a model whose kept-alive
    connections stay with the worker process that accepted them, at more users than one
    worker holds under ``config`` (``needs_balance_repeat``).
    """
    for name in servers or ():
        if name not in MODELS:
            raise ScenarioError(f"unknown server {name!r} (known: {', '.join(MODELS)})")
    levels = [(0, rate) for rate in rates] if rates else None
    cells = [
        Cell(s.name, server, users, r, rate)
        for s in scenarios
        for server in (servers or s.servers)
        for users, rate in (levels or [(u, 0.0) for u in s.users])
        for r in range(1, repeat + 1)
    ]
    if balance_repeats and not rates:
        by_name = {s.name: s for s in scenarios}
        config = config or ServerConfig()
        cells += [replace(c, repeat=repeat + 1, why=BALANCE_REPEAT) for c in cells
                  if needs_balance_repeat(by_name[c.scenario], c, config)]  # fmt: skip
    halves = max(repeat, AA_HALF_REPEATS) if balance_repeats else repeat
    cells += [cell for s in scenarios for cell in _aa_cells(s, servers, halves, rates)]
    if balance_repeats:
        cells += _aa_first_half_repeats(cells, halves)
    random.Random(seed).shuffle(cells)
    return cells


def _aa_first_half_repeats(cells: list[Cell], halves: int) -> list[Cell]:
    """The first half of each A/A pair measured ``halves`` times too: a pair of 1 + 1 cells
    states its floor with one degree of freedom (t = 64 at 99 %: ±37 % throughput and ±192 % p99
    from a default run's sleep and hello pairs), 2 + 2 with three."""
    have = {c.cell_id for c in cells}
    pairs = {(c.scenario, c.server, c.users) for c in cells if c.replica == AA}
    return [Cell(scenario, server, users, r, why=AA_REPEAT)
            for scenario, server, users in sorted(pairs) for r in range(1, halves + 1)
            if Cell(scenario, server, users, r).cell_id not in have]  # fmt: skip


def needs_balance_repeat(scenario: Scenario, cell: Cell, config: ServerConfig) -> bool:
    """A request level on a model whose workers each keep the connections they accepted, with
    more users than one worker holds: how the users land on the workers is chance, and it moves
    the cell (two default runs measured sleep on tornado-forked at 4 users at 29.5 and 19.7
    req/s). Users that all fit in one worker each hold a slot wherever they land."""
    spec = MODELS[cell.server]
    if scenario.kind.section != "requests" or not (spec.multi_process and spec.keep_alive):
        return False
    config = spec.configure(config)
    per_worker = spec.concurrency.slots(config) / max(1, config.workers)
    return cell.users > per_worker


def _aa_cells(
    scenario: Scenario, servers: list[str] | None, repeat: int, rates: tuple[float, ...] | None
) -> list[Cell]:
    """The A/A pair's second half: only when its level is in the plan (its first half)."""
    pair = scenario.aa
    if pair is None or rates or pair.users not in scenario.users:
        return []
    if pair.server not in (servers or scenario.servers):
        return []
    return [Cell(scenario.name, pair.server, pair.users, r, replica=AA)
            for r in range(1, repeat + 1)]  # fmt: skip
