"""What is watched while load runs: every component's CPU and memory once a second (with the
servers' gauges and the accept queue), and a py-spy flame graph of the server's window."""

from __future__ import annotations

import contextlib
import math
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import psutil

from asyncbench.judging.resources import IDLE
from asyncbench.measuring.processes import listen_queues

SAMPLE_INTERVAL_S = 0.5  # a window has 6 or more samples (resources.window_rows picks them)
PROFILE_RATE = 200  # py-spy samples per second
PROFILE_GRACE_S = 10.0  # py-spy writes its flame graph after the window


class ResourceSampler:
    """Once a second, CPU and memory of each component, and MariaDB's connections.

    ``components`` maps a name (server, locust, upstream, mariadb) to a function returning that
    component's process groups (one list of processes per group, e.g. a process tree, or one
    per Locust process). CPU is in percent of one core: ``cpu_<name>`` sums every group, and
    ``cpu_<name>_max`` is the busiest group, since a single process saturates at one core.
    ``db_threads`` returns MariaDB's ``Threads_connected`` or None; each of ``gauges`` a value
    stored under its name (e.g. the requests each serving process answered so far), or a dict of
    columns read together (the room's held polls and open sockets, one Redis round trip); a
    gauge that fails is stored as None. The first row, taken
    when sampling starts and before the load does, has ``phase`` ``"idle"`` and no CPU figures
    (its RSS is the server's idle baseline).
    """

    def __init__(
        self,
        components: dict[str, Callable[[], list[list[psutil.Process]]]],
        db_threads: Callable[[], int | None] | None = None,
        interval_s: float = SAMPLE_INTERVAL_S,
        gauges: dict[str, Callable[[], object]] | None = None,
    ) -> None:
        self.components = components
        self.db_threads = db_threads
        self.gauges = gauges or {}
        self.interval_s = interval_s
        self.rows: list[dict] = []
        self._procs: dict[int, psutil.Process] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="resource-sampler", daemon=True)

    def __enter__(self) -> ResourceSampler:
        psutil.cpu_percent(None)
        idle = self._sample(prime=True)
        cpu = [k for k in idle if k.startswith("cpu_")]
        self.rows.append({**idle, **dict.fromkeys(cpu, math.nan), "phase": IDLE})
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.rows.append(self._sample())

    def _sample(self, prime: bool = False) -> dict:
        row: dict = {"t": time.time(), "cpu_machine": psutil.cpu_percent(None)}
        for name, groups in self.components.items():
            usage = [self._usage(group) for group in groups()]
            cpus = [cpu for cpu, _ in usage]
            total = row[f"cpu_{name}"] = sum(cpus)  # NaN while a process of it is new
            row[f"cpu_{name}_max"] = math.nan if math.isnan(total) else max(cpus, default=0.0)
            row[f"rss_{name}_mb"] = sum(rss for _, rss in usage) / 2**20
        if self.db_threads and not prime:
            row["threads_connected"] = self.db_threads()
        for name, gauge in self.gauges.items():
            try:
                value = gauge()
                row.update(value if isinstance(value, dict) else {name: value})
            except Exception:  # a gauge's service just died: the cell's own checks say so
                row[name] = None
        return row

    def _usage(self, group: list[psutil.Process]) -> tuple[float, float]:
        """CPU since the last sample and RSS of a group; its CPU is NaN when a process in it
        is new (psutil's first reading of a process is a meaningless 0)."""
        cpu = rss = 0.0
        for proc in group:
            cached = self._procs.get(proc.pid)
            if first := cached is None:
                cached = self._procs[proc.pid] = proc
            with contextlib.suppress(psutil.Error):
                reading = cached.cpu_percent(None)
                cpu += math.nan if first else reading
                rss += cached.memory_info().rss
        return cpu, rss


def accept_queue(port: int) -> int:
    """Connections waiting to be accepted on the listening sockets of ``port``."""
    return sum(listen_queues(port))


class Profiler:
    """py-spy samples a server's whole process tree during the measured window and writes a
    flame graph (SVG). The window's start is only known once Locust has spawned, so sampling
    starts ``delay_s`` after entry (the warm-up plus spawn slack) and lasts the window."""

    def __init__(self, pid: int, out: Path, delay_s: float, duration_s: float) -> None:
        self.pid, self.out, self.delay_s, self.duration_s = pid, out, delay_s, duration_s
        self._timer: threading.Timer | None = None
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> Profiler:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._timer = threading.Timer(self.delay_s, self._start)
        self._timer.start()
        return self

    def _start(self) -> None:
        spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
        argv = [spy, "record", "--pid", str(self.pid), "--subprocesses", "--nonblocking",
                "--duration", str(max(1, round(self.duration_s))), "--rate", str(PROFILE_RATE),
                "--format", "flamegraph", "--output", str(self.out)]  # fmt: skip
        with contextlib.suppress(OSError):
            self._proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL)  # fmt: skip

    def __exit__(self, *exc) -> None:
        if self._timer:
            self._timer.cancel()
        if self._proc:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=self.duration_s + PROFILE_GRACE_S)
            if self._proc.poll() is None:
                self._proc.kill()
