"""Measuring one cell: a fresh server, the equivalence check, a Locust run with resource sampling,
the one judgement, and the cell persisted before the next one starts."""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
import zlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pymysql

from asyncbench import analyze, services
from asyncbench.measure import (
    CellFailed,
    LoadPlan,
    Profiler,
    ResourceSampler,
    accept_queue,
    run_locust,
)
from asyncbench.plan import Cell, Scenario
from asyncbench.predict import predicted_rps
from asyncbench.processes import ManagedProcess, free_port
from asyncbench.session import RunSettings
from asyncbench.store import CellResult, RunDir
from loadtests.protocol import Progress
from servers import MODELS
from servers.config import ServerConfig
from servers.counters import read_counts, read_loop_lag_ms

STALL_MIN_S = 10.0  # a server that completes nothing for this long (at least) stopped answering
STOP_TIMEOUT_MIN_S, STOP_TIMEOUT_MAX_S = 5.0, 75.0  # in-flight requests' grace at the stop
STOP_TIMEOUT_QUEUE_FACTOR = 3  # times the expected queueing time of the last requests
MAX_RATE_USERS = 1000  # open loop: the most concurrent senders a cell gets
RATE_USERS_FACTOR = 4  # open loop: senders per request in flight at the nominal delay
RATE_USERS_MIN_DELAY_MS = 50  # open loop: size the senders for at least this delay
RATE_USERS_SPARE = 10


class PhaseClock:
    """Seconds each stage of the cells took, summed over an invocation (``run.json`` says where
    the time outside the measured windows went)."""

    STAGES = ("server_start", "verify", "locust_start", "spawn", "warmup", "window",
              "locust_stop", "server_stop", "save")  # fmt: skip

    def __init__(self) -> None:
        self.totals: dict[str, float] = dict.fromkeys(self.STAGES, 0.0)
        self._marks: dict[str, float] = {}

    def add(self, stage: str, seconds: float) -> None:
        self.totals[stage] += max(0.0, seconds)

    def mark(self, name: str) -> None:
        self._marks[name] = time.monotonic()

    def since(self, name: str, stage: str) -> None:
        """Add the time since ``mark(name)`` to ``stage``."""
        if name in self._marks:
            self.add(stage, time.monotonic() - self._marks.pop(name))

    def locust(self, outcome) -> None:
        """Split a Locust run into its start-up, spawn, warm-up, window and stop."""
        stages = {"locust_start": (outcome.launched, outcome.test_start),
                  "spawn": (outcome.test_start, outcome.spawn_complete),
                  "warmup": (outcome.spawn_complete, outcome.window_start),
                  "window": (outcome.window_start, outcome.window_end),
                  "locust_stop": (outcome.window_end, outcome.exited)}  # fmt: skip
        for stage, (begin, end) in stages.items():
            if begin and end:
                self.add(stage, end - begin)

    def rounded(self) -> dict[str, float]:
        return {stage: round(seconds, 2) for stage, seconds in self.totals.items()}


@dataclass
class CellContext:
    """What every cell of one run shares: the run directory, settings, hooks and services."""

    run: RunDir
    settings: RunSettings
    hooks: object  # run.RunHooks
    services: dict = field(default_factory=dict)  # name -> handle (services.backing_services)
    db_max_connections: int | None = None
    server_config: ServerConfig = field(default_factory=ServerConfig)
    seed: int = 0  # the invocation's recorded seed; per-cell seeds derive from it
    clock: PhaseClock = field(default_factory=PhaseClock)

    def configured(self, model: str, stats_dir: str | None = None) -> ServerConfig:
        """``model``'s configuration on a free port, pointed at every backing service."""
        config = MODELS[model].configure(self.server_config, self.settings.defaults)
        config = replace(config, port=free_port(), stats_dir=stats_dir)
        for handle in self.services.values():
            config = handle.configure(config)
        return config


def measure_cell(ctx: CellContext, scenario: Scenario, cell: Cell, order: int) -> CellResult:
    """Measure one cell and persist it; a cell that cannot be measured is stored as failed."""
    with tempfile.TemporaryDirectory(prefix="asyncbench-counts-") as counts:
        config = ctx.configured(cell.server, stats_dir=None if ctx.settings.target else counts)
        config = scenario.kind.workload.configure(config, scenario)
        base = _base_result(ctx, scenario, cell, config, order)
        try:
            final, samples, resources, extra = _measure(ctx, scenario, cell, config, base)
        except (CellFailed, services.ServiceError) as exc:
            samples = resources = None
            extra = {}
            final = replace(base, status="failed", valid=False, reason=str(exc))
    final = replace(final, finished_at=time.time())
    ctx.clock.mark("save")
    ctx.run.save_cell(final, samples, resources, **extra, derive=analyze.explain)
    ctx.clock.since("save", "save")
    return final


