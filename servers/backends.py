"""What every model shares about its backing services: where ``/fetch`` goes, the SQL it runs,
and the failures it reports.

``IOFailure`` and its constructors are the failure vocabulary of every model: 502 when the
upstream failed, 503 when a backing service (the database, the room's message bus) is
unavailable or not configured. Handlers turn them
into ``error_body`` answers. No URL and no SQL text ever comes from a request: ``delay_url`` and
``SLEEP_SQL`` are the only ones there are.
"""

from __future__ import annotations

import pymysql

from servers.config import MYSQL_URL_ENV, REDIS_URL_ENV

# /fetch opens a new upstream connection per request and closes it after (``Connection: close``),
# as Tornado's simple AsyncHTTPClient does. The orchestrator records this in the run metadata.
UPSTREAM_KEEPALIVE = False
SLEEP_SQL = "SELECT SLEEP(%s)"


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


def bus_unavailable(detail: str) -> IOFailure:
    return IOFailure(503, f"message bus unavailable: {detail}")


def no_bus() -> IOFailure:
    return IOFailure(503, f"no message bus configured (set {REDIS_URL_ENV})")


def delay_url(upstream: str, ms: int) -> str:
    """The one URL ``/fetch`` ever requests: the configured upstream's ``/delay?ms=N``."""
    return f"{upstream.rstrip('/')}/delay?ms={ms}"
