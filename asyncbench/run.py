"""The orchestrator: plan the matrix, bring services up once, and measure each cell in turn.

For each cell: a fresh server process, an equivalence check, a Locust run with resource sampling,
statistics from the raw samples, and the cell persisted before the next one starts. Progress and
other side concerns hang off ``RunHooks``; the loop itself only measures and stores.
"""

from __future__ import annotations

import contextlib
import math
import random
import sys
import tempfile
import time
import zlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pymysql

from asyncbench import analyze, metadata, services
from asyncbench.measure import (
    CellFailed,
    LoadPlan,
    LocustProgress,
    ResourceSampler,
    run_locust,
    verify_equivalence,
)
from asyncbench.plan import Cell, Scenario, plan_cells, resolve_scenarios
from asyncbench.processes import ManagedProcess, ProcessLedger, free_port, reap_orphans
from asyncbench.store import CellResult, RunDir, RunMeta, StoreError, latest_run
from servers import MODELS
from servers.config import MysqlUrl, ServerConfig

CELL_OVERHEAD_S = 4.0  # server start, verification, Locust start-up and shutdown, measured ~3.5 s
LOCUST_RPS_CEILING = 2000  # about what one Locust process drives on this class of machine
MAX_RATE_USERS = 1000  # open loop: the most concurrent senders a cell gets


@dataclass(frozen=True)
class RunSettings:
    """What the user asked for (``asyncbench run`` flags); stored in ``run.json``."""

    scenarios: tuple[str, ...] = ()
    servers: tuple[str, ...] = ()
    users: tuple[int, ...] | None = None
    duration_s: float | None = None
    warmup_s: float | None = None
    repeat: int = 2
    workers: int = 4
    reports_dir: str = "reports"
    mysql_url: str | None = None
    quick: bool = False
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
    resume: str | None = None  # a run directory whose missing cells to run

    def stored(self) -> dict:
        data = asdict(self)
        data["mysql_url"] = MysqlUrl.parse(self.mysql_url).redacted() if self.mysql_url else None
        return data


class RunHooks:
    """Callbacks for side concerns (the progress display); every method is optional."""

    def run_started(self, run: RunDir, cells: list[Cell], estimate_s: float) -> None: ...
    def warn(self, message: str) -> None: ...
    def cell_started(self, cell: Cell, index: int, expected_s: float) -> None: ...
    def cell_progress(self, cell: Cell, progress: LocustProgress) -> None: ...
    def cell_finished(self, cell: Cell, result: CellResult) -> None: ...


@dataclass
class _Context:
    """What every cell of one run shares."""

    run: RunDir
    settings: RunSettings
    hooks: RunHooks
    database: services.Database | None = None
    upstream: services.Upstream | None = None
    db_max_connections: int | None = None
    server_config: ServerConfig = field(default_factory=ServerConfig)
    seed: int = 0  # the invocation's recorded seed; per-cell seeds derive from it


def effective_scenarios(settings: RunSettings) -> dict[str, Scenario]:
    """The chosen scenarios with the profile (--quick) and the command-line overrides applied."""
    chosen = {}
    for scenario in resolve_scenarios(list(settings.scenarios) or None):
        scenario = scenario.profile(settings.quick)
        overrides = {
            "users": settings.users,
            "measure_s": settings.duration_s,
            "warmup_s": settings.warmup_s,
        }
        chosen[scenario.name] = replace(
            scenario, **{k: v for k, v in overrides.items() if v is not None}
        )
    return chosen


@dataclass(frozen=True)
class _Plan:
    settings: RunSettings
    scenarios: dict[str, Scenario]
    cells: list[Cell]
    seed: int


