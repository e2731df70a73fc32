"""Command-line validation: every flag of every subcommand is checked here, before anything starts.

One checker per subcommand (``check_run``, ``check_serve``, ``check_report``,
``check_loadgen_worker``) raises ``UsageError`` with one line naming the flag and what to change:
ranges (durations, counts, rates, ports), shapes (hosts and URLs) and combinations that cannot
work. Nothing here starts a process or creates a file, so a refused command leaves no trace.
Scenario files are checked where they are read (``scenario_files.load_scenario``), with the
same bounds.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from asyncbench.planning.plan import MAX_SECONDS, MAX_SPAWN_RATE, MAX_USERS
from asyncbench.planning.scenario_files import resolve_scenarios
from servers.config import (
    MAX_PORT,
    MAX_THREADS,
    MAX_WORKER_CONNECTIONS,
    MAX_WORKERS,
    MysqlUrl,
    ServerConfig,
)
from servers.startup import check_config

MAX_REPEAT = 1000
MAX_RATE = 1_000_000.0  # requests/s offered per cell
MAX_LOCAL_LOCUST_WORKERS = 256
MAX_REMOTE_LOCUST_WORKERS = 4096
MAX_SEED = 2**63 - 1
MAX_IDLE_TIMEOUT_S = 7 * 24 * 3600.0
MIN_MEASURE_S = 0.5  # as a scenario file's measure_s: shorter windows hold too few requests
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_-]{1,63})*$")
# `run --resume` replays the stored plan; only these may be given again (a password is never
# stored, and the run directory decides where results go).
_RESUME_MAY_GIVE = {"resume", "mysql_url", "out", "command", "handler"}


class UsageError(Exception):
    """The command line asks for something that cannot work; the message says what to change."""


def check_run(args: argparse.Namespace, defaults: argparse.Namespace) -> None:
    """``asyncbench run``: ``defaults`` is what the parser gives when no flag is set."""
    if args.resume:
        _check_resume(args, defaults)
        return
    _check_load(args)
    _check_processes(args)
    _check_locust(args, defaults)
    _check_endpoints(args)
    _check_out(args.out)
    resolve_scenarios(args.scenario or None)  # ScenarioError names the file and the field


def check_serve(args: argparse.Namespace) -> None:
    _check_host("--host", args.host)
    _check_int("--port", args.port, 1, MAX_PORT)
    _check_processes(args)
    _check_http_url("--upstream", args.upstream)
    _check_mysql_url(args.mysql_url)
    config = ServerConfig(host=args.host, port=args.port, workers=args.workers,
                          threads=args.threads, worker_connections=args.worker_connections,
                          upstream=args.upstream, redis_url=args.redis_url)  # fmt: skip
    try:
        check_config(config)  # what the model itself will check, so it cannot refuse later
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def check_report(args: argparse.Namespace) -> None:
    for flag, value in (("RUN_DIR", args.run_dir), ("--baseline", args.baseline)):
        if value is not None:
            _check_existing_dir(flag, value)


def check_compare(args: argparse.Namespace) -> None:
    for flag, value in (("RUN", args.run_dir), ("--baseline", args.baseline)):
        _check_existing_dir(flag, value)


def check_loadgen_worker(args: argparse.Namespace) -> tuple[str, int]:
    """The master's host and port, from ``--master HOST[:PORT]``."""
    host, _, port = args.master.partition(":")
    if not host or not (port or "5557").isdigit():
        raise UsageError(f"--master must be HOST or HOST:PORT, got {args.master!r}")
    _check_host("--master", host)
    number = int(port or 5557)
    _check_int("--master port", number, 1, MAX_PORT)
    _check_seconds("--idle-timeout", args.idle_timeout, 0.1, MAX_IDLE_TIMEOUT_S)
    return host, number


def _check_resume(args: argparse.Namespace, defaults: argparse.Namespace) -> None:
    _check_existing_dir("--resume", args.resume)
    changed = sorted(
        _flag(dest) for dest, value in vars(args).items()
        if dest not in _RESUME_MAY_GIVE and value != getattr(defaults, dest, None)
    )  # fmt: skip
    if changed:
        raise UsageError(
            f"--resume runs the stored plan of {args.resume}; {', '.join(changed)} would change "
            "it: drop them, or start a new run without --resume"
        )
    if args.out != defaults.out:
        parent = Path(args.resume).resolve().parent
        if Path(args.out).resolve() != parent:
            raise UsageError(f"--resume writes into {args.resume} itself: drop --out")
    _check_mysql_url(args.mysql_url)


