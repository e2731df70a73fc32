"""The run-directory session: where an invocation's cells go.

``open_session`` plans the invocation (``planning.settings``) and opens the run directory its
cells land in: a new run, a partial rerun into the latest run (its cells replace the same cells
there), or the resume of an interrupted run (only the cells it has no result for). It also reaps
what a SIGKILLed orchestrator left behind before anything new starts.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import asdict
from pathlib import Path

from asyncbench.measuring import metadata
from asyncbench.measuring.processes import reap_orphans
from asyncbench.planning.settings import RunPlan, RunSettings, plan_run, replan
from asyncbench.storing.records import Invocation, RunMeta
from asyncbench.storing.store import RunDir, StoreError, latest_run


def open_session(settings: RunSettings, argv, warn) -> tuple[RunPlan, RunDir, RunMeta]:
    """Plan the invocation and open (or create) its run directory, recording the invocation."""
    reap_dead_runs(Path(settings.reports_dir), warn)
    if settings.resume:
        return _resume(settings, argv)
    plan = plan_run(settings)
    run, meta = _open_run(plan, argv)
    return plan, run, meta


def _resume(requested: RunSettings, argv) -> tuple[RunPlan, RunDir, RunMeta]:
    """Re-plan the last invocation of a stored run and keep only the cells it has no result for."""
    run = RunDir.open(Path(requested.resume))
    meta = run.read_meta()
    if not meta.invocations:
        raise StoreError(f"{run.meta_json}: records no invocation to resume; start a new run")
    done = set(run.results()["cell_id"])  # first: a damaged results.csv is named as such
    try:
        plan = replan(run, meta, requested, done)
    except (TypeError, KeyError, ValueError, AttributeError) as exc:
        raise StoreError(
            f"{run.meta_json} is damaged (its last invocation cannot be planned again: "
            f"{type(exc).__name__}: {exc}): restore it, or start a new run"
        ) from None
    meta.status = "running"
    meta.invocations.append(invocation(plan, argv, resumed=True))
    run.write_meta(meta)
    return plan, run, meta


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
    meta.invocations.append(invocation(plan, argv))
    run.write_meta(meta)
    run.point_latest(reports_dir)
    return run, meta


def invocation(plan: RunPlan, argv, resumed: bool = False) -> Invocation:
    """The record of one invocation of ``plan`` (``run.json``)."""
    return Invocation(
        started=time.time(), seed=plan.seed, settings=plan.settings.stored(),
        cells=[c.cell_id for c in plan.cells], command=list(argv or sys.argv), resumed=resumed,
        scenarios={name: asdict(s) for name, s in plan.scenarios.items()},
        profile=plan.settings.plan_profile,
    )  # fmt: skip
