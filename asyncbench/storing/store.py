"""The run directory: versioned, self-describing result files, written so a crash loses nothing.

``reports/<run-id>/`` holds ``run.json`` (metadata), ``results.csv`` (one row per cell),
``samples.parquet/`` and ``resources.parquet/`` (one parquet file per cell, so a finished cell
is on disk before the next starts and a rerun replaces exactly its own cells; pandas and pyarrow
read the folder as one table), and ``index.html``. ``reports/latest`` points at the newest run.

Every file carries its schema version; ``asyncbench.migrate`` lists the versions and upgrades
older files when they are read. Every write is atomic (``asyncbench.atomic``): a full disk stops
a run with ``DiskFullError`` and leaves every finished cell whole. A damaged file (truncated,
edited by hand) is refused with a ``StoreError`` that names it and says what to do.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from asyncbench.storing import integrity
from asyncbench.storing.atomic import is_disk_full, write_all_atomic
from asyncbench.storing.migrate import (
    PARQUET_SCHEMA_KEY,
    SCHEMA_VERSION,
    SchemaError,
    upgrade_meta,
    upgrade_resources,
    upgrade_results,
    upgrade_samples,
)

_TEXT_COLUMNS = ("reason", "target", "process_requests", "process_users", "slot_limit", "spawn",
                 "rps_method", "replica", "transport", "bottleneck", "window_reason")  # fmt: skip
# Kept free in every run directory while a run writes into it, and given back when the disk
# fills, so that run.json can still record why the run stopped.
RESERVE_BYTES = 256 * 1024
RESERVE_NAME = ".reserve"


class StoreError(RuntimeError):
    """A run directory is missing, damaged or of another schema version."""


class DiskFullError(StoreError):
    """The disk holding a run directory is full; every file written before is intact."""

    def __init__(self, path: Path, message: str = "") -> None:
        self.path = Path(path)
        super().__init__(message or f"no space left on the device holding {self.path.parent}")


def is_disk_full_error(exc: BaseException) -> bool:
    return isinstance(exc, DiskFullError) or is_disk_full(exc)


@dataclass(frozen=True)
class Invocation:
    """One ``asyncbench run`` into a run directory: what it asked for and how it ended."""

    started: float
    seed: int
    settings: dict
    cells: list[str]  # the cell ids it planned to run
    command: list[str]
    resumed: bool = False
    scenarios: dict = field(default_factory=dict)  # name -> the Scenario as it ran
    finished: float | None = None
    status: str = "running"
    reason: str = ""  # why it stopped, when it did not complete
    # Where its wall time went: the cells' measured windows, their warm-ups, the rest
    # (server and Locust start-up, verification, stops), and building the report.
    measured_s: float = 0.0
    warmup_s: float = 0.0
    report_s: float | None = None
    wall_s: float | None = None  # from its start to its report written
    outside_share: float | None = None  # of wall_s, the time outside every measured window
    phases: dict = field(default_factory=dict)  # seconds per stage of the cells (PhaseClock)
    second_repeats: dict = field(default_factory=dict)  # cell id -> why the profile added it
    stage_shares: dict = field(default_factory=dict)  # each stage's share of ``wall_s``
    profile: str = ""  # "default", "full" or "quick" (empty before profiles)

    def timed(self, finished: float, report_s: float) -> Invocation:
        """This invocation with its wall time, the share outside the windows and each stage's
        share filled in (``other``: planning, the display, and what no stage timed)."""
        wall = finished - self.started + report_s
        share = 1 - self.measured_s / wall if wall > 0 else None
        shares = {}
        if wall > 0:
            stages = {**self.phases, "report": report_s}
            stages["other"] = max(0.0, wall - sum(stages.values()))
            shares = {stage: round(seconds / wall, 4) for stage, seconds in stages.items()}
        return replace(self, report_s=round(report_s, 2), wall_s=round(wall, 2),
                       outside_share=None if share is None else round(share, 4),
                       stage_shares=shares)  # fmt: skip


@dataclass(frozen=True)
class CellResult:
    """One row of ``results.csv``: what one cell measured, and whether it can be trusted."""

    cell_id: str
    scenario: str
    server: str
    users: int
    repeat: int
    status: str  # "ok", "invalid" (measured but untrustworthy) or "failed" (not measured)
    valid: bool
    reason: str
    endpoint: str
    delay_ms: int
    workers: int
    slots: float | None  # how many requests the model can hold at once (rule 6)
    predicted_rps: float | None
    warmup_s: float  # the longest warm-up the scenario allows
    measure_s: float
    window_start: float | None = None  # epoch seconds; samples that started inside count
    window_end: float | None = None
    warmup_used_s: float | None = None  # spawned to window: until every user settled, at most
    window_reason: str = ""  # why the window ended then: "fixed", "precise: ...", "cap: ..."
    requests: int = 0
    failures: int = 0
    rps: float | None = None  # the exact estimator (``throughput``): cycles, not a count
    rps_count: float | None = None  # requests started (open loop: completed) in the window / T
    rps_stderr: float | None = None  # standard error of ``rps``, req/s
    rps_rel_stderr: float | None = None  # the same as a fraction of ``rps``
    rps_method: str = ""  # how ``rps`` was estimated (and why, when it fell back to the count)
    mean_ms: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    p999_ms: float | None = None
    max_ms: float | None = None
    cpu_server: float | None = None  # mean % of one core over the window
    cpu_locust: float | None = None  # summed over every Locust process
    cpu_locust_max: float | None = None  # the busiest Locust process
    cpu_upstream: float | None = None
    cpu_mariadb: float | None = None
    cpu_machine: float | None = None  # mean % of the whole machine
    rss_server_mb: float | None = None
    rss_server_idle_mb: float | None = None  # before the load started
    rss_per_inflight_kb: float | None = None  # (RSS − idle RSS) / requests in flight
    process_requests: str = ""  # requests each serving process answered in the window
    busiest_process_share: float | None = None  # the busiest process's share of them
    process_users: str = ""  # users each process answered, most first, where none moved
    threads_connected_max: float | None = None
    locust_requests: int | None = None  # Locust's own count, to prove no sample was lost
    recorded_samples: int | None = None
    abandoned: int | None = None  # unanswered when Locust stopped (no sample exists for them)
    rate: float = 0.0  # open loop: offered requests per second (0: closed loop)
    offered_rps: float | None = None
    late_sends: int | None = None  # sent more than analyze.LATE_SEND_MS after intended time
    dropped_sends: int | None = None  # due in the window but never sent
    p50_uncorrected_ms: float | None = None  # open loop: from the actual send, for comparison
    p99_uncorrected_ms: float | None = None
    locust_processes: int = 1
    threads: int | None = None  # threaded models: threads per process
    slot_limit: str = ""  # what binds the slots, e.g. "AsyncHTTPClient max_clients = 10"
    spawn: str = ""  # how Locust opened its users: "all at once" or "N users/s"
    defaults: str = "sized"  # pool sizes: the harness's ("sized") or the libraries' ("library")
    handler_p50_ms: float | None = None  # the model's own Server-Timing
    outside_p50_ms: float | None = None  # latency outside the handler: queue, loop, transport
    handler_mean_ms: float | None = None  # the mean handler time (the second prediction's)
    queue_server_ms: float | None = None  # mean wait for the server's CPU, in arrival order
    queue_client_ms: float | None = None  # mean wait for Locust's CPU, in answer order
    accept_queue_max: float | None = None  # connections waiting in the listen backlog
    loop_lag_max_ms: float | None = None  # the worst event-loop lag (Tornado models)
    bottleneck: str = ""  # what limits the cell (asyncbench.bottleneck)
    cpu_ms_server: float | None = None  # CPU milliseconds per completed request
    cpu_ms_locust: float | None = None
    cpu_ms_upstream: float | None = None
    cpu_ms_mariadb: float | None = None
    # The second prediction (``predict.explained_rps``, from the overhead and CPU demands its
    # model showed at its lowest load; filled in as the run's cells arrive) and the gap to it.
    explained_rps: float | None = None
    explained_gap: float | None = None
    # A room's (``users`` are its members; ``rps`` its deliveries per second):
    transport: str = ""
    message_rate: float | None = None
    messages: int | None = None  # published in the window
    delivered: int | None = None
    lost: int | None = None
    duplicates: int | None = None
    out_of_order: int | None = None
    delivery_p50_ms: float | None = None
    delivery_p99_ms: float | None = None
    delivery_max_ms: float | None = None
    last_member_p50_ms: float | None = None
    members_held: float | None = None  # polls held at once (the bus's gauge, window mean)
    members_held_max: float | None = None
    predicted_held: float | None = None  # min(members, slots)
    member_errors: int | None = None
    probe_p50_ms: float | None = None
    probe_p99_ms: float | None = None
    mem_per_member_kb: float | None = None
    members_connected: int | None = None  # WebSocket: members that got their socket
    reconnects: int | None = None  # WebSocket: sockets opened again after a drop
    cpu_ms_per_delivery: float | None = None  # server CPU ms per (member, message) delivered
    target: str | None = None  # set when the server was started elsewhere
    replica: str = ""  # "aa": the second half of the A/A pair (same level measured again)
    repeat_reason: str = ""  # why a repeat the default profile adds ran (``plan``, ``repeats``)
    order: int = 0
    started_at: float = 0.0
    finished_at: float = 0.0
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def columns(cls) -> list[str]:
        return [f.name for f in fields(cls)]


@dataclass
class RunMeta:
    """``run.json``: everything needed to understand and reproduce the run."""

    run_id: str
    created: float
    status: str = "running"  # running, complete, interrupted, failed
    reason: str = ""  # why the last invocation stopped (e.g. the disk filled), if it did
    schema_version: int = SCHEMA_VERSION
    updated: float = 0.0
    seed: int = 0
    settings: dict = field(default_factory=dict)
    command: list[str] = field(default_factory=list)
    servers: dict = field(default_factory=dict)  # model -> configuration shown in the report
    services: dict = field(default_factory=dict)  # database, upstream, locust
    machine: dict = field(default_factory=dict)
    packages: dict = field(default_factory=dict)
    scenarios: dict = field(default_factory=dict)
    planned_cells: list[str] = field(default_factory=list)
    invocations: list[Invocation] = field(default_factory=list)

    @classmethod
    def from_stored(cls, data: dict) -> RunMeta:
        """From ``run.json`` contents already upgraded to the current version."""
        known = {f.name for f in fields(cls)}
        meta = cls(**{k: v for k, v in data.items() if k in known})
        meta.invocations = [
            i if isinstance(i, Invocation) else _invocation(i) for i in meta.invocations
        ]
        return meta


def _invocation(data: dict) -> Invocation:
    known = {f.name for f in fields(Invocation)}
    return Invocation(**{k: v for k, v in data.items() if k in known})


class RunDir:
    """One run's directory: create, reopen, and update it cell by cell."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def samples_dir(self) -> Path:
        return self.path / "samples.parquet"

    @property
    def resources_dir(self) -> Path:
        return self.path / "resources.parquet"

    @property
    def results_csv(self) -> Path:
        return self.path / "results.csv"

    @property
    def meta_json(self) -> Path:
        return self.path / "run.json"

    @property
    def logs_dir(self) -> Path:
        return self.path / "logs"

    @classmethod
    def create(cls, reports_dir: Path, run_id: str | None = None) -> RunDir:
        run_id = run_id or time.strftime("%Y%m%d-%H%M%S")
        path = Path(reports_dir) / run_id
        suffix = 1
        while path.exists():
            suffix += 1
            path = Path(reports_dir) / f"{run_id}-{suffix}"
        for sub in ("samples.parquet", "resources.parquet", "logs"):
            (path / sub).mkdir(parents=True)
        return cls(path)

    @classmethod
    def open(cls, path: Path) -> RunDir:
        """Reopen a stored run; refuse a missing directory or an unknown schema version."""
        run = cls(Path(path).resolve() if Path(path).is_symlink() else Path(path))
        if not run.meta_json.exists():
            raise StoreError(f"{path} is not a run directory (no run.json); run `asyncbench run`")
        run.read_meta()
        for sub in ("samples.parquet", "resources.parquet", "logs"):
            (run.path / sub).mkdir(exist_ok=True)
        return run

    def read_meta(self) -> RunMeta:
        try:
            data = json.loads(self.meta_json.read_bytes())
        except (OSError, ValueError) as exc:  # not UTF-8, not JSON, unreadable
            raise self._damaged_meta(f"not readable JSON: {_first_line(exc)}") from None
        if not isinstance(data, dict):
            raise self._damaged_meta(f"holds a JSON {type(data).__name__}, not an object")
        try:
            data = upgrade_meta(data, str(self.meta_json))
        except SchemaError as exc:
            raise StoreError(str(exc)) from None
        problem = integrity.record_problem(data, fields(RunMeta), "run.json")
        for i, entry in enumerate(data.get("invocations") or ()):
            where = f"invocations[{i}]"
            problem = problem or integrity.record_problem(entry, fields(Invocation), where)
            missing = [k for k in integrity.required_fields(fields(Invocation)) if k not in entry]
            problem = problem or (f"{where} lacks {', '.join(missing)}" if missing else None)
        if problem:
            raise self._damaged_meta(problem)
        return RunMeta.from_stored(data)

    def _damaged_meta(self, problem: str) -> StoreError:
        return StoreError(f"{self.meta_json} is damaged ({problem}): restore it from a copy; "
                          "without it this run cannot be reported or resumed")  # fmt: skip

    def write_meta(self, meta: RunMeta) -> None:
        meta.updated = time.time()
        text = json.dumps(asdict(meta), indent=2, default=str)
        self.write_files([(self.meta_json, text.encode())])

    def write_files(self, files: list[tuple[Path, bytes]]) -> None:
        """Replace these files at once (``atomic.write_all_atomic``); ``DiskFullError`` if the
        disk fills, with nothing half-written."""
        try:
            write_all_atomic(files)
        except OSError as exc:
            if is_disk_full(exc):
                raise DiskFullError(Path(exc.filename or files[0][0])) from None
            raise

    def reserve_space(self) -> None:
        """Set aside ``RESERVE_BYTES`` for the last words of a run that fills the disk."""
        self.write_files([(self.path / RESERVE_NAME, bytes(RESERVE_BYTES))])

    def release_space(self) -> None:
        with contextlib.suppress(OSError):
            (self.path / RESERVE_NAME).unlink(missing_ok=True)

    def results(self) -> pd.DataFrame:
        if not self.results_csv.exists():
            return pd.DataFrame(columns=CellResult.columns())
        try:
            # text stays text: a process_users of "2" is not the number 2.0
            raw = pd.read_csv(self.results_csv, dtype=dict.fromkeys(_TEXT_COLUMNS, str))
        except (OSError, ValueError) as exc:  # pandas' parser errors are ValueErrors
            raise self._damaged_results(f"not a readable CSV table: {_first_line(exc)}") from None
        try:
            table = upgrade_results(raw, str(self.results_csv))
        except SchemaError as exc:
            raise StoreError(str(exc)) from None
        except (ValueError, TypeError):  # a schema_version that is not a number
            raise self._damaged_results("its schema_version column is not a number") from None
        problem = integrity.results_problem(table, fields(CellResult))
        if problem:
            raise self._damaged_results(problem)
        for column in integrity.numeric_columns(fields(CellResult)):
            if column in table:
                table[column] = pd.to_numeric(table[column])
        table["valid"] = table["valid"].astype(str) == "True"
        for column in _TEXT_COLUMNS:  # an all-empty column must not come back as float NaN
            if column in table:
                table[column] = table[column].astype(object).where(table[column].notna(), "")
        return table

    def _damaged_results(self, problem: str) -> StoreError:
        return StoreError(
            f"{self.results_csv} is damaged ({problem}): repair or delete the bad row (or the "
            f"file), then `asyncbench run --resume {self.path}` measures those cells again"
        )

    def save_cell(
        self,
        result: CellResult,
        samples: pd.DataFrame | None,
        resources: pd.DataFrame | None,
        deliveries: pd.DataFrame | None = None,
        messages: pd.DataFrame | None = None,
        derive: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
    ) -> None:
        """Persist one cell at once: its raw facts (samples, resource samples and, for a room,
        deliveries and the messages published) and its results row. ``derive`` recomputes
        columns that depend on other cells (the second prediction) over the whole table.

        Every file is written in full before any replaces its target, so a cell is either
        wholly stored or (the disk filled: ``DiskFullError``) not at all.
        """
        raw = {"samples": samples, "resources": resources, "deliveries": deliveries,
               "messages": messages}  # fmt: skip
        files, stale = [], []
        for name, frame in raw.items():
            target = self.raw_dir(name) / f"{result.cell_id}.parquet"
            if frame is None or frame.empty:  # no file: nothing of that kind (e.g. no room)
                stale.append(target)
            else:
                target.parent.mkdir(exist_ok=True)
                files.append((target, _parquet_bytes(frame.assign(cell_id=result.cell_id))))
        table = self.results()
        table = table[table["cell_id"] != result.cell_id]
        row = pd.DataFrame([asdict(result)], columns=CellResult.columns())
        table = row if table.empty else pd.concat([table, row], ignore_index=True)
        table = table.sort_values(["scenario", "server", "users", "repeat"])
        if derive is not None:
            table = derive(table)[CellResult.columns()]
        files.append((self.results_csv, table.to_csv(index=False).encode()))
        self.write_files(files)
        for target in stale:
            target.unlink(missing_ok=True)

    def raw_dir(self, name: str) -> Path:
        """Where one kind of raw fact lives, one parquet file per cell."""
        return self.path / f"{name}.parquet"

    def deliveries(self, cell_ids: list[str] | None = None) -> pd.DataFrame:
        return _read_cells(self.raw_dir("deliveries"), cell_ids, upgrade_resources)

    def messages(self, cell_ids: list[str] | None = None) -> pd.DataFrame:
        return _read_cells(self.raw_dir("messages"), cell_ids, upgrade_resources)

    def samples(self, cell_ids: list[str] | None = None) -> pd.DataFrame:
        return _read_cells(self.samples_dir, cell_ids, upgrade_samples)

    def resources(self, cell_ids: list[str] | None = None) -> pd.DataFrame:
        return _read_cells(self.resources_dir, cell_ids, upgrade_resources)

    def point_latest(self, reports_dir: Path) -> None:
        """Make ``reports/latest`` a relative symlink to this run."""
        link = Path(reports_dir) / "latest"
        tmp = Path(reports_dir) / ".latest.tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(self.path.name)
        os.replace(tmp, link)


