"""The orchestrator loop: open the session, bring backing services up once, measure each cell.

The session (``session.py``) decides which cells run and where they land; each cell is measured
and persisted by ``cell.measure_cell``; progress and other side concerns hang off ``RunHooks``.
The report is built afterwards, from the store (``cli.run_and_report``).
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace

from asyncbench.judging.repeats import second_repeats
from asyncbench.measuring import metadata, services
from asyncbench.measuring.cell import CellContext, PhaseClock, PreparedCell, measure_cell
from asyncbench.measuring.processes import ProcessLedger, raise_open_file_limit
from asyncbench.measuring.session import open_session
from asyncbench.planning.plan import Cell, Scenario
from asyncbench.planning.settings import RunPlan, RunSettings
from asyncbench.planning.transports import transport
from asyncbench.storing.records import CellResult, Invocation, RunMeta
from asyncbench.storing.store import DiskFullError, RunDir, is_disk_full_error
from loadtests.protocol import Progress
from servers import MODELS

# Start-up, verification, drain, stops and storing: 1.5-1.65 s a cell outside its warm-up and
# window in three seven-model runs (run.json phases: 20261207-152558, -154931, -161818).
CELL_OVERHEAD_S = 1.6
LOCUST_RPS_CEILING = 2000  # about what one Locust process drives on this class of machine
CEILING_MARGIN = 0.9  # warn when a model should reach 90 % of that ceiling
OPEN_FILES_SPARE = 256  # files a Locust process needs besides its members' connections


class RunHooks:
    """Callbacks for side concerns (the progress display); every method is optional."""

    def run_started(self, run: RunDir, cells: list[Cell], estimate_s: float) -> None: ...
    def warn(self, message: str) -> None: ...
    def cell_started(self, cell: Cell, index: int, expected_s: float) -> None: ...
    def cell_progress(self, cell: Cell, progress: Progress) -> None: ...
    def cell_finished(self, cell: Cell, result: CellResult) -> None: ...
    def repeats_added(self, cells: list[Cell], estimate_s: float) -> None: ...
    def run_finished(self, run: RunDir, invocation: Invocation) -> None: ...


@dataclass
class OpenedRun:
    """One invocation's plan and the run directory it writes to, while it is measured."""

    plan: RunPlan
    run: RunDir
    meta: RunMeta
    disk_full: bool = False  # it stopped on a full disk (nothing more fits, a report neither)


def open_run(settings: RunSettings, hooks: RunHooks, argv=None) -> OpenedRun:
    """Plan the invocation and open its run directory (a new run, a rerun into the latest, or
    a resume), announcing it to ``hooks``."""
    plan, run, meta = open_session(settings, argv, hooks.warn)
    _warn_about_ceiling(plan, hooks)
    estimate = sum(_expected_s(plan.scenarios[c.scenario]) for c in plan.cells)
    hooks.run_started(run, plan.cells, estimate)
    return OpenedRun(plan, run, meta)


def measure_run(opened: OpenedRun, hooks: RunHooks) -> None:
    """Measure the planned cells into the store, and record how the invocation ended."""
    run, meta = opened.run, opened.meta
    try:
        run.reserve_space()
        with ProcessLedger(run.path / "processes.json"):
            _run_cells(opened.plan, run, meta, hooks)
        meta.status, meta.reason = "complete", ""
    except KeyboardInterrupt:
        meta.status, meta.reason = "interrupted", "interrupted by Ctrl-C or SIGTERM"
        raise
    except BaseException as exc:
        meta.status, meta.reason = "failed", f"{type(exc).__name__}: {exc}".splitlines()[0]
        if is_disk_full_error(exc):
            opened.disk_full = True
            stopped = _disk_full(run, meta)
            meta.reason = str(stopped)
            raise stopped from None
        raise
    finally:
        _record_end(run, meta, hooks, opened.disk_full)


def run_matrix(settings: RunSettings, hooks: RunHooks | None = None, argv=None) -> RunDir:
    """Measure the cells ``settings`` select, without building the report (``cli`` does)."""
    hooks = hooks or RunHooks()
    opened = open_run(settings, hooks, argv)
    measure_run(opened, hooks)
    return opened.run


def _disk_full(run: RunDir, meta: RunMeta) -> DiskFullError:
    """The one line a run that filled its disk stops with (and records in ``run.json``)."""
    kept = len(run.results())
    return DiskFullError(
        run.path,
        f"no space left on the device holding {run.path}: stopped with {kept} of "
        f"{len(meta.planned_cells)} cells stored and intact; free some space, then run "
        f"`asyncbench run --resume {run.path}`"
    )


