"""A damaged run directory is named, not crashed on; a full disk leaves nothing half-written.

The damage is done to a copy of the small real fixture run: a parquet file cut short, an edited
``results.csv``, a ``run.json`` that is not JSON or of an unknown version. ``asyncbench report``
and ``asyncbench run --resume`` must exit 2 with one line naming the file and what to do. The
full disk is simulated here (``ENOSPC`` from the writer); ``test_full_disk.py`` fills a real one.
"""

from __future__ import annotations

import errno
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from asyncbench import cli
from asyncbench.storing import atomic
from asyncbench.storing.records import CellResult, RunMeta
from asyncbench.storing.store import DiskFullError, RunDir, StoreError

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "small-run"
ERROR = "asyncbench: error: "


@pytest.fixture
def run_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)  # `run --resume` looks for dead runs under ./reports
    shutil.copytree(FIXTURE, tmp_path / "run")
    return tmp_path / "run"


def one_error_line(capsys, argv: list[str]) -> str:
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(ERROR), captured.err
    assert "Traceback" not in captured.out + captured.err
    return lines[0]


def edit_results(run: Path, edit) -> None:
    table = pd.read_csv(run / "results.csv")
    edit(table).to_csv(run / "results.csv", index=False)


def set_rps(table: pd.DataFrame) -> pd.DataFrame:
    table["rps"] = table["rps"].astype(object)
    table.loc[2, "rps"] = "fast"
    return table


def set_status(table: pd.DataFrame) -> pd.DataFrame:
    table.loc[0, "status"] = "great"
    return table


RESULTS_DAMAGE = {
    "a word where a number belongs": (lambda t: set_rps(t), "row 4, column rps"),
    "a key column removed": (lambda t: t.drop(columns=["cell_id"]), "missing column(s) cell_id"),
    "an unknown status": (lambda t: set_status(t), "row 2: status 'great'"),
    "a row twice": (lambda t: pd.concat([t, t.iloc[:1]]), "appears twice"),
    "an unknown version": (lambda t: t.assign(schema_version=99), "schema version 99"),
    "a version that is no number": (lambda t: t.assign(schema_version="v3"), "schema_version"),
}


@pytest.mark.parametrize("command", ["report", "resume"])
@pytest.mark.parametrize("damage", sorted(RESULTS_DAMAGE))
def test_an_edited_results_csv_is_named_with_what_to_do(run_dir, capsys, command, damage):
    edit, expected = RESULTS_DAMAGE[damage]
    edit_results(run_dir, edit)
    line = one_error_line(capsys, argv(command, run_dir))
    assert str(run_dir / "results.csv") in line and expected in line, line


@pytest.mark.parametrize("command", ["report", "resume"])
@pytest.mark.parametrize("content", [b"", b"\x00\xff\xfe garbage \x81", b"a,b\n1,2,3,4\n"])
def test_a_results_csv_that_is_no_table_is_named(run_dir, capsys, command, content):
    (run_dir / "results.csv").write_bytes(content)
    line = one_error_line(capsys, argv(command, run_dir))
    assert str(run_dir / "results.csv") in line and "--resume" in line, line


@pytest.mark.parametrize("folder", ["samples.parquet", "resources.parquet"])
def test_a_truncated_parquet_file_is_named_with_what_to_do(run_dir, capsys, folder):
    victim = sorted((run_dir / folder).glob("*.parquet"))[1]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    line = one_error_line(capsys, ["report", str(run_dir)])
    assert str(victim) in line and "delete it" in line and "--resume" in line, line


