"""Child processes the harness owns: started in their own process group, always reaped.

Every server, the upstream, MariaDB and Locust run through ``managed_process``. On any exit from
the ``with`` block (normal, exception, Ctrl-C) the whole process group gets SIGTERM, then SIGKILL
after a grace period, and any descendant that left the group is killed too. Children also get
``PR_SET_PDEATHSIG`` so that a SIGKILLed orchestrator does not leave them running.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from asyncbench.storing.atomic import write_atomic

_PR_SET_PDEATHSIG = 1
try:
    _libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
except OSError:  # pragma: no cover - non-glibc platforms
    _libc = None


class ProcessError(RuntimeError):
    """A child process failed to start, to become ready, or died.

    ``summary`` is one line saying which; ``detail`` holds the process's last log lines.
    """

    def __init__(self, summary: str, detail: list[str] | None = None) -> None:
        self.summary, self.detail = summary, list(detail or [])
        super().__init__("\n".join([summary, *self.detail]))


def log_tail(path: Path | None, lines: int = 8) -> list[str]:
    """The last ``lines`` lines of a log file (none if it does not exist)."""
    if not path:
        return []
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace").strip().splitlines()[-lines:]
    return []


class ProcessLedger:
    """A file listing every live process the orchestrator started (``processes.json``).

    If the orchestrator is SIGKILLed, its children die with it (``PR_SET_PDEATHSIG``), but not
    always their descendants; the next run reads the ledgers of dead orchestrators and reaps what
    is left (``reap_orphans``). Entries carry the process start time, so a recycled PID is never
    killed by mistake.
    """

    active: ProcessLedger | None = None  # the ledger managed_process reports to, if any

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.entries: dict[int, dict] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> ProcessLedger:
        ProcessLedger.active = self
        self._write()
        return self

    def __exit__(self, *exc) -> None:
        ProcessLedger.active = None
        self.path.unlink(missing_ok=True)

    def add(self, name: str, pid: int) -> None:
        with self._lock, contextlib.suppress(psutil.Error):
            self.entries[pid] = {"name": name, "pid": pid, "pgid": pid,
                                 "create_time": psutil.Process(pid).create_time()}  # fmt: skip
            self._write()

    def remove(self, pid: int) -> None:
        with self._lock:
            self.entries.pop(pid, None)
            self._write()

    def _write(self) -> None:
        payload = {"orchestrator": {"pid": os.getpid(), "create_time": _create_time(os.getpid())},
                   "processes": list(self.entries.values())}  # fmt: skip
        write_atomic(self.path, json.dumps(payload, indent=1).encode())


def reap_orphans(ledger_paths: list[Path]) -> list[str]:
    """Kill what dead orchestrators left behind; return a line per process reaped."""
    reaped = []
    for path in ledger_paths:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        owner = data.get("orchestrator", {})
        if _same_process(owner.get("pid"), owner.get("create_time")):
            continue  # its orchestrator is alive: not ours to touch
        for entry in data.get("processes", []):
            if _same_process(entry["pid"], entry["create_time"]):
                _signal_group(entry["pgid"], signal.SIGKILL)
                with contextlib.suppress(psutil.Error):
                    psutil.Process(entry["pid"]).kill()
                reaped.append(f"{entry['name']} (pid {entry['pid']})")
        path.unlink(missing_ok=True)
    return reaped


def _create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _same_process(pid: int | None, create_time: float | None) -> bool:
    if not pid or create_time is None:
        return False
    started = _create_time(pid)
    return started is not None and abs(started - create_time) < 0.01


@dataclass
class ManagedProcess:
    name: str
    popen: subprocess.Popen
    log_path: Path | None
    known_descendants: set[int] = field(default_factory=set)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tree(self) -> list[psutil.Process]:
        """The process and all its live descendants (remembered for the final reaping)."""
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        self.known_descendants.update(p.pid for p in procs[1:])
        return procs

    def log_tail(self, lines: int = 8) -> list[str]:
        return log_tail(self.log_path, lines)

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM the process group, SIGKILL whatever is left after ``grace_s``, and reap."""
        self.tree()
        _signal_group(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and self._anything_alive():
            if self.popen.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(timeout=0.05)
            else:
                time.sleep(0.05)
        _signal_group(self.pid, signal.SIGKILL)
        for pid in self.known_descendants:
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)

    def _anything_alive(self) -> bool:
        if self.popen.poll() is None:
            return True
        return any(psutil.pid_exists(p) and _not_zombie(p) for p in self.known_descendants)


