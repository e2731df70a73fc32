"""The blocking I/O both blocking models share (sleep, fetch, SELECT SLEEP), and its errors.

``flask-blocking`` and ``tornado-forked`` both call ``BlockingIO.run``, so their work per request
cannot drift apart. ``IOFailure`` and its two constructors are the failure vocabulary of every
model (the coroutine model raises them too): 502 when the upstream failed, 503 when a backing
service is unavailable or not configured. Handlers turn them into ``error_body`` answers.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import os
import signal
import socket
import sys
import time
from urllib.parse import urlsplit

import pymysql

from servers.config import MYSQL_URL_ENV, MysqlUrl, ServerConfig

# /fetch opens a new upstream connection per request and closes it after (``Connection: close``),
# as Tornado's simple AsyncHTTPClient does. The orchestrator records this in the run metadata.
UPSTREAM_KEEPALIVE = False
SLEEP_SQL = "SELECT SLEEP(%s)"
_PR_SET_PDEATHSIG = 1


class IOFailure(Exception):
    """A backing service failed; ``status`` is the HTTP status to answer, the message is safe."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def upstream_failed(detail: str) -> IOFailure:
    return IOFailure(502, f"upstream failed: {detail}")


def database_unavailable(detail: str) -> IOFailure:
    return IOFailure(503, f"database unavailable: {detail}")


def mysql_detail(exc: pymysql.MySQLError) -> str:
    """A short, password-free description of a pymysql/aiomysql error."""
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    return f"MySQL error {code}" if code else type(exc).__name__


def no_upstream() -> IOFailure:
    return IOFailure(503, "no upstream configured (start the server with --upstream URL)")


def no_database() -> IOFailure:
    return IOFailure(503, f"no database configured (set {MYSQL_URL_ENV})")


def delay_url(upstream: str, ms: int) -> str:
    """The one URL ``/fetch`` ever requests: the configured upstream's ``/delay?ms=N``."""
    return f"{upstream.rstrip('/')}/delay?ms={ms}"


def check_config(config: ServerConfig) -> None:
    """Reject an unusable ``--upstream`` or MySQL URL at startup (``ValueError``, one line)."""
    if config.upstream:
        parts = urlsplit(config.upstream)
        if parts.scheme != "http" or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(f"--upstream must look like http://HOST:PORT, got {config.upstream!r}")
        _ = parts.port  # raises ValueError on a bad port
    if config.mysql_url:
        MysqlUrl.parse(config.mysql_url)


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


class BlockingIO:
    """The I/O of one worker process. Build it in the worker: it owns one MySQL connection."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._mysql = MysqlUrl.parse(config.mysql_url) if config.mysql_url else None
        self._conn: pymysql.Connection | None = None

    def run(self, endpoint: str, ms: int) -> None:
        """Do the work of ``/sleep``, ``/fetch`` or ``/sql`` for ``ms`` milliseconds."""
        {"sleep": self.sleep, "fetch": self.fetch, "sql": self.sql}[endpoint](ms)

    def sleep(self, ms: int) -> None:
        time.sleep(ms / 1000)

    def fetch(self, ms: int) -> None:
        if not self.config.upstream:
            raise no_upstream()
        parts = urlsplit(delay_url(self.config.upstream, ms))
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=self.config.timeout_s)
        try:
            conn.request("GET", f"{parts.path}?{parts.query}", headers={"Connection": "close"})
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise upstream_failed(type(exc).__name__) from None
        finally:
            conn.close()
        if response.status != 200:
            raise upstream_failed(f"HTTP {response.status}")

    def sql(self, ms: int) -> None:
        """``SELECT SLEEP(ms/1000)``; a stale connection is replaced and the query retried once."""
        if self._mysql is None:
            raise no_database()
        reused = self._conn is not None
        try:
            self._query(ms)
        except (pymysql.OperationalError, pymysql.InterfaceError) as exc:
            self._close()
            if not reused:
                raise database_unavailable(mysql_detail(exc)) from None
            self._retry(ms)
        except pymysql.MySQLError as exc:
            raise database_unavailable(mysql_detail(exc)) from None

    def _retry(self, ms: int) -> None:
        try:
            self._query(ms)
        except pymysql.MySQLError as exc:
            self._close()
            raise database_unavailable(mysql_detail(exc)) from None

    def _query(self, ms: int) -> None:
        with self._connection().cursor() as cur:
            cur.execute(SLEEP_SQL, (ms / 1000,))
            cur.fetchall()

    def _connection(self) -> pymysql.Connection:
        if self._conn is None:
            assert self._mysql is not None
            timeout = self.config.timeout_s
            self._conn = pymysql.connect(
                **self._mysql.connect_kwargs(),
                connect_timeout=timeout,
                read_timeout=timeout,
                write_timeout=timeout,
            )
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
