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
from dataclasses import asdict, fields
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
from asyncbench.storing.records import CellResult, Invocation, RunMeta

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
