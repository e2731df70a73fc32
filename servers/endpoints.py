"""The endpoint contract every server model implements: parameter validation and response bodies.

All models call these functions, so status codes and body bytes cannot drift between them.
Nothing here does I/O; the orchestrator imports it too, to know what a correct answer looks like.
"""

from __future__ import annotations

import json
import os
from urllib.parse import parse_qs

MAX_MS = 60_000
CONTENT_TYPE = "application/json"
# Requests may ask for at most this many query fields; anything more is rejected before parsing.
_MAX_FIELDS = 8

# The scenario endpoints and the one query parameter they accept.
DELAY_ENDPOINTS = ("sleep", "fetch", "sql")


class BadRequest(ValueError):
    """The request's parameters are invalid; the message is safe to show the client."""


def parse_no_params(query: str | bytes) -> None:
    """Validate the query of an endpoint that takes no parameters (``/hello``, ``/health``)."""
    fields = query_fields(query)
    if fields:
        name = shorten(sorted(fields)[0])
        raise BadRequest(f"unknown parameter {name!r}: this endpoint takes none")


def parse_delay(query: str | bytes) -> int:
    """Return the ``ms`` delay of a ``/sleep``, ``/fetch``, ``/sql`` or upstream ``/delay`` query.

    Exactly one parameter, ``ms``, an integer from 0 to ``MAX_MS`` written in plain decimal
    digits. Anything else (missing, repeated, signed, float, unknown extra parameters such as a
    would-be target host) raises ``BadRequest``.
    """
    fields = query_fields(query)
    extra = sorted(set(fields) - {"ms"})
    if extra:
        raise BadRequest(f"unknown parameter {shorten(extra[0])!r}: only 'ms' is accepted")
    values = fields.get("ms")
    if not values:
        raise BadRequest("missing parameter 'ms' (integer milliseconds, 0..60000)")
    if len(values) > 1:
        raise BadRequest("parameter 'ms' given more than once")
    raw = values[0]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 6:
        raise BadRequest(f"'ms' must be an integer from 0 to {MAX_MS}, got {shorten(raw)!r}")
    ms = int(raw)
    if ms > MAX_MS:
        raise BadRequest(f"'ms' must be at most {MAX_MS}, got {ms}")
    return ms


SERVER_TIMING = "Server-Timing"


def server_timing(seconds: float) -> str:
    """The ``Server-Timing`` value every model sends: the time its handler spent and the process
    that served it, e.g. ``app;dur=100.412, proc;desc=4242`` (milliseconds, pid), so a client can
    split latency into inside and outside, and tell which worker each of its requests reached."""
    return f"app;dur={seconds * 1000:.3f}, proc;desc={os.getpid()}"


def hello_body() -> bytes:
    return json_line({"endpoint": "hello", "message": "Hello, world"})


def delay_body(endpoint: str, ms: int) -> bytes:
    """The body of a successful ``/sleep``, ``/fetch`` or ``/sql`` answer."""
    if endpoint not in DELAY_ENDPOINTS:
        raise ValueError(f"not a delay endpoint: {endpoint}")
    return json_line({"endpoint": endpoint, "ms": ms})


def health_body(model: str) -> bytes:
    return json_line({"status": "ok", "model": model})


def error_body(message: str) -> bytes:
    """A one-line JSON error (the newline ends it)."""
    return json_line({"error": message})


def expected_body(endpoint: str, ms: int | None) -> bytes:
    """What a correct server answers for a scenario endpoint (used for equivalence checks)."""
    return hello_body() if endpoint == "hello" else delay_body(endpoint, int(ms or 0))


def query_fields(query: str | bytes) -> dict[str, list[str]]:
    """The query's fields (ASCII, at most a few, strictly decoded), or ``BadRequest``."""
    if isinstance(query, bytes):
        try:
            query = query.decode("ascii")
        except UnicodeDecodeError:
            raise BadRequest("query string must be ASCII") from None
    if query.count("&") + query.count(";") >= _MAX_FIELDS:
        raise BadRequest("too many query parameters")
    try:
        return parse_qs(query, keep_blank_values=True, errors="strict", max_num_fields=_MAX_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("malformed query string") from None


def shorten(text: str, limit: int = 20) -> str:
    """``text`` cut to ``limit`` characters, for quoting client input in an error message."""
    return text if len(text) <= limit else text[:limit] + "…"


def json_line(payload: dict) -> bytes:
    """Compact, ASCII-only JSON and a newline: the body format of every answer."""
    return (json.dumps(payload, separators=(",", ":"), ensure_ascii=True) + "\n").encode()