def run_matrix(settings: RunSettings, hooks: RunHooks | None = None, argv=None) -> RunDir:
    """Run the cells ``settings`` selects (a new run, a rerun into the latest, or a resume)."""
    hooks = hooks or RunHooks()
    _reap_dead_runs(Path(settings.reports_dir), hooks)
    if settings.resume:
        plan, run, meta = _resume(settings, argv)
    else:
        plan = _plan(settings)
        run, meta = _open_run(plan, argv)
    _warn_about_ceiling(plan.scenarios, plan.settings, hooks)
    estimate = sum(_expected_s(plan.scenarios[c.scenario]) for c in plan.cells)
    hooks.run_started(run, plan.cells, estimate)
    try:
        with ProcessLedger(run.path / "processes.json"):
            _run_cells(plan, run, meta, hooks)
        meta.status = "complete"
    except KeyboardInterrupt:
        meta.status = "interrupted"
        raise
    except BaseException:
        meta.status = "failed"
        raise
    finally:
        meta.invocations[-1]["finished"] = time.time()
        meta.invocations[-1]["status"] = meta.status
        run.write_meta(meta)
        _build_report(run, hooks)
    return run


def _build_report(run: RunDir, hooks: RunHooks) -> None:
    """Rebuild the report after every invocation, interrupted ones included."""
    from asyncbench.report import build_report

    try:
        build_report(run)
    except Exception as exc:  # the results are safe on disk; a report bug must not hide them
        hooks.warn(f"could not build the report ({type(exc).__name__}: {exc}); "
                   f"retry with `asyncbench report {run.path}`")  # fmt: skip


def _run_cells(plan: _Plan, run: RunDir, meta: RunMeta, hooks: RunHooks) -> None:
    settings = plan.settings
    with _backing_services(plan.scenarios, settings, run) as ctx_args:
        ctx = _Context(run, settings, hooks, seed=plan.seed, **ctx_args)
        ctx.server_config = replace(ctx.server_config, workers=settings.workers)
        locust = metadata.describe_locust(
            settings.locust_workers, settings.expect_workers, settings.master_bind,
            f"open loop, {settings.arrival} arrivals" if settings.rates else "closed loop",
        )  # fmt: skip
        # Merged, not replaced: a partial rerun must not drop what earlier cells used.
        meta.services.update(metadata.describe_services(ctx.database, ctx.upstream, locust))
        meta.servers.update(metadata.describe_servers(ctx.server_config, settings.target))
        run.write_meta(meta)
        for order, cell in enumerate(plan.cells):
            scenario = plan.scenarios[cell.scenario]
            hooks.cell_started(cell, order, _expected_s(scenario))
            result = measure_cell(ctx, scenario, cell, order)
            hooks.cell_finished(cell, result)


def _plan(settings: RunSettings) -> _Plan:
    scenarios = effective_scenarios(settings)
    seed = settings.seed if settings.seed is not None else random.SystemRandom().randrange(2**31)
    cells = plan_cells(
        list(scenarios.values()), list(settings.servers), settings.repeat, seed, settings.rates
    )
    return _Plan(settings, scenarios, cells, seed)


def _resume(requested: RunSettings, argv) -> tuple[_Plan, RunDir, RunMeta]:
    """Re-plan the last invocation of a stored run and keep only the cells it has no result for."""
    run = RunDir.open(Path(requested.resume))
    meta = run.read_meta()
    last = meta.invocations[-1]
    settings = settings_from_stored(last["settings"], mysql_url=requested.mysql_url)
    settings = replace(settings, reports_dir=str(run.path.parent), resume=requested.resume)
    stored = last.get("scenarios") or meta.scenarios
    scenarios = {name: scenario_from_stored(data) for name, data in stored.items()}
    done = set(run.results()["cell_id"])
    cells = plan_cells(
        [scenarios[name] for name in _scenario_names(last["cells"], scenarios)],
        list(settings.servers), settings.repeat, last["seed"], settings.rates,
    )  # fmt: skip
    plan = _Plan(settings, scenarios, [c for c in cells if c.cell_id not in done], last["seed"])
    meta.status = "running"
    meta.invocations.append(_invocation(plan, argv, resumed=True))
    run.write_meta(meta)
    return plan, run, meta


