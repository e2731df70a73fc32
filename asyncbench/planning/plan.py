"""Planning: ``Scenario`` records (read from their files by ``scenario_files``) expanded into
``Cell``s.

A cell is one measurement: one scenario on one server model at one load level, one repeat.
Cells run in a shuffled order whose seed is recorded, so drift on the machine (thermal, other
load) spreads over all models instead of biasing whichever runs last.

A scenario may declare an A/A pair (``aa = {server = "...", users = N}``): that level is
measured a second time, as cells of ``replica`` "aa" shuffled among the others. What the two
halves differ by is the run's noise floor (``noise.py``). It may also declare ``[thresholds]``
(``thresholds.Thresholds``) that ``asyncbench run --check`` and ``asyncbench compare`` apply.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

from asyncbench.planning.kinds import KINDS, ScenarioKind, kind_of_endpoint
from asyncbench.planning.thresholds import Thresholds
from servers import MODELS
from servers.config import ServerConfig

MAX_USERS = 5000
MAX_SPAWN_RATE = 100_000.0
MAX_SECONDS = 86_400.0  # a warm-up or measured window longer than a day is a typo
# The profiles a run can take: the default answers the question, ``full`` sweeps every level of
# the file's top level, ``quick`` is a smoke run. A scenario file's ``[default]`` and ``[quick]``
# tables override its top-level levels and windows for those profiles.
DEFAULT, FULL, QUICK = "default", "full", "quick"
PROFILES = (DEFAULT, FULL, QUICK)
AA = "aa"  # the ``replica`` of an A/A pair's second half
AA_HALF_REPEATS = 2  # the default profile measures each half of an A/A pair this many times
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