def _record_end(run: RunDir, meta: RunMeta, hooks: RunHooks, disk_full: bool) -> None:
    """Record how the invocation ended; on a full disk, in the space reserved for it."""
    meta.invocations[-1] = replace(
        meta.invocations[-1], finished=time.time(), status=meta.status, reason=meta.reason
    )
    if disk_full:
        run.release_space()
    try:
        run.write_meta(meta)
    except DiskFullError:
        if not disk_full:
            raise
        hooks.warn(f"could not record in {run.meta_json} why the run stopped: the disk is "
                   "still full (it says the run is running; --resume works all the same)")
    finally:
        run.release_space()


def _run_cells(plan: RunPlan, run: RunDir, meta: RunMeta, hooks: RunHooks) -> None:
    """Measure the planned cells, then (default profile) the second repeats they call for."""
    settings = plan.settings
    needed = {name for s in plan.scenarios.values() for name in s.kind.services}
    clock, cells = PhaseClock(), list(plan.cells)
    began = time.monotonic()
    with services.backing_services(needed, settings.service_urls(), run.logs_dir) as handles:
        clock.add("services", time.monotonic() - began)
        ctx = _context(run, settings, hooks, handles, plan.seed, clock)
        _record_configuration(ctx, meta, {cell.server for cell in plan.cells})
        with Lookahead(ctx, plan.scenarios, cells) as ahead:
            _measure_cells(ctx, plan.scenarios, cells, 0, ahead, meta)
            if settings.second_repeats:
                done = set(run.results()["cell_id"])
                extra = [c for c in second_repeats(run.results(), plan.planned)
                         if c.cell_id not in done]  # fmt: skip
                if extra:
                    first = len(cells)
                    _plan_more(run, meta, cells, extra, hooks, plan.scenarios)
                    _measure_cells(ctx, plan.scenarios, cells, first, ahead, meta)
        ended = time.monotonic()
    clock.add("services", time.monotonic() - ended)
    _account(meta, clock)


def _context(run, settings, hooks, handles, seed, clock) -> CellContext:
    ctx = CellContext(run, settings, hooks, services=handles, seed=seed, clock=clock)
    if "database" in handles:
        ctx.db_max_connections = int(handles["database"].variable("max_connections") or 0)
    ctx.server_config = settings.server_config()
    return ctx


def _measure_cells(ctx: CellContext, scenarios: dict[str, Scenario], cells: list[Cell],
                   first: int, ahead: Lookahead, meta: RunMeta) -> None:  # fmt: skip
    """Measure ``cells[first:]`` in order, each next cell's processes started ahead."""
    for order in range(first, len(cells)):
        cell, scenario = cells[order], scenarios[cells[order].scenario]
        ctx.hooks.cell_started(cell, order, _expected_s(scenario))
        ctx.after_load = functools.partial(ahead.start, order + 1)
        result = measure_cell(ctx, scenario, cell, order, ahead.take(order))
        _account(meta, ctx.clock)
        ctx.hooks.cell_finished(cell, result)


def _plan_more(run: RunDir, meta: RunMeta, cells: list[Cell], extra: list[Cell],
               hooks: RunHooks, scenarios: dict[str, Scenario]) -> None:  # fmt: skip
    """Add the second repeats to the run's plan (``run.json`` names them, and why)."""
    cells.extend(extra)
    ids = [c.cell_id for c in extra]
    meta.planned_cells = sorted(set(meta.planned_cells) | set(ids))
    invocation = meta.invocations[-1]
    meta.invocations[-1] = replace(
        invocation, cells=[*invocation.cells, *ids],
        second_repeats={**invocation.second_repeats, **{c.cell_id: c.why for c in extra}},
    )  # fmt: skip
    run.write_meta(meta)
    hooks.repeats_added(extra, sum(_expected_s(scenarios[c.scenario]) for c in extra))