def settings_from_stored(stored: dict, mysql_url: str | None = None) -> RunSettings:
    """Rebuild ``RunSettings`` from ``run.json``; a redacted password must be given again."""
    data = {k: v for k, v in stored.items() if k in RunSettings.__dataclass_fields__}
    for key in ("scenarios", "servers", "users", "rates"):
        if data.get(key) is not None:
            data[key] = tuple(data[key])
    if mysql_url:
        data["mysql_url"] = mysql_url
    elif data.get("mysql_url") and "***" in data["mysql_url"]:
        raise ValueError("this run used --mysql-url with a password: pass --mysql-url again")
    return RunSettings(**data)


def scenario_from_stored(data: dict) -> Scenario:
    data = dict(data)
    for key in ("users", "servers"):
        data[key] = tuple(data[key])
    return Scenario(**data)


def _scenario_names(cell_ids: list[str], scenarios: dict[str, Scenario]) -> list[str]:
    return [name for name in scenarios if any(c.startswith(f"{name}.") for c in cell_ids)]


def _invocation(plan: _Plan, argv, resumed: bool = False) -> dict:
    return {"started": time.time(), "seed": plan.seed, "settings": plan.settings.stored(),
            "cells": [c.cell_id for c in plan.cells], "command": list(argv or sys.argv),
            "resumed": resumed,
            "scenarios": {name: asdict(s) for name, s in plan.scenarios.items()}}  # fmt: skip


def _reap_dead_runs(reports_dir: Path, hooks: RunHooks) -> None:
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
            hooks.warn(f"reaped {len(reaped)} processes left by the dead run "
                       f"{ledger.parent.name}: {', '.join(reaped)}")  # fmt: skip


def _open_run(plan: _Plan, argv) -> tuple[RunDir, RunMeta]:
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


@contextlib.contextmanager
def _backing_services(scenarios: dict[str, Scenario], settings: RunSettings, run: RunDir):
    """MariaDB and the upstream, started once per run and only if a scenario needs them."""
    kinds = {s.kind for s in scenarios.values()}
    with contextlib.ExitStack() as stack:
        found: dict = {}
        if "sql" in kinds:
            db = stack.enter_context(services.database(settings.mysql_url, log_dir=run.logs_dir))
            found["database"] = db
            found["db_max_connections"] = int(db.variable("max_connections") or 0) or None
        if "fetch" in kinds:
            found["upstream"] = stack.enter_context(
                services.upstream(url=settings.upstream_url, log_dir=run.logs_dir)
            )
        yield found


def measure_cell(ctx: _Context, scenario: Scenario, cell: Cell, order: int) -> CellResult:
    """Measure one cell and persist it; a cell that cannot be measured is stored as failed."""
    config = replace(
        ctx.server_config,
        port=free_port(),
        upstream=ctx.upstream.url if ctx.upstream else None,
        mysql_url=ctx.database.url if ctx.database else None,
    )
    base = _base_result(ctx, scenario, cell, config, order)
    try:
        result = _measure(ctx, scenario, cell, config, base)
        samples, resources = result.pop("_samples"), result.pop("_resources")
        final = replace(base, **result, finished_at=time.time())
    except (CellFailed, services.ServiceError) as exc:
        samples = resources = None
        final = replace(base, status="failed", valid=False, reason=str(exc),
                        finished_at=time.time())  # fmt: skip
    ctx.run.save_cell(final, samples, resources)
    return final


def _server(ctx: _Context, cell: Cell, config: ServerConfig):
    if ctx.settings.target:
        return services.remote_server(cell.server, ctx.settings.target, config)
    log = ctx.run.logs_dir / f"{cell.cell_id}.server.log"
    return services.server(cell.server, config, log_path=log)


