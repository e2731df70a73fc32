"""The run directory: round trips, schema versions on every file, and migrations."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from asyncbench.storing.migrate import PARQUET_SCHEMA_KEY, SCHEMA_VERSION, UNKNOWN_PID, UNKNOWN_USER
from asyncbench.storing.records import CellResult, Invocation, RunMeta
from asyncbench.storing.store import RunDir, StoreError

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "small-run"


def result(cell_id: str = "sleep.tornado-coroutine.u4.r1", **changes) -> CellResult:
    base = CellResult(
        cell_id=cell_id, scenario="sleep", server="tornado-coroutine", users=4, repeat=1,
        status="ok", valid=True, reason="", endpoint="/sleep", delay_ms=100, workers=4,
        slots=None, predicted_rps=40.0, warmup_s=1, measure_s=3, rps=39.5,
    )  # fmt: skip
    return replace(base, **changes)


@pytest.fixture
def fixture_copy(tmp_path) -> RunDir:
    shutil.copytree(FIXTURE, tmp_path / "run")
    return RunDir.open(tmp_path / "run")


def test_cell_round_trip_with_versions(tmp_path):
    run = RunDir.create(tmp_path)
    meta = RunMeta(run_id=run.run_id, created=1.0)
    meta.invocations.append(Invocation(started=1.0, seed=7, settings={}, cells=["a"], command=[]))
    run.write_meta(meta)
    samples = pd.DataFrame({"start_time": [1.0, 2.0], "latency_ms": [100.0, 101.0]})
    run.save_cell(result(), samples, None)
    run.save_cell(result(rps=40.0), samples, None)  # a rerun replaces its own row
    table = run.results()
    assert len(table) == 1 and table["rps"].item() == 40.0
    assert (table["schema_version"] == SCHEMA_VERSION).all()
    stored = pq.read_table(run.samples_dir / "sleep.tornado-coroutine.u4.r1.parquet")
    assert stored.schema.metadata[PARQUET_SCHEMA_KEY] == str(SCHEMA_VERSION).encode()
    reread = RunDir.open(run.path).read_meta()
    assert reread.invocations == meta.invocations
    assert json.loads(run.meta_json.read_text())["schema_version"] == SCHEMA_VERSION


def test_version_1_fixture_is_upgraded_when_read(fixture_copy):
    meta = fixture_copy.read_meta()
    assert meta.schema_version == SCHEMA_VERSION
    for conf in meta.servers.values():
        assert "keep_alive" in conf and "client_keep_alive" not in conf
        assert conf["concurrency"] in ("workers", "event loop") and "blocking" not in conf
    assert all(isinstance(i, Invocation) for i in meta.invocations)
    table = fixture_copy.results()
    assert {"cpu_locust_max", "abandoned", "schema_version"} <= set(table.columns)
    assert (table["schema_version"] == SCHEMA_VERSION).all()
    assert (fixture_copy.samples()["user"] == UNKNOWN_USER).all()
    assert (fixture_copy.samples()["server_pid"] == UNKNOWN_PID).all()
    assert (table["process_users"].fillna("") == "").all()


def test_upgraded_fixture_is_written_back_at_the_current_version(fixture_copy):
    fixture_copy.write_meta(fixture_copy.read_meta())
    fixture_copy.save_cell(result(cell_id="sleep.tornado-coroutine.u4.r9"), None, None)
    raw = pd.read_csv(fixture_copy.results_csv)
    assert (raw["schema_version"] == SCHEMA_VERSION).all()
    assert json.loads(fixture_copy.meta_json.read_text())["schema_version"] == SCHEMA_VERSION


@pytest.mark.parametrize("version", [99, None, "2"])
def test_unknown_schema_version_is_refused_with_what_to_do(tmp_path, version):
    run = RunDir.create(tmp_path)
    run.write_meta(RunMeta(run_id=run.run_id, created=1.0))
    data = json.loads(run.meta_json.read_text())
    data["schema_version"] = version
    run.meta_json.write_text(json.dumps(data))
    with pytest.raises(StoreError, match="schema version .* use the asyncbench version"):
        RunDir.open(run.path)


def test_results_row_of_an_unknown_version_is_refused(tmp_path):
    run = RunDir.create(tmp_path)
    run.save_cell(result(), None, None)
    table = pd.read_csv(run.results_csv).assign(schema_version=SCHEMA_VERSION + 1)
    table.to_csv(run.results_csv, index=False)
    with pytest.raises(StoreError, match="results.csv has schema version"):
        run.results()
