"""Measuring one cell: a fresh server, the equivalence check, a Locust run with resource sampling,
the one judgement, and the cell persisted before the next one starts."""

from __future__ import annotations

import contextlib
import functools
import math
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pymysql

from asyncbench.judging import analyze
from asyncbench.judging.bottleneck import slot_use
from asyncbench.judging.predict import predicted_rps
from asyncbench.judging.workloads import judge_of
from asyncbench.measuring import services
from asyncbench.measuring.measure import CellFailed, LoadPlan, prestarted_locust, run_locust
from asyncbench.measuring.processes import ManagedProcess, free_port
from asyncbench.measuring.sampling import Profiler, ResourceSampler, accept_queue
from asyncbench.measuring.workloads import workload_of
from asyncbench.planning.plan import Cell, Scenario
from asyncbench.planning.settings import RunSettings
from asyncbench.storing.records import CellResult
from asyncbench.storing.store import RunDir
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

    STAGES = ("services", "server_start", "verify", "locust_start", "spawn", "warmup", "window",
              "drain", "locust_stop", "server_stop", "save")  # fmt: skip

    def __init__(self) -> None:
        self.totals: dict[str, float] = dict.fromkeys(self.STAGES, 0.0)

    def add(self, stage: str, seconds: float) -> None:
        self.totals[stage] += max(0.0, seconds)

    @contextlib.contextmanager
    def timing(self, stage: str) -> Iterator[None]:
        """Add the time the block takes to ``stage``."""
        started = time.monotonic()
        try:
            yield
        finally:
            self.add(stage, time.monotonic() - started)

    def locust(self, outcome) -> None:
        """Split a Locust run into its start-up, spawn, warm-up, window, drain (the window's
        last answers; a room's messages in flight) and stop."""
        stop = outcome.test_stop or outcome.window_end
        stages = {"locust_start": (outcome.launched, outcome.test_start),
                  "spawn": (outcome.test_start, outcome.spawn_complete),
                  "warmup": (outcome.spawn_complete, outcome.window_start),
                  "window": (outcome.window_start, outcome.window_end),
                  "drain": (outcome.window_end, stop),
                  "locust_stop": (stop, outcome.exited)}  # fmt: skip
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
    # Called once a cell's load and sampling are over (the run starts the next server then).
    after_load: Callable[[], None] = lambda: None

    def configured(self, model: str, stats_dir: str | None = None) -> ServerConfig:
        """``model``'s configuration on a free port, pointed at every backing service."""
        config = MODELS[model].configure(self.server_config, self.settings.defaults)
        config = replace(config, port=free_port(), stats_dir=stats_dir)
        for handle in self.services.values():
            config = handle.configure(config)
        return config


class PreparedCell:
    """One cell's configuration, server process and (standalone) Locust process, started ahead
    of its turn and verified: the run starts and checks the next cell's while this one's are
    stopped and stored (``Lookahead``), once this cell's load and sampling are over. Failing to
    start or to verify is kept and raised when the cell is measured, so it fails that cell
    only."""

    def __init__(self, ctx: CellContext, scenario: Scenario, cell: Cell) -> None:
        self.error: services.ServiceError | CellFailed | None = None
        self.server: services.Server | None = None
        self.locust: ManagedProcess | None = None
        self.verify_s = 0.0
        self.verified = False
        self._stack = contextlib.ExitStack()
        started = time.monotonic()
        try:
            if not ctx.settings.locust_workers + ctx.settings.expect_workers:
                log = ctx.run.logs_dir / f"{cell.cell_id}.locust.log"
                self.locust = self._stack.enter_context(prestarted_locust(log))
            counts = self._stack.enter_context(
                tempfile.TemporaryDirectory(prefix="asyncbench-counts-")
            )
            config = ctx.configured(cell.server, stats_dir=None if ctx.settings.target else counts)
            self.config = workload_of(scenario.kind).configure(config, scenario)
            self.server = self._stack.enter_context(_server(ctx, cell, self.config))
            self.start_s = time.monotonic() - started
            if workload_of(scenario.kind).verifies_ahead:
                self.verify(ctx, scenario)
        except (services.ServiceError, CellFailed) as exc:
            self.error = exc
        except BaseException:
            self._stack.close()
            raise
        self.start_s = time.monotonic() - started - self.verify_s

    def verify(self, ctx: CellContext, scenario: Scenario) -> float:
        """The equivalence check (rule 2: the right bytes, and the work really done), once;
        the seconds it took now."""
        if self.verified:
            return 0.0
        proof = ctx.services.get(scenario.kind.proof) if scenario.kind.proof else None
        began = time.monotonic()
        try:
            workload_of(scenario.kind).verify(self.server.url, scenario, proof)
            self.verified = True
        finally:
            self.verify_s = time.monotonic() - began
        return self.verify_s

    def started(self) -> services.Server:
        if self.error is not None:
            raise self.error
        return self.server

    def close(self) -> None:
        """Stop the server and remove its counters (idempotent)."""
        self._stack.close()