def _load_plan(ctx: _Context, scenario: Scenario, cell: Cell, url: str, base: CellResult):
    s = ctx.settings
    distributed = s.locust_workers + s.expect_workers > 0
    return LoadPlan(
        url, scenario.path, base.users, scenario.warmup_s, scenario.measure_s,
        _stop_timeout_s(scenario, base), rate=cell.rate, arrival=s.arrival,
        seed=zlib.crc32(f"{ctx.seed}:{cell.cell_id}".encode()), local_workers=s.locust_workers,
        remote_workers=s.expect_workers, master_bind=s.master_bind,
        master_port=(s.master_port if s.expect_workers else free_port()) if distributed else 0,
    )  # fmt: skip


def _measure(ctx, scenario, cell, config, base: CellResult) -> dict:
    with _server(ctx, cell, config) as server:
        verify_equivalence(
            server.url,
            scenario.path,
            scenario.endpoint,
            scenario.delay_ms,
            _work_counter(ctx, scenario),
        )
        locust: list[ManagedProcess] = []
        sampler = ResourceSampler(_components(ctx, server, locust), _db_threads_probe(ctx))
        plan = _load_plan(ctx, scenario, cell, server.url, base)
        watch = _ServerWatch(ctx, cell, server, stall_s=max(10.0, plan.stop_timeout_s))
        with sampler, tempfile.TemporaryDirectory(prefix="asyncbench-locust-") as tmp:
            outcome = run_locust(plan, Path(tmp), log_dir=ctx.run.logs_dir, log_name=cell.cell_id,
                                 on_start=locust.append, watch=watch)  # fmt: skip
    if outcome.stuck >= plan.users:
        raise CellFailed(f"{cell.server} stopped answering: all {plan.users} users were still "
                         "waiting for an answer when the cell ended")  # fmt: skip
    resources = sampler.frame()
    stats = analyze.cell_stats(
        outcome.samples, outcome.window_start, outcome.window_end, rate=cell.rate
    )
    stats["abandoned"] = outcome.abandoned
    usage = analyze.resource_means(resources, outcome.window_start, outcome.window_end)
    valid, reason = analyze.judge(stats, usage)
    return {
        **stats, **usage,
        "status": "ok" if valid else "invalid", "valid": valid, "reason": reason,
        "window_start": outcome.window_start, "window_end": outcome.window_end,
        "locust_requests": outcome.locust_requests, "recorded_samples": len(outcome.samples),
        "locust_processes": len(outcome.workers) + (1 if plan.distributed else 0),
        "_samples": outcome.samples, "_resources": resources,
    }  # fmt: skip


class _ServerWatch:
    """Polled during a cell: ends it when the server dies, loses a worker, or stops answering."""

    def __init__(self, ctx: _Context, cell: Cell, server: services.Server, stall_s: float):
        self.ctx, self.cell, self.server, self.stall_s = ctx, cell, server, stall_s
        self.workers = {p.pid for p in server.process.tree()} if server.process else set()
        self.requests, self.changed = -1, time.monotonic()

    def __call__(self, progress: LocustProgress | None) -> str | None:
        process = self.server.process
        if process and not process.alive():
            return f"{self.cell.server} exited during the cell (code {process.popen.returncode})"
        if process:
            lost = self.workers - {p.pid for p in process.tree()}
            if lost:
                return f"{self.cell.server} lost worker process(es) {sorted(lost)} during the cell"
        if progress is None:
            return None
        self.ctx.hooks.cell_progress(self.cell, progress)
        if progress.requests != self.requests:
            self.requests, self.changed = progress.requests, time.monotonic()
        elif time.monotonic() - self.changed > self.stall_s:
            silent = f"no request completed for {self.stall_s:.0f} s"
            return f"{self.cell.server} stopped answering: {silent}"
        return None


