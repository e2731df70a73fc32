"""The run directory: versioned, self-describing result files, written so a crash loses nothing.

``reports/<run-id>/`` holds ``run.json`` (metadata), ``results.csv`` (one row per cell),
``samples.parquet/`` and ``resources.parquet/`` (one parquet file per cell, so a finished cell
is on disk before the next starts and a rerun replaces exactly its own cells; pandas and pyarrow
read the folder as one table), and ``index.html``. ``reports/latest`` points at the newest run.

Every file carries its schema version; ``asyncbench.migrate`` lists the versions and upgrades
older files when they are read.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from asyncbench.migrate import (
    PARQUET_SCHEMA_KEY,
    SCHEMA_VERSION,
    SchemaError,
    upgrade_meta,
    upgrade_resources,
    upgrade_results,
    upgrade_samples,
)

_TEXT_COLUMNS = ("reason", "target", "process_requests", "slot_limit", "spawn", "rps_method",
                 "replica", "transport", "bottleneck")  # fmt: skip


class StoreError(RuntimeError):
    """A run directory is missing, damaged or of another schema version."""


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
    warmup_s: float
    measure_s: float
    window_start: float | None = None  # epoch seconds; samples that started inside count
    window_end: float | None = None
    requests: int = 0
    failures: int = 0
    rps: float | None = None  # the exact estimator (``confidence``): cycles, not a count
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
    accept_queue_max: float | None = None  # connections waiting in the listen backlog
    loop_lag_max_ms: float | None = None  # the worst event-loop lag (Tornado models)
    bottleneck: str = ""  # what limits the cell (asyncbench.bottleneck)
    cpu_ms_server: float | None = None  # CPU milliseconds per completed request
    cpu_ms_locust: float | None = None
    cpu_ms_upstream: float | None = None
    cpu_ms_mariadb: float | None = None
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
    target: str | None = None  # set when the server was started elsewhere
    replica: str = ""  # "aa": the second half of the A/A pair (same level measured again)
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
            data = json.loads(self.meta_json.read_text())
            return RunMeta.from_stored(upgrade_meta(data, str(self.meta_json)))
        except SchemaError as exc:
            raise StoreError(str(exc)) from None

    def write_meta(self, meta: RunMeta) -> None:
        meta.updated = time.time()
        _atomic_write(self.meta_json, json.dumps(asdict(meta), indent=2, default=str))

    def results(self) -> pd.DataFrame:
        if not self.results_csv.exists():
            return pd.DataFrame(columns=CellResult.columns())
        try:
            table = upgrade_results(pd.read_csv(self.results_csv), str(self.results_csv))
        except SchemaError as exc:
            raise StoreError(str(exc)) from None
        for column in _TEXT_COLUMNS:  # an all-empty column must not come back as float NaN
            if column in table:
                table[column] = table[column].astype(object).where(table[column].notna(), "")
        return table

    def save_cell(
        self,
        result: CellResult,
        samples: pd.DataFrame | None,
        resources: pd.DataFrame | None,
        deliveries: pd.DataFrame | None = None,
        messages: pd.DataFrame | None = None,
    ) -> None:
        """Persist one cell: its raw facts first (samples, resource samples and, for a room,
        deliveries and the messages published), then its results row."""
        raw = {"samples": samples, "resources": resources, "deliveries": deliveries,
               "messages": messages}  # fmt: skip
        for name, frame in raw.items():
            target = self.raw_dir(name) / f"{result.cell_id}.parquet"
            if frame is None or frame.empty:  # no file: nothing of that kind (e.g. no room)
                target.unlink(missing_ok=True)
                continue
            target.parent.mkdir(exist_ok=True)
            _write_parquet(frame.assign(cell_id=result.cell_id), target)
        table = self.results()
        table = table[table["cell_id"] != result.cell_id]
        row = pd.DataFrame([asdict(result)], columns=CellResult.columns())
        table = row if table.empty else pd.concat([table, row], ignore_index=True)
        tmp = self.results_csv.with_suffix(".tmp")
        table.sort_values(["scenario", "server", "users", "repeat"]).to_csv(tmp, index=False)
        os.replace(tmp, self.results_csv)

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
    table = pq.read_table(path)
    stored = (table.schema.metadata or {}).get(PARQUET_SCHEMA_KEY)
    version = int(stored) if stored and stored.isdigit() else (None if stored else 1)
    try:
        return upgrade(table.to_pandas(), version, str(path))
    except SchemaError as exc:
        raise StoreError(str(exc)) from None


def _write_parquet(frame: pd.DataFrame, target: Path) -> None:
    """Atomically, with the schema version in the file's metadata."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    metadata = {**(table.schema.metadata or {}), PARQUET_SCHEMA_KEY: str(SCHEMA_VERSION).encode()}
    tmp = target.with_suffix(".tmp")
    pq.write_table(table.replace_schema_metadata(metadata), tmp)
    os.replace(tmp, target)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
