"""The run-directory session: what the user asked for, which cells that means, and where they go.

``open_session`` turns ``RunSettings`` into a plan of cells and the run directory they land in:
a new run, a partial rerun into the latest run (its cells replace the same cells there), or the
resume of an interrupted run (only the cells it has no result for). It also reaps what a
SIGKILLed orchestrator left behind before anything new starts.
"""

from __future__ import annotations

import contextlib
import random
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from asyncbench.measuring import metadata
from asyncbench.measuring.processes import reap_orphans
from asyncbench.planning.plan import (
    DEFAULT,
    FULL,
    QUICK,
    AAPair,
    Cell,
    Scenario,
    plan_cells,
    resolve_scenarios,
)
from asyncbench.storing.store import Invocation, RunDir, RunMeta, StoreError, latest_run
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
        return ServerConfig(workers=self.workers, threads=self.threads)

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


def open_session(settings: RunSettings, argv, warn) -> tuple[RunPlan, RunDir, RunMeta]:
    """Plan the invocation and open (or create) its run directory, recording the invocation."""
    reap_dead_runs(Path(settings.reports_dir), warn)
    if settings.resume:
        return _resume(settings, argv)
    plan = _plan(settings)
    run, meta = _open_run(plan, argv)
    return plan, run, meta


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


def _plan(settings: RunSettings) -> RunPlan:
    scenarios = effective_scenarios(settings)
    seed = settings.seed if settings.seed is not None else random.SystemRandom().randrange(
        SEED_RANGE
    )
    cells = plan_cells(
        list(scenarios.values()), list(settings.servers), settings.repeat, seed, settings.rates,
        balance_repeats=settings.second_repeats, config=settings.server_config(),
    )  # fmt: skip
    return RunPlan(settings, scenarios, cells, seed)


def _resume(requested: RunSettings, argv) -> tuple[RunPlan, RunDir, RunMeta]:
    """Re-plan the last invocation of a stored run and keep only the cells it has no result for."""
    run = RunDir.open(Path(requested.resume))
    meta = run.read_meta()
    if not meta.invocations:
        raise StoreError(f"{run.meta_json}: records no invocation to resume; start a new run")
    done = set(run.results()["cell_id"])  # first: a damaged results.csv is named as such
    try:
        plan = _replan(run, meta, requested, done)
    except (TypeError, KeyError, ValueError, AttributeError) as exc:
        raise StoreError(
            f"{run.meta_json} is damaged (its last invocation cannot be planned again: "
            f"{type(exc).__name__}: {exc}): restore it, or start a new run"
        ) from None
    meta.status = "running"
    meta.invocations.append(_invocation(plan, argv, resumed=True))
    run.write_meta(meta)
    return plan, run, meta


def _replan(run: RunDir, meta: RunMeta, requested: RunSettings, done: set[str]) -> RunPlan:
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


def _invocation(plan: RunPlan, argv, resumed: bool = False) -> Invocation:
    return Invocation(
        started=time.time(), seed=plan.seed, settings=plan.settings.stored(),
        cells=[c.cell_id for c in plan.cells], command=list(argv or sys.argv), resumed=resumed,
        scenarios={name: asdict(s) for name, s in plan.scenarios.items()},
        profile=plan.settings.plan_profile,
    )  # fmt: skip


def reap_dead_runs(reports_dir: Path, warn) -> None:
    """Kill what a SIGKILLed orchestrator left behind, and mark its run interrupted."""
    for ledger in sorted(reports_dir.glob("*/processes.json")):
        reaped = reap_orphans([ledger])
        if ledger.exists():
            continue  # its orchestrator is still running
        with contextlib.suppress(StoreError, OSError, ValueError):
            dead = RunDir.open(ledger.parent)
            meta = dead.read_meta()
            if meta.status == "running":
                meta.status = "interrupted"
                dead.write_meta(meta)
        if reaped:
            warn(f"reaped {len(reaped)} processes left by the dead run "
                 f"{ledger.parent.name}: {', '.join(reaped)}")  # fmt: skip


def _open_run(plan: RunPlan, argv) -> tuple[RunDir, RunMeta]:
    settings = plan.settings
    reports_dir = Path(settings.reports_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    partial = bool(settings.scenarios or settings.servers)
    previous = latest_run(reports_dir) if partial and not settings.new else None
    if previous:
        run, meta = previous, previous.read_meta()
        meta.planned_cells = sorted(set(meta.planned_cells) | {c.cell_id for c in plan.cells})
    else:
        run = RunDir.create(reports_dir)
        meta = RunMeta(run_id=run.run_id, created=time.time(), seed=plan.seed)
        meta.planned_cells = sorted(c.cell_id for c in plan.cells)
        meta.settings = settings.stored()
        meta.machine = metadata.machine_info()
        meta.packages = metadata.package_versions()
    meta.status = "running"
    meta.scenarios.update({name: asdict(s) for name, s in plan.scenarios.items()})
    meta.command = list(argv or sys.argv)
    meta.invocations.append(_invocation(plan, argv))
    run.write_meta(meta)
    run.point_latest(reports_dir)
    return run, meta
