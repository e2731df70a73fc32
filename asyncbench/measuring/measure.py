"""Measuring one cell: drive load with Locust (a subprocess), sample resources, check the work.

Locust monkey-patches the standard library when imported, so it only ever runs here as a child
process (``locust -f loadtests/locustfile.py``); its raw samples come back as a parquet file.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd

from asyncbench.measuring.processes import ManagedProcess, managed_process
from loadtests.protocol import LocustMeta, Progress, check_sample_columns, read_record

LOCUSTFILE = Path(__file__).resolve().parents[2] / "loadtests" / "locustfile.py"
SPAWN_SLACK_S = 0.5  # the window starts once spawning completes: time allowed for that
SPAWN_SLACK_PER_USER_S = 0.001
DISTRIBUTED_SLACK_S = 2.0  # workers report their spawn to the master
LOCUST_SAFETY_NET_S = 20  # Locust's own -t, beyond our timed stop: only if ours never fires
LOCUST_BOUND_SLACK_S = 30  # how long past its plan a Locust run may take before it fails
REMOTE_WORKERS_WAIT_S = 60  # remote workers get this long to join a cell
REMOTE_WORKER_JOIN_S = 30  # a worker alive this long joined a cell, even without a quit message
WATCH_POLL_S = 0.1
VERIFY_TIMEOUT_S = 30.0


class CellFailed(RuntimeError):
    """The cell could not be measured (verification failed, a process died, a bound ran out)."""


@dataclass(frozen=True)
class LoadPlan:
    """One Locust run: who to hit, with how many users (or at what rate), for how long."""

    url: str
    path: str
    users: int
    warmup_s: float  # the longest warm-up: it ends sooner once every user settled
    measure_s: float  # the window, or an adaptive one's cap
    stop_timeout_s: float  # at the end, in-flight requests get this long to finish
    measure_min_s: float = 0.0  # an adaptive window's floor (0: a fixed window)
    own_slots: bool = False  # every user holds a slot: its precision is read from its cycles
    settle_cycles: int = 0  # requests (messages) per user that end the warm-up; 0: fixed
    drain_s: float = 0.0  # a room: at most this long for messages in flight, then stop at once
    rate: float = 0.0  # open loop: requests per second (0: closed loop)
    arrival: str = "constant"
    spawn_rate: float | None = None  # users per second; None: all users at once
    user_classes: tuple[str, ...] = ("BenchUser",)  # the locustfile's users this run starts
    extra_args: tuple[str, ...] = ()  # the workload's own locustfile options
    seed: int = 0
    local_workers: int = 0  # Locust worker processes on this machine (0: one standalone process)
    remote_workers: int = 0  # workers joining from other machines (``loadgen-worker``)
    master_bind: str = "127.0.0.1"
    master_port: int = 0

    @property
    def run_time_s(self) -> float:
        # The window starts once spawning completes (all users at once: milliseconds for a
        # hundred, longer for an open loop's thousand senders); the slack covers that.
        slack = SPAWN_SLACK_S + self.users * SPAWN_SLACK_PER_USER_S + self.spawn_s
        slack += DISTRIBUTED_SLACK_S if self.distributed else 0.0
        return round(slack + self.warmup_s + self.measure_s, 2)

    @property
    def finish_s(self) -> float:
        """After the run time: the drain, then the stop timeout."""
        return self.drain_s + self.stop_timeout_s

    @property
    def spawn_s(self) -> float:
        """How long spawning takes: Locust starts ``floor(rate)`` users each second."""
        if self.spawn_rate is None or self.spawn_rate >= self.users:
            return 0.0
        return math.ceil(self.users / max(1, math.floor(self.spawn_rate)))

    @property
    def locust_spawn_rate(self) -> float:
        # A rate of at least ``users`` makes Locust dispatch every user in one step.
        return self.spawn_rate if self.spawn_rate is not None else max(self.users, 1)

    @property
    def distributed(self) -> bool:
        return self.local_workers + self.remote_workers > 0


@dataclass(frozen=True)
class LocustOutcome:
    samples: pd.DataFrame
    window_start: float
    window_end: float
    locust_requests: int
    exit_code: int
    workers: tuple[str, ...]
    abandoned: int  # requests started in the window and still unanswered when Locust stopped
    stuck: int  # requests started before the window ended and still unanswered at the stop
    deliveries: pd.DataFrame | None = None  # a room's: one row per message a member received
    # Epoch seconds of the run's stages, for the time accounting (``cell.PhaseClock``).
    launched: float = 0.0  # the Locust process was started
    test_start: float = 0.0  # Locust had imported and parsed, and began spawning
    spawn_complete: float = 0.0
    test_stop: float = 0.0  # the window's last answers (a room: its drain) were in; stopping
    exited: float = 0.0  # Locust had exited and its samples were read back
    window_reason: str = ""  # why the window ended (``LocustMeta.window_reason``)


def locust_command() -> str:
    return shutil.which("locust", path=str(Path(sys.executable).parent)) or "locust"


def master_argv(plan: LoadPlan, out_dir: Path) -> list[str]:
    argv = [
        locust_command(),
        "-f", str(LOCUSTFILE),
        "--headless",
        "-u", str(plan.users),
        "-r", f"{plan.locust_spawn_rate:g}",
        # A safety net only: the locustfile's own timed stop collects every worker's samples.
        "-t", f"{math.ceil(plan.run_time_s + plan.finish_s + LOCUST_SAFETY_NET_S)}s",
        "-H", plan.url,
        "--bench-path", plan.path,
        "--bench-run-time", str(plan.run_time_s),
        "--bench-warmup", str(plan.warmup_s),
        "--bench-settle-cycles", str(plan.settle_cycles),
        "--bench-measure", str(plan.measure_s),
        "--bench-measure-min", str(plan.measure_min_s),
        *(["--bench-own-slots"] if plan.own_slots else []),
        "--bench-drain", str(plan.drain_s),
        "--bench-rate", str(plan.rate),
        "--bench-arrival", plan.arrival,
        "--bench-seed", str(plan.seed),
        "--samples-out", str(out_dir / "samples.parquet"),
        "--meta-out", str(out_dir / "meta.json"),
        "--progress-out", str(out_dir / "progress.json"),
        "--deliveries-out", str(out_dir / "deliveries.parquet"),
        *plan.extra_args,
        "--only-summary",
        "--loglevel", "WARNING",
        "--exit-code-on-error", "0",
        "--stop-timeout", str(math.ceil(plan.stop_timeout_s)),
    ]  # fmt: skip
    argv += list(plan.user_classes)
    if plan.distributed:
        argv += [
            "--master",
            "--master-bind-host", plan.master_bind,
            "--master-bind-port", str(plan.master_port),
            "--expect-workers", str(plan.local_workers + plan.remote_workers),
            "--expect-workers-max-wait", str(REMOTE_WORKERS_WAIT_S),
        ]  # fmt: skip
    return argv


def worker_argv(master_host: str, master_port: int) -> list[str]:
    return [
        locust_command(), "-f", str(LOCUSTFILE), "--worker",
        "--master-host", master_host, "--master-port", str(master_port),
        "--loglevel", "WARNING",
    ]  # fmt: skip


def run_remote_worker(master_host: str, master_port: int, idle_timeout_s: float) -> None:
    """Join cells as a Locust worker until ``idle_timeout_s`` passes without one.

    A Locust worker exits when its master quits, and the harness starts one master per cell, so
    this starts a fresh worker for each cell.
    """
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < idle_timeout_s:
        with tempfile.TemporaryDirectory(prefix="asyncbench-worker-") as tmp:
            log = Path(tmp) / "worker.log"
            started = time.monotonic()
            with managed_process(worker_argv(master_host, master_port), name="locust-worker",
                                 log_path=log) as proc:  # fmt: skip
                while proc.alive():
                    time.sleep(0.5)
            joined = "Got quit message from master" in log.read_text(errors="replace")
            if joined or time.monotonic() - started > REMOTE_WORKER_JOIN_S:
                idle_since = time.monotonic()
        time.sleep(1)


@contextlib.contextmanager
def prestarted_locust(log_path: Path) -> Iterator[ManagedProcess]:
    """A standalone Locust process with its imports done, waiting for its command line
    (``loadtests/prestart.py``); ``run_locust`` hands it one. Stopped at the end if unused."""
    argv = [sys.executable, "-m", "loadtests.prestart"]
    with managed_process(argv, name="locust", log_path=log_path, stdin_pipe=True,
                         grace_s=1.0) as proc:  # fmt: skip
        try:
            yield proc
        finally:
            with contextlib.suppress(OSError):
                proc.popen.stdin.close()  # unused: end of input makes it exit


def _hand_over(proc: ManagedProcess, argv: list[str], on_start) -> ManagedProcess:
    """Give a prestarted Locust its command line (everything after the program's name)."""
    try:
        proc.popen.stdin.write(json.dumps(argv[1:]).encode() + b"\n")
        proc.popen.stdin.close()
    except OSError as exc:
        raise CellFailed(f"the prestarted Locust process is gone: {exc}") from None
    if on_start:
        on_start(proc)
    return proc


def run_locust(
    plan: LoadPlan,
    out_dir: Path,
    *,
    log_dir: Path,
    log_name: str,
    on_start: Callable[[ManagedProcess], None] | None = None,
    watch: Callable[[Progress | None], str | None] | None = None,
    prestarted: ManagedProcess | None = None,
) -> LocustOutcome:
    """Run Locust headless to completion; ``watch`` is polled and may abort with a reason.

    With workers, the master and each local worker are separate processes; ``on_start`` sees
    every one of them (for resource sampling). A standalone run uses ``prestarted`` (a
    ``prestarted_locust``) when given one.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    launched = time.time()
    bound_s = plan.run_time_s + plan.finish_s + LOCUST_BOUND_SLACK_S
    bound_s += REMOTE_WORKERS_WAIT_S if plan.remote_workers else 0
    with contextlib.ExitStack() as stack:
        if prestarted is not None and not plan.distributed:
            master = _hand_over(prestarted, master_argv(plan, out_dir), on_start)
            stack.callback(master.stop, 1.0)
        else:
            master = stack.enter_context(
                managed_process(master_argv(plan, out_dir), name="locust",
                                log_path=log_dir / f"{log_name}.locust.log", on_start=on_start)
            )  # fmt: skip
        for i in range(plan.local_workers):
            connect_host = "127.0.0.1" if plan.master_bind in ("0.0.0.0", "*") else plan.master_bind
            stack.enter_context(
                managed_process(worker_argv(connect_host, plan.master_port),
                                name=f"locust-worker-{i + 1}", on_start=on_start,
                                log_path=log_dir / f"{log_name}.locust-worker-{i + 1}.log")
            )  # fmt: skip
        deadline = time.monotonic() + bound_s
        written = out_dir / "meta.json"  # written last: the samples are complete
        while master.alive() and not written.exists():
            if time.monotonic() > deadline:
                raise CellFailed(f"Locust did not finish within {bound_s:.0f} s")
            reason = watch(_read_progress(out_dir / "progress.json")) if watch else None
            if reason:
                raise CellFailed(reason)
            with contextlib.suppress(subprocess.TimeoutExpired):
                master.popen.wait(WATCH_POLL_S)  # returns as soon as Locust exits
        if written.exists():
            # Its results are on disk: its interpreter's shutdown is nobody's wait (0.2-0.3 s)
            master.stop(0)
    return _collect(plan, out_dir, master, launched)


def _collect(
    plan: LoadPlan, out_dir: Path, proc: ManagedProcess, launched: float
) -> LocustOutcome:
    meta_path, samples_path = out_dir / "meta.json", out_dir / "samples.parquet"
    if not meta_path.exists() or not samples_path.exists():
        tail = " | ".join(proc.log_tail(4))
        raise CellFailed(f"Locust exited ({proc.popen.returncode}) without results: {tail}")
    meta: LocustMeta = read_record(meta_path, LocustMeta)
    if meta.spawn_complete is None:
        raise CellFailed("Locust never finished spawning its users (did the workers connect?)")
    if meta.window_start is None or meta.window_end is None:
        raise CellFailed("Locust stopped before the measured window began")
    window_start, window_end = meta.window_start, meta.window_end
    if meta.test_stop is not None and window_end > meta.test_stop:
        raise CellFailed("Locust stopped before the measured window ended")
    samples = pd.read_parquet(samples_path)
    check_sample_columns(samples.columns, str(samples_path))
    deliveries_path = out_dir / "deliveries.parquet"
    deliveries = pd.read_parquet(deliveries_path) if deliveries_path.exists() else None
    return LocustOutcome(
        samples=samples,
        window_start=window_start,
        window_end=window_end,
        locust_requests=meta.locust_requests,
        exit_code=proc.popen.returncode,
        workers=tuple(meta.workers),
        abandoned=sum(window_start <= t < window_end for t in meta.abandoned),
        stuck=sum(t < window_end for t in meta.abandoned),
        deliveries=deliveries,
        launched=launched,
        test_start=meta.test_start,
        spawn_complete=meta.spawn_complete,
        test_stop=meta.test_stop or 0.0,
        exited=time.time(),
        window_reason=meta.window_reason,
    )


def _read_progress(path: Path) -> Progress | None:
    """The latest progress record; None before Locust wrote its first one."""
    if not path.exists():
        return None
    return read_record(path, Progress)


def verify_equivalence(
    url: str,
    path: str,
    expected: bytes,
    delay_ms: int,
    work_counter: Callable[[], int] | None = None,
    timeout_s: float = VERIFY_TIMEOUT_S,
) -> float:
    """Check that the server answers ``path`` correctly and really did the work.

    The body must equal the contract's ``expected`` bytes, the answer must have taken at least
    the delay, and ``work_counter`` (upstream hits, MariaDB ``Com_select``) must have risen.
    Returns the elapsed milliseconds; raises ``CellFailed`` with the reason otherwise.
    """
    before = work_counter() if work_counter else 0
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
    started = time.perf_counter()
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
    except OSError as exc:
        raise CellFailed(f"verification request failed: {exc}") from None
    finally:
        conn.close()
    elapsed_ms = (time.perf_counter() - started) * 1000
    if response.status != 200:
        raise CellFailed(f"verification: {path} answered {response.status}: {body[:120]!r}")
    if body != expected:
        raise CellFailed(f"verification: {path} answered an unexpected body {body[:120]!r}")
    if elapsed_ms < delay_ms:
        raise CellFailed(f"verification: {path} took {elapsed_ms:.1f} ms, less than {delay_ms} ms")
    if work_counter and work_counter() <= before:
        raise CellFailed(f"verification: {path} answered but the backing service saw no work")
    return elapsed_ms