def _base_result(ctx: _Context, scenario: Scenario, cell: Cell, config: ServerConfig, order: int):
    slots = analyze.capacity_slots(
        MODELS[cell.server].blocking, scenario.kind, config.workers,
        config.max_clients, config.pool_size, ctx.db_max_connections,
    )  # fmt: skip
    users = _rate_users(cell.rate, scenario) if cell.rate else cell.users
    return CellResult(
        cell_id=cell.cell_id, scenario=cell.scenario, server=cell.server, users=users,
        rate=cell.rate, target=ctx.settings.target,
        repeat=cell.repeat, status="running", valid=False, reason="", endpoint=scenario.endpoint,
        delay_ms=scenario.delay_ms, workers=config.workers,
        slots=None if slots is None or math.isinf(slots) else slots,
        predicted_rps=analyze.predicted_rps(users, slots, scenario.delay_ms, cell.rate),
        warmup_s=scenario.warmup_s, measure_s=scenario.measure_s, order=order,
        started_at=time.time(),
    )  # fmt: skip


def _rate_users(rate: float, scenario: Scenario) -> int:
    """Senders for an open-loop cell: four times the requests in flight at the nominal delay.

    A server within capacity never makes a send late. Beyond capacity any finite pool runs
    dry: sends go out late (counted), the sender-side latency stays bounded by the pool, and the
    corrected latency, measured from the intended time, shows the queue that really builds.
    """
    in_flight = rate * max(scenario.delay_ms, 50) / 1000
    return min(MAX_RATE_USERS, math.ceil(4 * in_flight) + 10)


def _stop_timeout_s(scenario: Scenario, base: CellResult) -> float:
    """Long enough for requests still queued at the end of the window to finish."""
    slots = base.slots or base.users
    queue_s = math.ceil(base.users / slots) * scenario.delay_ms / 1000
    return min(75.0, max(5.0, 3 * queue_s))


def _work_counter(ctx: _Context, scenario: Scenario):
    if scenario.kind == "fetch" and ctx.upstream:
        return ctx.upstream.hits
    if scenario.kind == "sql" and ctx.database:
        return lambda: ctx.database.status("Com_select")
    return None


def _components(ctx: _Context, server: services.Server, locust: list[ManagedProcess]):
    """Process groups to sample: each Locust process on its own, the others as whole trees."""
    components = {"locust": lambda: [proc.tree() for proc in locust]}
    owned = {"server": server.process, "mariadb": ctx.database and ctx.database.process,
             "upstream": ctx.upstream and ctx.upstream.process}  # fmt: skip
    for name, process in owned.items():
        if process:
            components[name] = lambda process=process: [process.tree()]
    return components


def _db_threads_probe(ctx: _Context):
    """MariaDB ``Threads_connected`` over one kept connection (not counting that connection)."""
    if not ctx.database:
        return None
    holder: list = []

    def probe() -> int | None:
        try:
            if not holder:
                holder.append(ctx.database.connect())
            with holder[0].cursor() as cur:
                cur.execute("SHOW GLOBAL STATUS LIKE 'Threads_connected'")
                return int(cur.fetchone()[1]) - 1
        except pymysql.MySQLError:
            holder.clear()
            return None

    return probe


def _expected_s(scenario: Scenario) -> float:
    """How long a cell takes, for the ETA."""
    return CELL_OVERHEAD_S + scenario.warmup_s + scenario.measure_s


def _warn_about_ceiling(scenarios: dict[str, Scenario], settings: RunSettings, hooks: RunHooks):
    """Say before the run when the coroutine model should outrun the load generator."""
    ceiling = LOCUST_RPS_CEILING * max(1, settings.locust_workers + settings.expect_workers)
    for s in scenarios.values():
        if not s.delay_ms or "tornado-coroutine" not in s.servers:
            continue
        expected = max(settings.rates) if settings.rates else max(s.users) / (s.delay_ms / 1000)
        if expected > ceiling * 0.9:
            hooks.warn(
                f"{s.name}: tornado-coroutine should reach {expected:.0f} req/s, near the "
                f"~{ceiling} req/s the Locust processes can drive here: those cells will likely "
                "be marked invalid (add --locust-workers)"
            )


