"""The blocking I/O every blocking and threaded model shares: ``time.sleep``, ``http.client``,
``pymysql``.

``flask-blocking``, ``flask-threaded``, ``tornado-forked`` and ``tornado-threadpool`` all call
``BlockingIO.run``, so their work per request cannot drift apart. The threads of a process share
its idle MySQL connections: a query takes the one used last, or opens one when every connection
is busy, so a process holds as many as it ever ran queries at once (one per sync worker or
forked child; up to ``threads`` on a threaded model).
"""

from __future__ import annotations

import contextlib
import http.client
import time
from collections import deque
from urllib.parse import urlsplit

import pymysql

from servers.backends import (
    SLEEP_SQL,
    database_unavailable,
    delay_url,
    mysql_detail,
    no_database,
    no_upstream,
    upstream_failed,
)
from servers.config import MysqlUrl, ServerConfig


class BlockingIO:
    """The I/O of one worker process. Build it in the worker: it owns the process's MySQL
    connections.

    A connection belongs to no thread. With one per thread, a thread pool's new or
    rarely used threads opened theirs on first use, inside measured windows: 1-user `sql` on
    flask-threaded answered in 132-142 ms once or twice a window for a 100 ms sleep (a pool
    hands successive requests to different threads), and opening one on each of 4 x 64 threads
    at start took minutes. The idle stack is last in, first out, so the connection just
    used is the one reused and the others stay idle (aiomysql's pool, in the coroutine model,
    takes its oldest idle one instead; either way no query waits for a connection)."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._mysql = MysqlUrl.parse(config.mysql_url) if config.mysql_url else None
        self._idle: deque[pymysql.Connection] = deque()  # append and pop are atomic

    def warm(self) -> None:
        """Open one MySQL connection now: a process that serves every request on one thread
        (a sync worker, a forked child) must not pay for it in a measured window because no
        warm-up request happened to reach it. 1-user sql on flask-blocking spreads its
        requests over all four workers, and the first on each answered in 125-132 ms for a
        100 ms sleep: a standard error of 1.2-2.5 %. A failure is left to the first request,
        which reports it."""
        if self._mysql is not None:
            with contextlib.suppress(pymysql.MySQLError, OSError):
                self._idle.append(self._connect())

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
        conn, reused = self._checkout()
        try:
            self._query(conn, ms)
        except (pymysql.OperationalError, pymysql.InterfaceError) as exc:
            _close(conn)
            if not reused:
                raise database_unavailable(mysql_detail(exc)) from None
            self._retry(ms)
        except pymysql.MySQLError as exc:
            _close(conn)
            raise database_unavailable(mysql_detail(exc)) from None
        else:
            self._idle.append(conn)

    def _retry(self, ms: int) -> None:
        conn = self._new_connection()
        try:
            self._query(conn, ms)
        except pymysql.MySQLError as exc:
            _close(conn)
            raise database_unavailable(mysql_detail(exc)) from None
        self._idle.append(conn)

    def _checkout(self) -> tuple[pymysql.Connection, bool]:
        """The idle connection used last, or a new one; and whether it was reused."""
        try:
            return self._idle.pop(), True
        except IndexError:
            return self._new_connection(), False

    def _new_connection(self) -> pymysql.Connection:
        try:
            return self._connect()
        except pymysql.MySQLError as exc:
            raise database_unavailable(mysql_detail(exc)) from None

    @staticmethod
    def _query(conn: pymysql.Connection, ms: int) -> None:
        with conn.cursor() as cur:
            cur.execute(SLEEP_SQL, (ms / 1000,))
            cur.fetchall()

    def _connect(self) -> pymysql.Connection:
        assert self._mysql is not None
        timeout = self.config.timeout_s
        return pymysql.connect(
            **self._mysql.connect_kwargs(),
            connect_timeout=timeout,
            read_timeout=timeout,
            write_timeout=timeout,
        )


def _close(conn: pymysql.Connection) -> None:
    with contextlib.suppress(Exception):
        conn.close()
