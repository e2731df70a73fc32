"""Interruptions, a killed orchestrator, and servers that crash or hang mid-cell lose nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from asyncbench.measuring.processes import ProcessLedger, reap_orphans
from asyncbench.measuring.run import RunSettings, run_matrix
from asyncbench.storing.store import RunDir

pytestmark = pytest.mark.slow
ASYNCBENCH = str(Path(sys.executable).with_name("asyncbench"))


def start_run(out: Path, *extra: str) -> subprocess.Popen:
    argv = [ASYNCBENCH, "run", "--scenario", "sleep", "--users", "2", "--duration", "2",
            "--warmup", "0.5", "--repeat", "1", "--workers", "2", "--out", str(out),
            *extra]  # fmt: skip
    with open(out.parent / f"{out.name}.log", "w") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)


def descendants(pid: int) -> set[int]:
    try:
        return {p.pid for p in psutil.Process(pid).children(recursive=True)}
    except psutil.Error:
        return set()


def alive(pids: set[int]) -> set[int]:
    def running(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    return {pid for pid in pids if running(pid)}


def wait_for_cell_in_progress(proc: subprocess.Popen, out: Path, done_cells: int) -> set[int]:
    """Wait until ``done_cells`` are stored and Locust runs the next; return every pid seen."""
    seen: set[int] = set()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, (out.parent / f"{out.name}.log").read_text()
        seen |= descendants(proc.pid)
        results = out / "latest" / "results.csv"
        stored = len(results.read_text().splitlines()) - 1 if results.exists() else 0
        names = {psutil.Process(p).name() for p in alive(descendants(proc.pid))}
        if stored >= done_cells and "locust" in names:
            time.sleep(1.0)  # let the cell's server and Locust settle in
            return seen | descendants(proc.pid)
        time.sleep(0.2)
    raise AssertionError("the run never reached the cell")


# Three cells: one stored, one interrupted, one left for --resume (all five default models
# left three to resume: 6 s more here).
INTERRUPTED_SERVERS = ("--server", "flask-blocking", "--server", "tornado-forked",
                       "--server", "tornado-coroutine")  # fmt: skip


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_stops_every_process_and_resume_finishes(tmp_path, sig):
    proc = start_run(tmp_path, *INTERRUPTED_SERVERS)
    pids = wait_for_cell_in_progress(proc, tmp_path, done_cells=1)
    proc.send_signal(sig)
    proc.wait(timeout=10)
    assert proc.returncode == 130
    deadline = time.monotonic() + 10
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(pids), "processes left behind"
    run = RunDir.open(tmp_path / "latest")
    meta = run.read_meta()
    assert meta.status == "interrupted"
    assert 1 <= len(run.results()) < 3
    assert not (run.path / "processes.json").exists()
    # The interrupted run still has a report, and `asyncbench report` rebuilds it.
    assert (run.path / "index.html").exists()
    (run.path / "index.html").unlink()
    rebuilt = subprocess.run([ASYNCBENCH, "report", str(run.path)], capture_output=True,
                             text=True, timeout=60)  # fmt: skip
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "interrupted" in (run.path / "index.html").read_text()
    if sig == signal.SIGINT:
        resumed = subprocess.run([ASYNCBENCH, "run", "--resume", str(run.path)],
                                 capture_output=True, text=True, timeout=120)  # fmt: skip
        assert resumed.returncode == 0, resumed.stderr
        results = RunDir.open(run.path).results()
        assert sorted(results["cell_id"]) == sorted(meta.planned_cells)
        assert RunDir.open(run.path).read_meta().status == "complete"


def test_sigkilled_orchestrator_leaves_nothing_running(tmp_path):
    proc = start_run(tmp_path, "--server", "flask-blocking", "--server", "tornado-forked")
    pids = wait_for_cell_in_progress(proc, tmp_path, done_cells=0)
    run_path = (tmp_path / "latest").resolve()
    ledger = json.loads((run_path / "processes.json").read_text())
    assert {"locust", "flask-blocking", "tornado-forked"} & {p["name"] for p in ledger["processes"]}
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(pids), "children outlived a SIGKILLed orchestrator"
    # The next run notices the dead one: its ledger is cleared and its status corrected.
    subprocess.run([ASYNCBENCH, "run", "--scenario", "hello", "--server", "tornado-coroutine",
                    "--users", "1", "--duration", "0.5", "--warmup", "0", "--repeat", "1",
                    "--out", str(tmp_path), "--new"], check=True, capture_output=True,
                   timeout=60)  # fmt: skip
    assert not (run_path / "processes.json").exists()
    assert RunDir.open(run_path).read_meta().status == "interrupted"


def test_reap_orphans_kills_survivors_of_a_dead_orchestrator(tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    survivor = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        dead = tmp_path / "dead.json"
        dead.write_text(json.dumps({
            "orchestrator": {"pid": gone.pid, "create_time": 1.0},
            "processes": [{"name": "server", "pid": survivor.pid, "pgid": survivor.pid,
                           "create_time": psutil.Process(survivor.pid).create_time()}],
        }))  # fmt: skip
        live = tmp_path / "live.json"
        with ProcessLedger(live) as ledger:
            ledger.add("server", survivor.pid)
            assert reap_orphans([live]) == [] and live.exists()  # our own: not touched
            assert reap_orphans([dead]) == [f"server (pid {survivor.pid})"]
        survivor.wait(timeout=5)
        assert survivor.returncode == -signal.SIGKILL
        assert not dead.exists()
    finally:
        survivor.kill()


def _find_server(model_module: str, want_worker: bool, timeout_s: float = 60) -> psutil.Process:
    """A process of ours serving ``model_module`` (a worker, or the top process) under load."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ours = psutil.Process(os.getpid()).children(recursive=True)
        names = {p.name() for p in ours if p.is_running()}
        for p in ours:
            try:
                is_server = any(model_module in part for part in p.cmdline())
                parent_is_server = any(model_module in part for part in p.parent().cmdline())
            except psutil.Error:
                continue
            if is_server and parent_is_server == want_worker and "locust" in names:
                return p
        time.sleep(0.1)
    raise AssertionError(f"no {model_module} process under load appeared")


