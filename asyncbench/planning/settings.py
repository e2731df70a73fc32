"""Run settings: what the user asked for, and which cells that means.

``RunSettings`` holds the ``asyncbench run`` flags as stored in ``run.json``; ``plan_run`` turns
them into a ``RunPlan`` of cells, and ``replan`` plans a stored run's last invocation again for a
resume. Opening the run directory they land in is measuring's (``measuring.session``).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, replace

from asyncbench.planning.plan import DEFAULT, FULL, QUICK, AAPair, Cell, Scenario, plan_cells
from asyncbench.planning.scenario_files import resolve_scenarios
from asyncbench.storing.records import RunMeta
from asyncbench.storing.store import RunDir
from servers.config import MysqlUrl, ServerConfig, redact_url
from servers.registry import SIZED

DEFAULT_REPEATS = 2
SEED_RANGE = 2**31


class SessionError(ValueError):
    """A run cannot be opened as asked (e.g. a resume that needs a password again)."""


@dataclass(frozen=True)
class RunSettings:
    """What the user asked for (``asyncbench run`` flags); stored in ``run.json``."""

    scenarios: tuple[str, ...] = ()
    servers: tuple[str, ...] = ()
    users: tuple[int, ...] | None = None
    duration_s: float | None = None
    warmup_s: float | None = None
    repeat: int = DEFAULT_REPEATS
    workers: int = ServerConfig.workers
    threads: int = ServerConfig.threads
    worker_connections: int = ServerConfig.worker_connections
    defaults: str = SIZED  # pool sizes: the harness's fair ones, or LIBRARY defaults
    spawn_rate: float | None = None  # overrides every scenario's spawn pattern
    reports_dir: str = "reports"
    mysql_url: str | None = None
    quick: bool = False
    full: bool = False  # the full sweep: every level of every scenario file, twice
    # The default profile's repeats: one a level, and a second only where the first does not
    # settle the answer (``plan.needs_balance_repeat``, ``repeats.second_repeats``).
    second_repeats: bool = False
    seed: int | None = None
    new: bool = False
    rates: tuple[float, ...] | None = None  # open loop instead of users
    arrival: str = "constant"  # or "poisson"
    locust_workers: int = 0  # local Locust worker processes (0: one standalone process)
    expect_workers: int = 0  # remote workers (``asyncbench loadgen-worker``) to wait for
    master_bind: str = "127.0.0.1"
    master_port: int = 5557
    target: str | None = None  # measure a server started elsewhere with ``asyncbench serve``
    upstream_url: str | None = None  # an upstream started elsewhere
    redis_url: str | None = None  # the room's message bus, when not a throwaway redis-server
    resume: str | None = None  # a run directory whose missing cells to run
    profile: bool = False  # a py-spy flame graph of the server in every cell's window

    def stored(self) -> dict:
        data = asdict(self)
        data["mysql_url"] = MysqlUrl.parse(self.mysql_url).redacted() if self.mysql_url else None
        data["redis_url"] = redact_url(self.redis_url)
        return data

    def service_urls(self) -> dict[str, str | None]:
        """The user-given URL of each backing service (``services.SERVICES``), if any."""
        return {"database": self.mysql_url, "upstream": self.upstream_url, "bus": self.redis_url}

    def server_config(self) -> ServerConfig:
        """The configuration every model starts from (each adapts it: ``ModelSpec.configure``)."""
        return ServerConfig(workers=self.workers, threads=self.threads,
                            worker_connections=self.worker_connections)

    @property
    def plan_profile(self) -> str:
        """``quick``, ``full`` or ``default``: which of each scenario file's tables runs."""
        return QUICK if self.quick else FULL if self.full else DEFAULT

    @property
    def load_processes(self) -> int:
        """Locust processes that generate load (a master only coordinates)."""
        return max(1, self.locust_workers + self.expect_workers)