class Lookahead:
    """Starts the next cell's server while the current one is stopped and stored.

    One long-lived thread does it: a process dies with the thread that started it
    (``PR_SET_PDEATHSIG``), so that thread must outlive every server it starts.
    """

    def __init__(self, ctx: CellContext, scenarios: dict[str, Scenario], cells: list[Cell]):
        self.ctx, self.scenarios, self.cells = ctx, scenarios, cells
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lookahead")
        self._next: tuple[int, Future[PreparedCell]] | None = None

    def __enter__(self) -> Lookahead:
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self._next is not None:
                with contextlib.suppress(Exception):
                    self._next[1].result().close()
                self._next = None
        finally:
            self._pool.shutdown(wait=True)

    def start(self, index: int) -> None:
        """Begin starting the server of the ``index``-th cell (once; none past the last)."""
        if self._next is not None or index >= len(self.cells):
            return
        cell = self.cells[index]
        scenario = self.scenarios[cell.scenario]
        self._next = (index, self._pool.submit(PreparedCell, self.ctx, scenario, cell))

    def take(self, index: int) -> PreparedCell | None:
        """The ``index``-th cell's server if it was started ahead (the wait for it is counted)."""
        if self._next is None or self._next[0] != index:
            return None
        future = self._next[1]
        self._next = None
        began = time.monotonic()
        prepared = future.result()
        waited = time.monotonic() - began
        verifying = min(waited, prepared.verify_s)  # the check ran last
        self.ctx.clock.add("verify", verifying)
        self.ctx.clock.add("server_start", waited - verifying)
        return prepared


def _account(meta: RunMeta, clock: PhaseClock) -> None:
    """The invocation's time accounting so far: the measured windows, the warm-ups, and every
    stage of the cells (all from the clock, which times each cell's Locust run)."""
    meta.invocations[-1] = replace(
        meta.invocations[-1], phases=clock.rounded(), measured_s=clock.totals["window"],
        warmup_s=clock.totals["warmup"],
    )  # fmt: skip


def _record_configuration(ctx: CellContext, meta: RunMeta, models: set[str]) -> None:
    """Every knob of the servers, services and load generator, into ``run.json``."""
    s = ctx.settings
    locust = metadata.describe_locust(
        s.locust_workers, s.expect_workers, s.master_bind,
        f"open loop, {s.arrival} arrivals" if s.rates else "closed loop",
    )  # fmt: skip
    # Merged, not replaced: a partial rerun must not drop what earlier cells used.
    meta.services.update(metadata.describe_services(ctx.services, locust))
    described = metadata.describe_servers(ctx.server_config, s.target, s.defaults)
    meta.servers.update({name: conf for name, conf in described.items() if name in models})
    ctx.run.write_meta(meta)


def _expected_s(scenario: Scenario) -> float:
    """How long a cell takes, for the ETA: its overhead, its longest warm-up, and its window; an
    adaptive window's halfway between its floor and its cap (the default runs' 2-3 s windows
    averaged 2.61 s; at the cap, 127 planned cells were "about 14 min" and took 11.6)."""
    window = scenario.measure_s
    if scenario.measure_min_s:
        window = (min(scenario.measure_min_s, scenario.measure_s) + scenario.measure_s) / 2
    return CELL_OVERHEAD_S + scenario.warmup_s + window


def _warn_about_ceiling(plan: RunPlan, hooks: RunHooks) -> None:
    """Say before the run when a model should outrun the load generator, or a room needs more
    open files than this machine allows."""
    settings = plan.settings
    ceiling = LOCUST_RPS_CEILING * settings.load_processes
    files = raise_open_file_limit()
    for s in plan.scenarios.values():
        if not s.message_rate:
            continue
        members = max(s.users)
        if members + OPEN_FILES_SPARE > files:
            hooks.warn(f"{s.name}: {members} members need more open files than the limit of "
                       f"{files} (raise the hard limit: ulimit -Hn): members will fail to "
                       "connect")  # fmt: skip
        # A socket member receives frames on the one connection it holds: 1,000 members at 2
        # messages/s kept Locust at 16-21 % of a core (measured); a long-poll member polls anew.
        polls = not transport(s.transport).persistent
        if polls and members * s.message_rate > ceiling * CEILING_MARGIN:
            hooks.warn(f"{s.name}: {members} members × {s.message_rate:g} messages/s is about "
                       f"{members * s.message_rate:.0f} polls/s, near the ~{ceiling} req/s "
                       "Locust drives here: those cells will likely be marked invalid")  # fmt: skip
    for s in plan.scenarios.values():
        for name in (settings.servers or s.servers) if s.delay_ms else ():
            config = MODELS[name].configure(settings.server_config(), settings.defaults)
            slots = s.kind.slots(MODELS[name], config, None) or math.inf
            delay_s = s.delay_ms / 1000
            if settings.rates:
                expected = min(max(settings.rates), slots / delay_s)
            else:
                expected = min(max(s.users), slots) / delay_s
            if expected > ceiling * CEILING_MARGIN:
                hooks.warn(
                    f"{s.name}: {name} should reach {expected:.0f} req/s, near the "
                    f"~{ceiling} req/s the Locust processes can drive here: those cells will "
                    "likely be marked invalid (add --locust-workers)"
                )