def latest_run(reports_dir: Path) -> RunDir | None:
    link = Path(reports_dir) / "latest"
    return RunDir.open(link.resolve()) if link.exists() else None


def _read_cells(directory: Path, cell_ids: list[str] | None, upgrade) -> pd.DataFrame:
    files = sorted(directory.glob("*.parquet"))
    if cell_ids is not None:
        wanted = set(cell_ids)
        files = [f for f in files if f.stem in wanted]
    if not files:
        return pd.DataFrame()
    return pd.concat([_read_parquet(f, upgrade) for f in files], ignore_index=True)


def _read_parquet(path: Path, upgrade) -> pd.DataFrame:
    try:
        table = pq.read_table(path)
    except (OSError, ValueError, pa.ArrowException) as exc:  # truncated, not parquet at all
        run = path.parent.parent
        raise StoreError(
            f"{path} is damaged ({_first_line(exc)}): delete it and its cell's row in "
            f"{run / 'results.csv'}, then `asyncbench run --resume {run}` measures it again"
        ) from None
    stored = (table.schema.metadata or {}).get(PARQUET_SCHEMA_KEY)
    version = int(stored) if stored and stored.isdigit() else (None if stored else 1)
    try:
        return upgrade(table.to_pandas(), version, str(path))
    except SchemaError as exc:
        raise StoreError(str(exc)) from None


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    """A parquet file in memory, with the schema version in its metadata (written by
    ``write_files``, so a full disk raises a plain ``ENOSPC`` rather than an Arrow error)."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    metadata = {**(table.schema.metadata or {}), PARQUET_SCHEMA_KEY: str(SCHEMA_VERSION).encode()}
    sink = pa.BufferOutputStream()
    pq.write_table(table.replace_schema_metadata(metadata), sink)
    return sink.getvalue().to_pybytes()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
