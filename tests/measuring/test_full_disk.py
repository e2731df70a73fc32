"""A full disk loses nothing: a real run on a small tmpfs that fills mid-run, then resumed.

The disk is filled by another writer (a ballast file, as a log or a download would) once the
first cell is stored, so it fills mid-run at any request rate. The run stops with one line,
every cell it finished is whole and readable (its samples, its resource samples and its results
row), no ``.tmp`` is left, ``run.json`` says why it stopped; once the tmpfs is made bigger,
``asyncbench run --resume`` completes the run and the report.
Needs root (``mount -t tmpfs``); skipped with the reason otherwise.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from asyncbench.storing.store import RunDir

pytestmark = pytest.mark.slow  # real runs

# 4 cells of /hello and the 2 copies of hello's A/A pair (tornado-coroutine at 1 user). How
# fast a machine serves /hello decides how many bytes a cell writes, so the disk is not left to
# fill by itself (CI's slower machine fitted all 10 cells of a longer run in 1 MiB): the ballast
# fills it after the first cell.
RUN = ["run", "--scenario", "hello", "--server", "tornado-coroutine", "--users", "1,2",
       "--duration", "1", "--warmup", "0.5", "--repeat", "2", "--seed", "1"]  # fmt: skip
CELLS = 6  # 2 levels x 2 repeats + the A/A pair's 2 copies
SMALL, BIG = "1m", "32m"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SMALL}", "tmpfs", str(mount)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill_after_first_cell(out: Path, stop: threading.Event) -> None:
    """Once a run under ``out`` has stored a cell, write a ballast file until the disk is full."""
    deadline = time.monotonic() + 300
    while not any(out.glob("*/results.csv")):
        if stop.wait(0.02) or time.monotonic() > deadline:
            return
    with contextlib.suppress(OSError), (out / "ballast").open("wb") as ballast:
        while not stop.is_set():
            ballast.write(bytes(64 * 1024))
            ballast.flush()


def cli(*args: str, token: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "asyncbench.cli", *args], capture_output=True, text=True,
        timeout=300, env={**os.environ, "ASYNCBENCH_FUZZ_TOKEN": token},
    )  # fmt: skip


def leftover_processes(token: str) -> list[int]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("ASYNCBENCH_FUZZ_TOKEN") == token:
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


def assert_cells_whole(run: RunDir) -> set[str]:
    """Every stored cell has its results row and readable samples matching it; no stray file."""
    table = run.results()
    kept = set(table["cell_id"])
    samples = {p.stem for p in run.samples_dir.glob("*.parquet")}
    assert samples == set(table.loc[table["recorded_samples"] > 0, "cell_id"])
    for row in table.itertuples():
        if row.recorded_samples:
            stored = pq.read_table(run.samples_dir / f"{row.cell_id}.parquet")
            assert stored.num_rows == row.recorded_samples, row.cell_id
    assert not list(run.path.rglob("*.tmp")) and not (run.path / ".reserve").exists()
    return kept


def test_a_run_that_fills_its_disk_stops_cleanly_and_resumes(small_disk: Path) -> None:
    out = small_disk / "reports"
    token = uuid.uuid4().hex
    out.mkdir()
    stop = threading.Event()
    filler = threading.Thread(target=fill_after_first_cell, args=(out, stop), daemon=True)
    filler.start()
    try:
        stopped = cli(*RUN, "--out", str(out), token=token)
    finally:
        stop.set()
        filler.join(timeout=10)
    errors = [line for line in stopped.stderr.splitlines() if "error" in line.lower()]
    print(f"\nfull disk: exit {stopped.returncode}; {errors}")
    assert stopped.returncode == 2 and "Traceback" not in stopped.stderr, stopped.stderr
    assert len(errors) == 1 and errors[0].startswith("asyncbench: error: no space left"), errors
    assert "--resume" in errors[0]
    assert not leftover_processes(token)

    run = RunDir.open((out / "latest").resolve())
    meta = run.read_meta()
    assert meta.status == "failed" and meta.reason in errors[0], meta.reason
    kept = assert_cells_whole(run)
    print(f"full disk: {len(kept)} of {CELLS} cells kept and whole; run.json: {meta.reason}")
    assert 1 <= len(kept) < CELLS

    subprocess.run(["mount", "-o", f"remount,size={BIG}", str(small_disk)], check=True)
    resumed = cli("run", "--resume", str(run.path), token=token)
    print(f"resume: exit {resumed.returncode}; {resumed.stderr.strip()[-300:]}")
    assert resumed.returncode == 0, resumed.stderr
    meta = run.read_meta()
    assert meta.status == "complete" and not meta.reason
    assert len(assert_cells_whole(run)) == CELLS and kept <= set(run.results()["cell_id"])
    assert (run.path / "index.html").exists()
    assert not leftover_processes(token)