def _server(ctx: CellContext, cell: Cell, config: ServerConfig):
    if ctx.settings.target:
        return services.remote_server(cell.server, ctx.settings.target, config)
    log = ctx.run.logs_dir / f"{cell.cell_id}.server.log"
    return services.server(cell.server, config, log_path=log)


def _load_plan(ctx: CellContext, scenario: Scenario, cell: Cell, url: str, base: CellResult):
    s = ctx.settings
    distributed = s.locust_workers + s.expect_workers > 0
    workload = scenario.kind.workload
    return LoadPlan(
        url, scenario.path, base.users + workload.extra_users, scenario.warmup_s,
        scenario.measure_s, workload.stop_timeout_s(_stop_timeout_s(scenario, base)),
        drain_s=workload.drain_s(), rate=cell.rate, arrival=s.arrival,
        spawn_rate=scenario.spawn_rate,
        user_classes=workload.user_classes(scenario), extra_args=workload.extra_args(scenario),
        seed=zlib.crc32(f"{ctx.seed}:{cell.cell_id}".encode()), local_workers=s.locust_workers,
        remote_workers=s.expect_workers, master_bind=s.master_bind,
        master_port=(s.master_port if s.expect_workers else free_port()) if distributed else 0,
    )  # fmt: skip


def _measure(ctx: CellContext, scenario: Scenario, cell: Cell, config, base: CellResult):
    workload, clock = scenario.kind.workload, ctx.clock
    clock.mark("server_start")
    with _server(ctx, cell, config) as server:
        clock.since("server_start", "server_start")
        clock.mark("verify")
        proof = ctx.services.get(scenario.kind.proof) if scenario.kind.proof else None
        workload.verify(server.url, scenario, proof)
        clock.since("verify", "verify")
        locust: list[ManagedProcess] = []
        sampler = ResourceSampler(_components(ctx, server, locust), _db_threads_probe(ctx),
                                  gauges=_gauges(ctx, config))  # fmt: skip
        plan = _load_plan(ctx, scenario, cell, server.url, base)
        watch = _ServerWatch(ctx, cell, server, stall_s=max(STALL_MIN_S, plan.finish_s))
        with sampler, workload.beside(ctx.services, scenario) as beside, \
                _profiler(ctx, cell, server, plan), \
                tempfile.TemporaryDirectory(prefix="asyncbench-locust-") as tmp:  # fmt: skip
            outcome = run_locust(plan, Path(tmp), log_dir=ctx.run.logs_dir, log_name=cell.cell_id,
                                 on_start=locust.append, watch=watch)  # fmt: skip
            clock.locust(outcome)
            clock.mark("server_stop")
    clock.since("server_stop", "server_stop")
    if outcome.stuck >= plan.users:
        raise CellFailed(f"{cell.server} stopped answering: all {plan.users} users were still "
                         "waiting for an answer when the cell ended")  # fmt: skip
    resources = sampler.frame()
    columns = workload.columns(outcome, resources, cell, scenario, beside)
    final = replace(
        base, **columns, abandoned=outcome.abandoned,
        window_start=outcome.window_start, window_end=outcome.window_end,
        locust_requests=outcome.locust_requests, recorded_samples=len(outcome.samples),
        locust_processes=len(outcome.workers) + (1 if plan.distributed else 0),
    )  # fmt: skip
    final = replace(final, **workload.derived(asdict(final)))
    return final, outcome.samples, resources, workload.raw_facts(outcome, beside)


def _profiler(ctx: CellContext, cell: Cell, server, plan: LoadPlan):
    """A flame graph of the server during the window (``--profile``), else nothing."""
    if not ctx.settings.profile or server.process is None:
        return contextlib.nullcontext()
    out = ctx.run.path / "profiles" / f"{cell.cell_id}.svg"
    delay = plan.run_time_s - plan.measure_s  # Locust's start-up is about the spawn slack
    return Profiler(server.process.pid, out, delay, plan.measure_s)


class _ServerWatch:
    """Polled during a cell: ends it when the server dies, loses a worker, or stops answering."""

    def __init__(self, ctx: CellContext, cell: Cell, server: services.Server, stall_s: float):
        self.ctx, self.cell, self.server, self.stall_s = ctx, cell, server, stall_s
        self.workers = {p.pid for p in server.process.tree()} if server.process else set()
        self.requests, self.changed = -1, time.monotonic()

    def __call__(self, progress: Progress | None) -> str | None:
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
        if progress.activity != self.requests:
            self.requests, self.changed = progress.activity, time.monotonic()
        elif time.monotonic() - self.changed > self.stall_s:
            silent = f"no request completed and no message delivered for {self.stall_s:.0f} s"
            return f"{self.cell.server} stopped answering: {silent}"
        return None