def measure_cell(
    ctx: CellContext, scenario: Scenario, cell: Cell, order: int,
    prepared: PreparedCell | None = None,
) -> CellResult:  # fmt: skip
    """Measure one cell and persist it; a cell that cannot be measured is stored as failed.

    ``prepared`` is its server started ahead; without one it is started here (and counted).
    """
    if prepared is None:
        prepared = PreparedCell(ctx, scenario, cell)
        ctx.clock.add("server_start", prepared.start_s)
        ctx.clock.add("verify", prepared.verify_s)
    try:
        base = _base_result(ctx, scenario, cell, prepared.config, order)
        try:
            final, samples, resources, extra = _measure(ctx, scenario, cell, prepared, base)
        except (CellFailed, services.ServiceError) as exc:
            samples = resources = None
            extra = {}
            final = replace(base, status="failed", valid=False, reason=str(exc))
    finally:
        with ctx.clock.timing("server_stop"):
            prepared.close()
    final = replace(final, finished_at=time.time())
    with ctx.clock.timing("save"):
        explained = functools.partial(analyze.explain_model, scenario=cell.scenario,
                                      server=cell.server)  # fmt: skip
        ctx.run.save_cell(final, samples, resources, **extra, derive=explained)
    return final


def _server(ctx: CellContext, cell: Cell, config: ServerConfig):
    if ctx.settings.target:
        return services.remote_server(cell.server, ctx.settings.target, config)
    log = ctx.run.logs_dir / f"{cell.cell_id}.server.log"
    # Killed at once: its cell is measured and it keeps nothing, and a graceful stop costs every
    # process its interpreter's shutdown (0.2-0.4 s a cell, measured).
    return services.server(cell.server, config, log_path=log, grace_s=0)


def _load_plan(ctx: CellContext, scenario: Scenario, cell: Cell, url: str, base: CellResult):
    s = ctx.settings
    distributed = s.locust_workers + s.expect_workers > 0
    workload = workload_of(scenario.kind)
    # A profile is timed from the start, and a master hears of its workers' requests only at
    # the end: their cells warm up for the scenario's full warm-up, not until settled.
    settle = 0 if s.profile or distributed else workload.settle_cycles(cell)
    warmup_s = scenario.warmup_s
    if settle:
        warmup_s = workload.warmup_limit_s(scenario, base.users, base.slots)
    adaptive = scenario.measure_min_s and not (s.profile or distributed or cell.rate)
    return LoadPlan(
        url, scenario.path, base.users + workload.extra_users, warmup_s,
        scenario.measure_s, workload.stop_timeout_s(_stop_timeout_s(scenario, base)),
        measure_min_s=min(scenario.measure_min_s, scenario.measure_s) if adaptive else 0.0,
        own_slots=slot_use(base.server, base.users, base.slots, base.workers) == "own",
        settle_cycles=settle,
        drain_s=workload.drain_s(), rate=cell.rate, arrival=s.arrival,
        spawn_rate=scenario.spawn_rate,
        user_classes=workload.user_classes(scenario), extra_args=workload.extra_args(scenario),
        seed=zlib.crc32(f"{ctx.seed}:{cell.cell_id}".encode()), local_workers=s.locust_workers,
        remote_workers=s.expect_workers, master_bind=s.master_bind,
        master_port=(s.master_port if s.expect_workers else free_port()) if distributed else 0,
    )  # fmt: skip