def _check_load(args: argparse.Namespace) -> None:
    if args.duration is not None:
        _check_seconds("--duration", args.duration, MIN_MEASURE_S, MAX_SECONDS)
    if args.warmup is not None:
        _check_seconds("--warmup", args.warmup, 0.0, MAX_SECONDS)
    if args.repeat is not None:
        _check_int("--repeat", args.repeat, 1, MAX_REPEAT)
    if args.users:
        _check_int("--users", max(args.users), 1, MAX_USERS)
    if args.rate:
        for rate in args.rate:
            _check_number("--rate", rate, 0.0, MAX_RATE, exclusive_low=True)
    if args.rate and args.users:
        raise UsageError("give either --users (closed loop) or --rate (open loop), not both")
    if args.arrival != "constant" and not args.rate:
        raise UsageError("--arrival shapes an open loop: give --rate too, or drop --arrival")
    if args.spawn_rate is not None:
        _check_number("--spawn-rate", args.spawn_rate, 0.1, MAX_SPAWN_RATE)
    if args.seed is not None:
        _check_int("--seed", args.seed, 0, MAX_SEED)


def _check_processes(args: argparse.Namespace) -> None:
    _check_int("--workers", args.workers, 1, MAX_WORKERS)
    _check_int("--threads", args.threads, 1, MAX_THREADS)
    _check_int("--worker-connections", args.worker_connections, 1, MAX_WORKER_CONNECTIONS)


def _check_locust(args: argparse.Namespace, defaults: argparse.Namespace) -> None:
    _check_int("--locust-workers", args.locust_workers, 0, MAX_LOCAL_LOCUST_WORKERS)
    _check_int("--expect-workers", args.expect_workers, 0, MAX_REMOTE_LOCUST_WORKERS)
    _check_int("--locust-master-port", args.locust_master_port, 1, MAX_PORT)
    if args.locust_master_bind != "*":
        _check_host("--locust-master-bind", args.locust_master_bind)
    for dest in ("locust_master_bind", "locust_master_port"):
        if getattr(args, dest) != getattr(defaults, dest) and not args.expect_workers:
            raise UsageError(f"{_flag(dest)} is where remote workers join: it needs "
                             "--expect-workers N (N ≥ 1)")  # fmt: skip


def _check_endpoints(args: argparse.Namespace) -> None:
    if args.target and len(args.server) != 1:
        raise UsageError("--target measures a server started elsewhere: give exactly one --server")
    _check_http_url("--target", args.target)
    _check_http_url("--upstream", args.upstream)
    _check_mysql_url(args.mysql_url)
    _check_redis_url(args.redis_url)


def _check_out(out: str) -> None:
    if not out or "\0" in out:
        raise UsageError(f"--out must be a directory path, got {out!r}")
    path = Path(out)
    try:
        if path.exists() and not path.is_dir():
            raise UsageError(f"--out {out}: exists and is not a directory")
        existing = next((p for p in (path, *path.absolute().parents) if p.exists()), None)
        writable = existing and existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)
    except OSError as exc:  # a name too long, a loop of symlinks
        raise UsageError(f"--out {out}: {exc.strerror}") from None
    if not writable:
        raise UsageError(f"--out {out}: cannot create or write there ({existing} is not writable)")


def _check_existing_dir(flag: str, value: str) -> None:
    if not value or "\0" in value:
        raise UsageError(f"{flag} must be a run directory, got {value!r}")
    try:
        is_dir = Path(value).is_dir()
    except OSError as exc:
        raise UsageError(f"{flag} {value}: {exc.strerror}") from None
    if not is_dir:
        raise UsageError(f"{flag} {value}: no such run directory (see `asyncbench run --out`)")


def _check_int(flag: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise UsageError(f"{flag} must be from {low} to {high}, got {value}")


def _check_number(flag: str, value: float, low: float, high: float, exclusive_low=False) -> None:
    too_low = value <= low if exclusive_low else value < low
    if not math.isfinite(value) or too_low or value > high:
        above = f"above {low:g}" if exclusive_low else f"at least {low:g}"
        raise UsageError(f"{flag} must be a number {above} and at most {high:g}, got {value:g}")


def _check_seconds(flag: str, value: float, low: float, high: float) -> None:
    if not math.isfinite(value) or not low <= value <= high:
        raise UsageError(f"{flag} must be from {low:g} to {high:g} seconds, got {value:g}")


def _check_host(flag: str, host: str) -> None:
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    if not _HOSTNAME.match(host):
        raise UsageError(f"{flag} must be an IP address or a host name, got {host!r}")


def _check_http_url(flag: str, url: str | None) -> None:
    if url is None:
        return
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError when out of range or not a number
    except ValueError:
        parts = None
    if (
        parts is None or parts.scheme != "http" or not parts.hostname or parts.query
        or parts.fragment or parts.path.strip("/") or parts.username or parts.password
    ):  # fmt: skip
        raise UsageError(f"{flag} must look like http://HOST:PORT, got {url!r}")
    _check_host(flag, parts.hostname)


def _check_mysql_url(url: str | None) -> None:
    if url is None:
        return
    try:
        MysqlUrl.parse(url)
    except ValueError as exc:
        message = str(exc) if str(exc).startswith("--mysql-url") else f"--mysql-url: {exc}"
        raise UsageError(message) from None


def _check_redis_url(url: str | None) -> None:
    try:
        check_config(ServerConfig(redis_url=url))  # the models' own check of the URL
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")