def _base_result(
    ctx: CellContext, scenario: Scenario, cell: Cell, config: ServerConfig, order: int
) -> CellResult:
    model, workload = MODELS[cell.server], scenario.kind.workload
    slots = workload.slots(scenario, model, config, ctx.db_max_connections)
    users = _rate_users(cell.rate, scenario) if cell.rate else cell.users
    limit = model.slot_limit(config, scenario.kind.waits_on, ctx.db_max_connections)
    return CellResult(
        cell_id=cell.cell_id, scenario=cell.scenario, server=cell.server, users=users,
        rate=cell.rate, target=ctx.settings.target,
        repeat=cell.repeat, status="running", valid=False, reason="", endpoint=scenario.endpoint,
        delay_ms=scenario.delay_ms, workers=config.workers,
        slots=None if slots is None or math.isinf(slots) else slots,
        predicted_rps=predicted_rps(users, slots, scenario.delay_ms, cell.rate),
        warmup_s=scenario.warmup_s, measure_s=scenario.measure_s, order=order,
        started_at=time.time(), threads=config.threads if "threads" in model.knobs else None,
        slot_limit=limit if scenario.kind.predicted else "", spawn=scenario.spawn,
        defaults=ctx.settings.defaults, replica=cell.replica,
        **workload.base_fields(scenario, users, slots),
    )  # fmt: skip


def _rate_users(rate: float, scenario: Scenario) -> int:
    """Senders for an open-loop cell: four times the requests in flight at the nominal delay.

    A server within capacity never makes a send late. Beyond capacity any finite pool runs
    dry: sends go out late (counted), the sender-side latency stays bounded by the pool, and the
    corrected latency, measured from the intended time, shows the queue that really builds.
    """
    in_flight = rate * max(scenario.delay_ms, RATE_USERS_MIN_DELAY_MS) / 1000
    return min(MAX_RATE_USERS, math.ceil(RATE_USERS_FACTOR * in_flight) + RATE_USERS_SPARE)


def _stop_timeout_s(scenario: Scenario, base: CellResult) -> float:
    """Long enough for requests still queued at the end of the window to finish."""
    slots = base.slots or base.users
    queue_s = math.ceil(base.users / slots) * scenario.delay_ms / 1000
    return min(STOP_TIMEOUT_MAX_S, max(STOP_TIMEOUT_MIN_S, STOP_TIMEOUT_QUEUE_FACTOR * queue_s))


def _components(ctx: CellContext, server: services.Server, locust: list[ManagedProcess]):
    """Process groups to sample: each Locust process on its own, the others as whole trees."""
    components = {"locust": lambda: [proc.tree() for proc in locust]}
    owned = {"server": server.process,
             **{h.component: h.process for h in ctx.services.values()}}  # fmt: skip
    for name, process in owned.items():
        if process:
            components[name] = lambda process=process: [process.tree()]
    return components


def _gauges(ctx: CellContext, config: ServerConfig) -> dict:
    """What the sampler reads besides CPU and memory: requests each serving process answered
    so far (``"pid:count ..."``), and the room's held polls when there is a bus."""
    gauges = {}
    if config.stats_dir:
        directory = Path(config.stats_dir)
        gauges["process_requests"] = lambda: " ".join(
            f"{pid}:{n}" for pid, n in sorted(read_counts(directory).items())
        )
        gauges["loop_lag_ms"] = lambda: read_loop_lag_ms(directory)
    bus = ctx.services.get("bus")
    if bus:  # polls held and sockets open, summed over the server's processes
        gauges["room"] = lambda: _room_gauges(bus.stats())
    if not ctx.settings.target:
        gauges["accept_queue"] = lambda: accept_queue(config.port)
    return gauges


def _room_gauges(stats) -> dict[str, int]:
    return {"room_held": stats.held, "room_sockets": stats.sockets}


def _db_threads_probe(ctx: CellContext):
    """MariaDB ``Threads_connected`` over one kept connection (not counting that connection)."""
    database = ctx.services.get("database")
    if not database:
        return None
    holder: list = []

    def probe() -> int | None:
        try:
            if not holder:
                holder.append(database.connect())
            with holder[0].cursor() as cur:
                cur.execute("SHOW GLOBAL STATUS LIKE 'Threads_connected'")
                return int(cur.fetchone()[1]) - 1
        except pymysql.MySQLError:
            holder.clear()
            return None

    return probe