def _run_with_fault(tmp_path, fault) -> RunDir:
    settings = RunSettings(
        scenarios=("sleep",), servers=("flask-blocking", "tornado-coroutine"), users=(4,),
        duration_s=3, warmup_s=0.5, repeat=1, workers=2, reports_dir=str(tmp_path), seed=2,
        new=True,
    )  # fmt: skip
    injector = threading.Thread(target=fault, daemon=True)
    injector.start()
    started = time.monotonic()
    run = run_matrix(settings)
    assert time.monotonic() - started < 60, "a faulty cell must end within its bound"
    injector.join(timeout=5)
    return run


def test_worker_killed_mid_cell_fails_that_cell_only(tmp_path):
    def kill_worker():
        time.sleep(1.5)
        _find_server("servers.flask_blocking", want_worker=True).kill()

    results = _run_with_fault(tmp_path, kill_worker).results().set_index("server")
    assert results.loc["flask-blocking", "status"] == "failed"
    assert "lost worker" in results.loc["flask-blocking", "reason"]
    assert results.loc["tornado-coroutine", "status"] == "ok"


def test_hung_server_fails_that_cell_only(tmp_path):
    def freeze_server():
        time.sleep(1.5)
        _find_server("servers.tornado_coroutine", want_worker=False).suspend()

    results = _run_with_fault(tmp_path, freeze_server).results().set_index("server")
    assert results.loc["tornado-coroutine", "status"] == "failed"
    assert "stopped answering" in results.loc["tornado-coroutine", "reason"]
    assert results.loc["flask-blocking", "status"] == "ok"
