"""The blocking I/O every blocking and threaded model shares: ``time.sleep``, ``http.client``,
``pymysql``.

``flask-blocking``, ``flask-threaded``, ``tornado-forked`` and ``tornado-threadpool`` all call
``BlockingIO.run``, so their work per request cannot drift apart. Each thread that calls it gets
its own MySQL connection (one per worker process, or one per thread of a threaded model).
"""

from __future__ import annotations

import contextlib
import http.client
import threading
import time
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
    """The I/O of one worker process. Build it in the worker: it owns a MySQL connection per
    thread that calls it."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._mysql = MysqlUrl.parse(config.mysql_url) if config.mysql_url else None
        self._local = threading.local()

    @property
    def _conn(self) -> pymysql.Connection | None:
        return getattr(self._local, "conn", None)

    @_conn.setter
    def _conn(self, conn: pymysql.Connection | None) -> None:
        self._local.conn = conn

    def warm(self) -> None:
        """Open the calling thread's MySQL connection now: a process that serves every request
        on one thread (a sync worker, a forked child) must not pay for it in a measured window
        because no warm-up request happened to reach it. 1-user sql on flask-blocking spreads
        its requests over all four workers, and the first on each answered in 125-132 ms for a
        100 ms sleep: a standard error of 1.2-2.5 %. A failure is left to the first request,
        which reports it."""
        if self._mysql is not None:
            with contextlib.suppress(pymysql.MySQLError, OSError):
                self._connection()

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
