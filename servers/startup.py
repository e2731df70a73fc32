"""Starting a server model: reject bad configuration and taken addresses with one line, and
never outlive the parent process."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import sys
from urllib.parse import urlsplit

from servers.config import (
    MAX_PORT,
    MAX_THREADS,
    MAX_WORKER_CONNECTIONS,
    MAX_WORKERS,
    MysqlUrl,
    ServerConfig,
    redact_url,
)
from servers.room import MAX_HOLD_S

_PR_SET_PDEATHSIG = 1


def check_config(config: ServerConfig) -> None:
    """Reject an unusable port, worker, thread or connection count, ``--upstream``, MySQL or
    Redis URL or hold timeout at startup (``ValueError``, one line)."""
    if not 0 <= config.port <= MAX_PORT:
        raise ValueError(f"--port must be from 0 to {MAX_PORT}, got {config.port}")
    if not 1 <= config.workers <= MAX_WORKERS:
        raise ValueError(f"--workers must be from 1 to {MAX_WORKERS}, got {config.workers}")
    if not 1 <= config.threads <= MAX_THREADS:
        raise ValueError(f"--threads must be from 1 to {MAX_THREADS}, got {config.threads}")
    if not 1 <= config.worker_connections <= MAX_WORKER_CONNECTIONS:
        raise ValueError(f"--worker-connections must be from 1 to {MAX_WORKER_CONNECTIONS}, "
                         f"got {config.worker_connections}")  # fmt: skip
    if config.upstream:
        parts = urlsplit(config.upstream)
        if parts.scheme != "http" or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(f"--upstream must look like http://HOST:PORT, got {config.upstream!r}")
        try:
            _ = parts.port
        except ValueError:
            raise ValueError(f"--upstream has an invalid port: {config.upstream!r}") from None
    if config.mysql_url:
        MysqlUrl.parse(config.mysql_url)
    if config.redis_url:
        parts = urlsplit(config.redis_url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            shown = redact_url(config.redis_url)
            raise ValueError(f"--redis-url must look like redis://HOST:PORT, got {shown!r}")
        try:
            _ = parts.port
        except ValueError:
            shown = redact_url(config.redis_url)
            raise ValueError(f"--redis-url has an invalid port: {shown!r}") from None
    if not 0 < config.hold_s <= MAX_HOLD_S:  # also refuses NaN
        raise ValueError(f"--hold-s must be above 0 and at most {MAX_HOLD_S:.0f}")


def exit_on_bad_config(config: ServerConfig, prog: str) -> None:
    try:
        check_config(config)
    except ValueError as exc:
        sys.exit(f"{prog}: {exc}")


def exit_if_address_taken(config: ServerConfig, prog: str) -> None:
    """Exit with one line if ``host:port`` cannot be bound (gunicorn retries 5 s, logging each)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
        try:
            sock.bind((config.host, config.port))
        except OSError as exc:
            sys.exit(f"{prog}: cannot listen on {config.host}:{config.port}: {exc.strerror or exc}")


def die_with_parent(parent_pid: int) -> None:
    """Linux: get SIGTERM when the parent dies; exit now if it already has (call after fork)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:
        os._exit(0)
