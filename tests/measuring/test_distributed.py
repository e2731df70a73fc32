"""Load from several Locust processes, and from another host (Linux network namespaces)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest

from asyncbench.measuring.processes import http_ok, managed_process
from asyncbench.measuring.run import RunSettings, run_matrix
from asyncbench.storing.store import RunDir

pytestmark = pytest.mark.slow
ASYNCBENCH = str(Path(sys.executable).with_name("asyncbench"))
# Link-local addresses: they cannot be routed beyond the veth pair the test creates.
SERVER_ADDR, LOAD_ADDR = "169.254.231.1", "169.254.231.2"


def hello_run(tmp_path: Path, locust_workers: int) -> tuple[dict, pd.DataFrame]:
    """hello on tornado-coroutine at a level that saturates one Locust process here."""
    settings = RunSettings(
        scenarios=("hello",), servers=("tornado-coroutine",), users=(64,), duration_s=3,
        warmup_s=1, repeat=1, reports_dir=str(tmp_path / str(locust_workers)), seed=1,
        new=True, locust_workers=locust_workers,
    )  # fmt: skip
    run = run_matrix(settings)
    return run.results().iloc[0].to_dict(), run.samples()


def test_local_workers_share_the_load_and_merge_every_sample(tmp_path):
    single, single_samples = hello_run(tmp_path, 0)
    multi, multi_samples = hello_run(tmp_path, 2)
    assert multi["locust_processes"] == 3
    # Nothing lost in the merge: the master's count equals the rows in the samples file.
    assert multi["locust_requests"] == multi["recorded_samples"] == len(multi_samples)
    assert single["locust_requests"] == len(single_samples)
    # Each worker carries a real share, so the busiest Locust process works well below what one
    # process alone had to: that headroom is what lets workers go past one process's ceiling.
    shares = multi_samples["worker"].value_counts(normalize=True)
    assert len(shares) == 2 and shares.min() > 0.3, shares
    assert multi["cpu_locust_max"] < 0.8 * single["cpu_locust_max"], (single, multi)
    # On 2 cores this cell is bound by the machine (server and Locust share both cores), so more
    # Locust processes cannot add throughput here; they must not break it either.
    assert multi["rps"] > 0.6 * single["rps"], (single["rps"], multi["rps"])


def _netns_available() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if not shutil.which("ip"):
        return "needs iproute2's `ip`"
    probe = f"abprobe-{uuid.uuid4().hex[:6]}"
    if subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode != 0:
        return "`ip netns add` is not permitted here"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True)
    return None


@pytest.fixture
def two_hosts():
    """Two network namespaces joined by a veth pair: a server host and a load host."""
    reason = _netns_available()
    if reason:
        pytest.skip(reason)
    tag = uuid.uuid4().hex[:6]
    server, load = f"ab-srv-{tag}", f"ab-load-{tag}"
    steps = [
        ["ip", "netns", "add", server], ["ip", "netns", "add", load],
        ["ip", "link", "add", f"abs{tag}", "type", "veth", "peer", "name", f"abl{tag}"],
        ["ip", "link", "set", f"abs{tag}", "netns", server],
        ["ip", "link", "set", f"abl{tag}", "netns", load],
        ["ip", "-n", server, "addr", "add", f"{SERVER_ADDR}/30", "dev", f"abs{tag}"],
        ["ip", "-n", load, "addr", "add", f"{LOAD_ADDR}/30", "dev", f"abl{tag}"],
        ["ip", "-n", server, "link", "set", f"abs{tag}", "up"],
        ["ip", "-n", load, "link", "set", f"abl{tag}", "up"],
        ["ip", "-n", server, "link", "set", "lo", "up"],
        ["ip", "-n", load, "link", "set", "lo", "up"],
    ]  # fmt: skip
    try:
        for step in steps:
            subprocess.run(step, check=True, capture_output=True)
        yield server, load
    finally:
        for ns in (server, load):
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True)


def test_server_and_load_on_different_hosts(two_hosts, tmp_path):
    server_ns, load_ns = two_hosts
    in_server = ["ip", "netns", "exec", server_ns]
    serve = [*in_server, ASYNCBENCH, "serve", "tornado-coroutine", "--host", SERVER_ADDR,
             "--port", "8000"]  # fmt: skip
    worker = [*in_server, ASYNCBENCH, "loadgen-worker", "--master", f"{LOAD_ADDR}:5557",
              "--idle-timeout", "60"]  # fmt: skip
    target = f"http://{SERVER_ADDR}:8000"
    run = [
        "ip", "netns", "exec", load_ns, ASYNCBENCH, "run", "--target", target,
        "--server", "tornado-coroutine", "--scenario", "sleep", "--users", "8",
        "--duration", "3", "--warmup", "1", "--repeat", "1", "--out", str(tmp_path),
        "--expect-workers", "1", "--locust-master-bind", LOAD_ADDR,
    ]  # fmt: skip
    check = f"import urllib.request; urllib.request.urlopen('{target}/health', timeout=1)"
    probe = [*in_server, sys.executable, "-c", check]

    def served() -> bool:
        return subprocess.run(probe, capture_output=True).returncode == 0

    assert not http_ok(f"{target}/health", timeout_s=0.5)(), "the address must not exist here"
    with managed_process(serve, name="server", ready=served, ready_timeout_s=30), \
            managed_process(worker, name="loadgen-worker"):  # fmt: skip
        finished = subprocess.run(run, capture_output=True, text=True, timeout=180)
    assert finished.returncode == 0, finished.stderr[-2000:]
    stored = RunDir.open(tmp_path / "latest")
    row = stored.results().iloc[0]
    assert row["valid"], row["reason"]
    assert row["target"] == target and row["locust_processes"] == 2
    assert row["locust_requests"] == row["recorded_samples"] == len(stored.samples())
    assert row["rps"] == pytest.approx(80, rel=0.15)  # min(8 users, ∞) / 100 ms
    meta = stored.read_meta()
    assert meta.servers["tornado-coroutine"]["host"] == SERVER_ADDR
    assert meta.services["locust"]["remote_workers"] == 1