@contextlib.contextmanager
def managed_process(
    argv: list[str],
    *,
    name: str,
    log_path: Path | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    ready: Callable[[], bool] | None = None,
    ready_timeout_s: float = 30.0,
    grace_s: float = 5.0,
    on_start: Callable[[ManagedProcess], None] | None = None,
    stdin_pipe: bool = False,
) -> Iterator[ManagedProcess]:
    """Start ``argv``, wait until ``ready()`` is true, yield it, and always stop it.

    With ``stdin_pipe`` the process reads what ``popen.stdin`` is given (else nothing)."""
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent if _libc else None,
        )
    except FileNotFoundError as exc:
        raise ProcessError(f"{name}: cannot run {argv[0]!r}: {exc.strerror}") from None
    finally:
        if log_path:
            log.close()
    proc = ManagedProcess(name, popen, log_path)
    ledger = ProcessLedger.active
    try:
        if ledger:
            ledger.add(name, popen.pid)
        if on_start:
            on_start(proc)
        if ready:
            wait_until(proc, ready, ready_timeout_s)
        yield proc
    finally:
        proc.stop(grace_s)
        if ledger:
            ledger.remove(popen.pid)


def wait_until(proc: ManagedProcess, ready: Callable[[], bool], timeout_s: float) -> None:
    """Poll ``ready()`` until true; fail fast if the process exits, fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not proc.alive():
            raise ProcessError(
                f"{proc.name} exited with code {proc.popen.returncode}", proc.log_tail()
            )
        if ready():
            return
        time.sleep(0.05)
    raise ProcessError(f"{proc.name} was not ready within {timeout_s:.0f} s")


def http_ok(url: str, timeout_s: float = 1.0) -> Callable[[], bool]:
    """A readiness probe: true once ``GET url`` answers 200."""

    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                return response.status == 200
        except (OSError, urllib.error.URLError):
            return False

    return probe


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def listen_queues(port: int) -> list[int]:
    """The accept-queue length of each listening TCP socket on ``port`` (Linux: for a listening
    socket, /proc/net/tcp's rx_queue is its accept queue); one entry per socket, so a server
    whose processes each bind their own (``SO_REUSEPORT``) shows one per process."""
    queues = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            next(lines, None)  # the header
            # The kernel lists the listening sockets first: stop there, rather than have it
            # format every connection on the machine twice a second (thousands in a room).
            for line in lines:
                fields = line.split()
                if fields[3] != "0A":
                    break
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    queues.append(int(fields[4].split(":")[1], 16))
    return queues


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False


def _die_with_parent() -> None:
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def raise_open_file_limit() -> int:
    """Raise this process's open-file limit (and so its children's) to the hard limit: a room
    holds a connection per member in Locust and in the server. Returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _not_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class ServiceError(RuntimeError):
    """A backing service or server could not be provided; the message is one line for the user."""


def find_binary(names: tuple[str, ...], first_in: tuple[Path, ...] = ()) -> str | None:
    """The first executable named one of ``names``: in ``first_in``, on PATH, in /usr/(s)bin."""
    for name in names:
        candidates = (
            *(str(d / name) for d in first_in), shutil.which(name), f"/usr/sbin/{name}",
            f"/usr/bin/{name}",
        )  # fmt: skip
        for candidate in candidates:
            if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
                return candidate
    return None
