"""What the locustfile and the harness exchange: typed, versioned records; no Locust import here.

The locustfile (inside Locust's process) writes three files per cell; the harness reads them:

* the raw samples (parquet): one row per request, columns ``SAMPLE_COLUMNS`` plus ``error`` and
  ``worker``, with ``PROTOCOL_VERSION`` in the file's metadata;
* ``meta.json``: a ``LocustMeta`` (timestamps, Locust's own counters, abandoned requests);
* ``progress.json``: a ``Progress`` written once a second while the cell runs.

A file of another version, or with fields that do not match, raises ``ProtocolError``: a drifted
record must stop the harness loudly, never switch a check off silently.

* for a room: the deliveries (parquet), one row per message a member received, columns
  ``DELIVERY_COLUMNS``.

Versions:
  1 — first typed version (adds the ``user`` sample column: which Locust user sent it).
  2 — samples carry the request's ``endpoint`` (polls and the probe share a room cell's file);
      deliveries.
  3 — samples carry ``server_ms``, the handler time each model reports in ``Server-Timing``.
  4 — ``Progress`` counts a room's ``deliveries`` (a WebSocket room completes no request after
      its members connect, yet it is busy); a WebSocket member's upgrades and drops are samples
      of endpoint ``/room/ws`` (status 101 when connected).
  5 — the locustfile ends the warm-up once every user has settled (at most the warm-up it was
      given) and reports the measured window's edges in ``LocustMeta`` (``window_start``,
      ``window_end``); the harness no longer computes them from the spawn.
  6 — samples carry ``server_pid``, the process that answered (``Server-Timing``'s ``proc``), so
      users whose connections stay with one worker are read worker by worker.
  7 — a window may end once precise (``--bench-measure-min``); ``LocustMeta.window_reason``
      says why it ended when it did.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields

PROTOCOL_VERSION = 7
PARQUET_VERSION_KEY = b"asyncbench_protocol"
# Sample columns and their array typecodes (the recorder's storage on the hot path).
SAMPLE_COLUMNS = {
    "start_time": "d",  # epoch seconds when the request was sent
    "latency_ms": "d",  # exact, as Locust measured it (its own stats round it)
    "status": "i",  # HTTP status, 0 when no answer
    "bytes": "q",
    "intended_time": "d",  # open loop: when it was due (NaN in a closed loop)
    "user": "q",  # which Locust user sent it (unique across worker processes)
    "server_ms": "d",  # what the server said its handler took (``Server-Timing``), NaN if none
    "server_pid": "q",  # the process that answered (``Server-Timing``), UNKNOWN_PID if none
}
UNKNOWN_PID = -1
TEXT_COLUMNS = ("error", "worker", "endpoint")
# One row per message a room member received.
DELIVERY_COLUMNS = {
    "member": "q",  # the member's user id
    "message": "q",  # the message id
    "sent": "d",  # epoch seconds the sender embedded
    "received": "d",  # epoch seconds the member had the answer
}
USERS_PER_WORKER = 1_000_000  # user ids are worker_index * this + the user's own number


class ProtocolError(RuntimeError):
    """A record from the locustfile does not match what this harness reads."""


@dataclass(frozen=True)
class Progress:
    """Live counters, once a second: the harness's display and its hang detection read them."""

    t: float
    requests: int
    failures: int
    users: int
    deliveries: int = 0  # room: messages received by members so far
    version: int = PROTOCOL_VERSION

    @property
    def activity(self) -> int:
        """Everything completed so far: a server that stops answering stops raising it."""
        return self.requests + self.deliveries


@dataclass(frozen=True)
class LocustMeta:
    """What one Locust run reports when it quits (the master's view when distributed)."""

    test_start: float
    locust_requests: int
    locust_failures: int
    recorded: int
    spawn_complete: float | None = None
    test_stop: float | None = None
    window_start: float | None = None  # the warm-up ended (never before spawn_complete)
    window_end: float | None = None  # window_start + the measured window (or once precise)
    window_reason: str = ""  # why the window ended then: "fixed", "precise: ...", "cap: ..."
    abandoned: list[float] = field(default_factory=list)  # start times of unanswered requests
    workers: list[str] = field(default_factory=list)
    schedule: dict | None = None  # open loop: origin, rate, issued
    version: int = PROTOCOL_VERSION


def write_record(path: str, record: Progress | LocustMeta) -> None:
    """Write a record as JSON, atomically (a reader never sees half a file)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(asdict(record), fh)
    os.replace(tmp, path)


def read_record(path, kind: type[Progress] | type[LocustMeta]):
    """Read a record written by ``write_record``; ``ProtocolError`` on any mismatch."""
    with open(path) as fh:
        data = json.load(fh)
    if data.get("version") != PROTOCOL_VERSION:
        raise ProtocolError(
            f"{path}: protocol version {data.get('version')!r}, this harness reads "
            f"{PROTOCOL_VERSION}: the locustfile and the harness come from different versions"
        )
    names = {f.name for f in fields(kind)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ProtocolError(f"{path}: unknown {kind.__name__} fields {unknown}")
    try:
        return kind(**data)
    except TypeError as exc:
        raise ProtocolError(f"{path}: not a {kind.__name__}: {exc}") from None


def check_sample_columns(columns, where: str) -> None:
    """Refuse a samples table whose columns are not the protocol's."""
    expected = set(SAMPLE_COLUMNS) | set(TEXT_COLUMNS)
    missing, extra = expected - set(columns), set(columns) - expected
    if missing or extra:
        raise ProtocolError(
            f"{where}: sample columns differ from protocol {PROTOCOL_VERSION}: "
            f"missing {sorted(missing)}, unexpected {sorted(extra)}"
        )