@pytest.mark.parametrize("command", ["report", "resume"])
@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"run_id": "x", "created": ', "not readable JSON"),
        (b"\xff\xfe\x00", "not readable JSON"),
        (b"[1, 2]", "a JSON list"),
        (b'{"run_id": "x", "created": 1, "schema_version": 99}', "schema version 99"),
        (b'{"run_id": "x", "created": 1, "schema_version": 3, "invocations": "x"}', "invocations"),
        (b'{"run_id": "x", "created": 1, "schema_version": 3, "invocations": [{"seed": 1}]}',
         "invocations[0] lacks"),
        (b'{"run_id": "x", "created": "yesterday", "schema_version": 3}', "run.json.created"),
    ],
)  # fmt: skip
def test_a_damaged_run_json_is_named(run_dir, capsys, command, content, expected):
    (run_dir / "run.json").write_bytes(content)
    line = one_error_line(capsys, argv(command, run_dir))
    assert str(run_dir / "run.json") in line and expected in line, line


def test_a_stored_invocation_that_cannot_be_planned_again_is_named(run_dir, capsys):
    data = json.loads((run_dir / "run.json").read_text())
    data["invocations"][-1]["settings"] = {"repeat": "twice"}
    (run_dir / "run.json").write_text(json.dumps(data))
    line = one_error_line(capsys, argv("resume", run_dir))
    assert str(run_dir / "run.json") in line and "planned again" in line, line


def argv(command: str, run_dir: Path) -> list[str]:
    return ["report", str(run_dir)] if command == "report" else ["run", "--resume", str(run_dir)]


# --- A full disk while saving a cell ------------------------------------------------------------


def cell(cell_id: str = "sleep.tornado-coroutine.u4.r1", **changes) -> CellResult:
    base = CellResult(
        cell_id=cell_id, scenario="sleep", server="tornado-coroutine", users=4, repeat=1,
        status="ok", valid=True, reason="", endpoint="/sleep", delay_ms=100, workers=4,
        slots=None, predicted_rps=40.0, warmup_s=1, measure_s=3, rps=39.5,
    )  # fmt: skip
    return replace(base, **changes)


def fill_disk_after(monkeypatch, writes: int) -> None:
    """Let ``writes`` files be written, then fail every write with ENOSPC (after a few bytes)."""
    real = atomic._write_synced
    count = {"n": 0}

    def write(path: Path, data: bytes) -> None:
        count["n"] += 1
        if count["n"] > writes:
            path.write_bytes(data[:10])  # the partial file the disk had room for
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(atomic, "_write_synced", write)


@pytest.mark.parametrize("writes", [0, 1, 2])
def test_a_cell_is_stored_whole_or_not_at_all_when_the_disk_fills(tmp_path, monkeypatch, writes):
    run = RunDir.create(tmp_path)
    run.write_meta(RunMeta(run_id=run.run_id, created=1.0))
    samples = pd.DataFrame({"start_time": [1.0, 2.0], "latency_ms": [100.0, 101.0]})
    run.save_cell(cell(), samples, samples)
    before = {p: p.read_bytes() for p in run.path.rglob("*") if p.is_file()}
    fill_disk_after(monkeypatch, writes)
    with pytest.raises(DiskFullError, match="no space left"):
        run.save_cell(cell("sleep.tornado-coroutine.u8.r1", users=8), samples, samples)
    after = {p: p.read_bytes() for p in run.path.rglob("*") if p.is_file()}
    assert after == before  # nothing replaced, nothing added, no .tmp left
    assert list(run.results()["cell_id"]) == ["sleep.tornado-coroutine.u4.r1"]


def test_run_json_is_replaced_whole_or_kept_when_the_disk_fills(tmp_path, monkeypatch):
    run = RunDir.create(tmp_path)
    run.write_meta(RunMeta(run_id=run.run_id, created=1.0, status="running"))
    fill_disk_after(monkeypatch, 0)
    with pytest.raises(DiskFullError):
        run.write_meta(RunMeta(run_id=run.run_id, created=1.0, status="complete"))
    assert run.read_meta().status == "running"
    assert not list(run.path.glob("*.tmp"))


def test_a_disk_full_error_is_a_store_error():
    assert issubclass(DiskFullError, StoreError)  # so the CLI says it in one line