def _measure(ctx: CellContext, scenario: Scenario, cell: Cell, prepared, base: CellResult):
    workload, clock, config = workload_of(scenario.kind), ctx.clock, prepared.config
    server = prepared.started()
    clock.add("verify", prepared.verify(ctx, scenario))
    locust: list[ManagedProcess] = []
    sampler = ResourceSampler(_components(ctx, server, locust), _db_threads_probe(ctx),
                              gauges=_gauges(ctx, config))  # fmt: skip
    plan = _load_plan(ctx, scenario, cell, server.url, base)
    watch = _ServerWatch(ctx, cell, server, stall_s=max(STALL_MIN_S, plan.finish_s))
    with sampler, workload.beside(ctx.services, scenario) as beside, \
            _profiler(ctx, cell, server, plan), \
            tempfile.TemporaryDirectory(prefix="asyncbench-locust-") as tmp:  # fmt: skip
        outcome = run_locust(plan, Path(tmp), log_dir=ctx.run.logs_dir, log_name=cell.cell_id,
                             on_start=locust.append, watch=watch,
                             prestarted=prepared.locust)  # fmt: skip
        clock.locust(outcome)
    # Nothing of this cell is sampled any more: the next cell's server may start meanwhile.
    ctx.after_load()
    if outcome.stuck >= plan.users:
        raise CellFailed(f"{cell.server} stopped answering: all {plan.users} users were still "
                         "waiting for an answer when the cell ended")  # fmt: skip
    resources = sampler.frame()
    columns = workload.columns(outcome, resources, base, scenario, beside)
    final = replace(
        base, **columns, abandoned=outcome.abandoned,
        window_start=outcome.window_start, window_end=outcome.window_end,
        window_reason=outcome.window_reason,
        warmup_used_s=round(outcome.window_start - outcome.spawn_complete, 3),
        locust_requests=outcome.locust_requests, recorded_samples=len(outcome.samples),
        locust_processes=len(outcome.workers) + (1 if plan.distributed else 0),
    )  # fmt: skip
    final = replace(final, **judge_of(scenario.kind).derived(asdict(final)))
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
    model, workload = MODELS[cell.server], workload_of(scenario.kind)
    slots = workload.slots(scenario, model, config, ctx.db_max_connections)
    users = _rate_users(cell.rate, scenario) if cell.rate else cell.users
    limit = workload.slot_limit(scenario, model, config, ctx.db_max_connections)
    return CellResult(
        cell_id=cell.cell_id, scenario=cell.scenario, server=cell.server, users=users,
        rate=cell.rate, target=ctx.settings.target,
        repeat=cell.repeat, status="running", valid=False, reason="", endpoint=scenario.endpoint,
        delay_ms=scenario.delay_ms, workers=config.workers,
        slots=None if slots is None or math.isinf(slots) else slots,
        predicted_rps=predicted_rps(users, slots, scenario.delay_ms, cell.rate),
        warmup_s=scenario.warmup_s, measure_s=scenario.measure_s, order=order,
        started_at=time.time(), threads=config.threads if "threads" in model.knobs else None,
        slot_limit=limit, spawn=scenario.spawn,
        defaults=ctx.settings.defaults, replica=cell.replica, repeat_reason=cell.why,
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
    """Long enough for requests still queued at the end of the window to finish: a bound, not a
    wait (Locust stops as soon as they have). Queued requests may all wait on one process (a
    forked server's accept imbalance), so the bound is every user served one after another."""
    slots = base.slots or base.users
    queued = base.users if base.users > slots else 1
    queue_s = queued * scenario.delay_ms / 1000
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