@dataclass(frozen=True)
class RunPlan:
    """The cells one invocation runs, with the scenarios (profile and overrides applied)."""

    settings: RunSettings
    scenarios: dict[str, Scenario]
    cells: list[Cell]  # the cells to run now
    seed: int
    everything: list[Cell] | None = None  # the whole plan, when ``cells`` leaves some out

    @property
    def planned(self) -> list[Cell]:
        """Every cell of the plan, those a resume finds done included."""
        return self.cells if self.everything is None else self.everything


def effective_scenarios(settings: RunSettings) -> dict[str, Scenario]:
    """The chosen scenarios with the profile and the command-line overrides applied."""
    chosen = {}
    for scenario in resolve_scenarios(list(settings.scenarios) or None):
        scenario = scenario.profile(settings.plan_profile)
        overrides = {
            "users": settings.users,
            "measure_s": settings.duration_s,
            "warmup_s": settings.warmup_s,
            "spawn_rate": settings.spawn_rate,
        }
        if settings.duration_s is not None:  # a window asked for is the window, not a cap
            overrides["measure_min_s"] = settings.duration_s
        chosen[scenario.name] = replace(
            scenario, **{k: v for k, v in overrides.items() if v is not None}
        )
    return chosen


def plan_run(settings: RunSettings) -> RunPlan:
    """The cells ``settings`` ask for, with a seed (given, or drawn)."""
    scenarios = effective_scenarios(settings)
    seed = settings.seed if settings.seed is not None else random.SystemRandom().randrange(
        SEED_RANGE
    )
    cells = plan_cells(
        list(scenarios.values()), list(settings.servers), settings.repeat, seed, settings.rates,
        balance_repeats=settings.second_repeats, config=settings.server_config(),
    )  # fmt: skip
    return RunPlan(settings, scenarios, cells, seed)


def replan(run: RunDir, meta: RunMeta, requested: RunSettings, done: set[str]) -> RunPlan:
    """A stored run's last invocation planned again, without the cells ``done``."""
    last = meta.invocations[-1]
    settings = settings_from_stored(last.settings, mysql_url=requested.mysql_url)
    settings = replace(settings, reports_dir=str(run.path.parent), resume=requested.resume)
    stored = last.scenarios or meta.scenarios
    scenarios = {name: scenario_from_stored(data) for name, data in stored.items()}
    cells = plan_cells(
        [scenarios[name] for name in _scenario_names(last.cells, scenarios)],
        list(settings.servers), settings.repeat, last.seed, settings.rates,
        balance_repeats=settings.second_repeats, config=settings.server_config(),
    )  # fmt: skip
    todo = [c for c in cells if c.cell_id not in done]
    return RunPlan(settings, scenarios, todo, last.seed, everything=cells)


def settings_from_stored(stored: dict, mysql_url: str | None = None) -> RunSettings:
    """Rebuild ``RunSettings`` from ``run.json``; a redacted password must be given again."""
    data = {k: v for k, v in stored.items() if k in RunSettings.__dataclass_fields__}
    for key in ("scenarios", "servers", "users", "rates"):
        if data.get(key) is not None:
            data[key] = tuple(data[key])
    if mysql_url:
        data["mysql_url"] = mysql_url
    elif data.get("mysql_url") and "***" in data["mysql_url"]:
        raise SessionError("this run used --mysql-url with a password: pass --mysql-url again")
    if data.get("redis_url") and "***" in data["redis_url"]:
        raise SessionError("this run used --redis-url with a password: start a new run")
    return RunSettings(**data)


def scenario_from_stored(data: dict) -> Scenario:
    data = dict(data)
    for key in ("users", "servers"):
        data[key] = tuple(data[key])
    if data.get("aa"):
        data["aa"] = AAPair(**data["aa"])
    return Scenario(**data)


def _scenario_names(cell_ids: list[str], scenarios: dict[str, Scenario]) -> list[str]:
    return [name for name in scenarios if any(c.startswith(f"{name}.") for c in cell_ids)]
