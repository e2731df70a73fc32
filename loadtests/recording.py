"""What the locustfile keeps per request and when an open loop sends: no Locust import here,
so the hot-path recorder and the arrival schedule are tested without starting Locust."""

from __future__ import annotations

import math
import os
import random
from array import array
from collections import deque

from loadtests.protocol import (
    DELIVERY_COLUMNS,
    PARQUET_VERSION_KEY,
    PROTOCOL_VERSION,
    SAMPLE_COLUMNS,
    UNKNOWN_PID,
    ProtocolError,
)

CHUNK_ROWS = 50_000  # samples per message from a worker to the master
ERROR_CHARS = 200


class SampleRecorder:
    """Raw per-request samples in column arrays; appending is the only work per request."""

    def __init__(self) -> None:
        self.columns = {name: array(code) for name, code in SAMPLE_COLUMNS.items()}
        self.errors: dict[int, str] = {}  # row -> message, for the rare failed request
        self.endpoints: list[str] = []
        self.sources: list[tuple[str, int]] = []  # (worker, rows) for merged samples

    def __len__(self) -> int:
        return len(self.columns["start_time"])

    def on_request(self, start_time, response_time, response_length, response, exception,
                   context, name="", **_) -> None:  # fmt: skip
        c = self.columns
        if exception is not None:
            self.errors[len(self)] = f"{type(exception).__name__}: {exception}"[:ERROR_CHARS]
        c["start_time"].append(start_time)
        c["latency_ms"].append(response_time)
        c["status"].append(getattr(response, "status_code", 0) or 0)
        c["bytes"].append(response_length or 0)
        c["intended_time"].append(context.get("intended_time", math.nan))
        c["user"].append(context.get("user", -1))
        server_ms, server_pid = server_timing(response)
        c["server_ms"].append(server_ms)
        c["server_pid"].append(server_pid)
        self.endpoints.append(name)

    def chunks(self):
        """The samples as messages of at most ``CHUNK_ROWS`` rows, for sending to the master."""
        for begin in range(0, max(len(self), 1), CHUNK_ROWS):
            end = min(begin + CHUNK_ROWS, len(self))
            yield {
                "columns": {k: v[begin:end].tolist() for k, v in self.columns.items()},
                "endpoints": self.endpoints[begin:end],
                "errors": {str(i - begin): e for i, e in self.errors.items() if begin <= i < end},
            }

    def absorb(self, worker: str, chunk: dict) -> None:
        """Append a chunk received from a worker."""
        if set(chunk["columns"]) != set(self.columns):
            raise ProtocolError(f"samples from {worker} have columns {sorted(chunk['columns'])}, "
                                f"expected {sorted(self.columns)}")  # fmt: skip
        offset = len(self)
        for name, values in chunk["columns"].items():
            self.columns[name].extend(values)
        self.endpoints.extend(chunk["endpoints"])
        self.errors.update({offset + int(i): e for i, e in chunk["errors"].items()})
        self.sources.append((worker, len(self) - offset))

    def write_parquet(self, path: str, source: str) -> None:
        import pyarrow as pa  # imported at the end only: nothing extra on the hot path
        import pyarrow.parquet as pq

        n = len(self)
        workers = [w for w, rows in self.sources for _ in range(rows)] or [source] * n
        table = pa.table(
            {
                **{name: pa.array(values) for name, values in self.columns.items()},
                "error": pa.array([self.errors.get(i) for i in range(n)], pa.string()),
                "worker": pa.array(workers, pa.string()),
                "endpoint": pa.array(self.endpoints, pa.string()),
            }
        )
        table = table.replace_schema_metadata({PARQUET_VERSION_KEY: str(PROTOCOL_VERSION)})
        tmp = f"{path}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, path)


def server_timing(response) -> tuple[float, int]:
    """The handler time and the serving process from ``Server-Timing: app;dur=12.3,
    proc;desc=4242`` (NaN and ``UNKNOWN_PID`` for what is absent or malformed)."""
    headers = getattr(response, "headers", None)
    return parse_server_timing(headers.get("Server-Timing") if headers else None)


def parse_server_timing(value: str | None) -> tuple[float, int]:
    """``(handler ms, pid)`` from a ``Server-Timing`` value the servers send."""
    metrics = {}
    for metric in (value or "").split(","):
        name, _, params = metric.strip().partition(";")
        metrics[name] = dict(p.strip().partition("=")[::2] for p in params.split(";") if p)
    try:
        handler_ms = float(metrics.get("app", {}).get("dur", "nan"))
    except ValueError:
        handler_ms = math.nan
    pid = metrics.get("proc", {}).get("desc", "")
    return handler_ms, int(pid) if pid.isascii() and pid.isdigit() else UNKNOWN_PID


class ArrivalSchedule:
    """Intended send times of an open-loop load: constant spacing or Poisson arrivals."""

    def __init__(self, rate: float, arrival: str, seed: int) -> None:
        self.rate, self.arrival = rate, arrival
        self.rng = random.Random(seed)
        self.origin = self.next_time = 0.0
        self.issued = 0

    def start(self, at: float) -> None:
        self.origin = self.next_time = at

    def take(self) -> float:
        """The next intended send time (each is handed to exactly one user)."""
        intended = self.next_time
        gap = self.rng.expovariate(self.rate) if self.arrival == "poisson" else 1 / self.rate
        self.next_time += gap
        self.issued += 1
        return intended


class DeliveryRecorder:
    """A room's deliveries: one row per message a member received (appends only)."""

    def __init__(self) -> None:
        self.columns = {name: array(code) for name, code in DELIVERY_COLUMNS.items()}

    def __len__(self) -> int:
        return len(self.columns["member"])

    def chunk(self) -> dict[str, list]:
        """Every delivery as plain lists (a worker sends them to the master)."""
        return {name: values.tolist() for name, values in self.columns.items()}

    def absorb(self, chunk: dict[str, list]) -> None:
        """Append deliveries a worker sent."""
        if set(chunk) != set(self.columns):
            raise ProtocolError(f"deliveries with columns {sorted(chunk)}, "
                                f"expected {sorted(self.columns)}")  # fmt: skip
        for name, values in chunk.items():
            self.columns[name].extend(values)

    def p99_latency_s(self) -> float:
        """The 99th percentile of received − sent so far (0 with no delivery)."""
        sent, received = self.columns["sent"], self.columns["received"]
        if not sent:
            return 0.0
        latencies = sorted(r - s for s, r in zip(sent, received, strict=True))
        return max(0.0, latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))])

    def newest_sent_before(self, end: float) -> int:
        """The highest message id received so far among those sent before ``end`` (0: none)."""
        ids = (m for m, sent in zip(self.columns["message"], self.columns["sent"], strict=True)
               if sent < end)  # fmt: skip
        return max(ids, default=0)

    def record(self, member: int, message: int, sent: float, received: float) -> None:
        c = self.columns
        c["member"].append(member)
        c["message"].append(message)
        c["sent"].append(sent)
        c["received"].append(received)

    def write_parquet(self, path: str) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({name: pa.array(values) for name, values in self.columns.items()})
        table = table.replace_schema_metadata({PARQUET_VERSION_KEY: str(PROTOCOL_VERSION)})
        tmp = f"{path}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, path)


STEADY_USERS = 8  # from this many users on, the warm-up also waits for steady round trips
STEADY_FALL = 0.01  # round trips still falling by more than this share: not steady yet
STEADY_SPAN = 2  # round trips per user in each of the two spans compared
STEADY_HOLD = 2  # round trips (the mean) the comparison must keep holding before the window


class Settling:
    """When a cell's warm-up may end: once every user has completed ``cycles`` requests (a room
    member: received ``cycles`` messages) that began after spawning completed, and, with
    ``STEADY_USERS`` or more users timing round trips, once those have stopped falling.

    A fixed warm-up is the longest any cell needs; most need a fraction of it. Two requests per
    user after spawning mean each connection is open, each pool has handed out the slots the
    users use, and each user has made one request in the state it keeps; a member that holds a
    message sent after spawning is connected and served. Many users are not steady by then:
    spawned together, they answer in one train that takes several round trips to spread, and a
    thread pool is still opening a thread and a connection per user. 64 users on fetch and sql
    ran 4-15 % under their steady rate in the first 0.3 s of windows that began after their
    second request (a tenth of the window: up to 1.5 % low), and stated errors of 1.2-1.6 %
    that windows begun steady brought to 0.1-0.6 %. So the mean of the last ``STEADY_SPAN ×
    users`` round trips must not be more than ``STEADY_FALL`` under the mean of as many before
    them. Replayed on the samples of those runs' 24 cells of 16 and 64 users in their slots,
    spans of one round trip per user still began 6 windows at 92-98 % of the steady rate; two
    per user began 23 at 98 % or more and one at 96 %, after 0.91 s of warm-up on average
    instead of 0.45 s. Cells that never get there (users queued behind too few slots) keep the
    full warm-up, which bounds the wait. A plateau then a fall passed that comparison: `fetch`
    at 64 users on tornado-coroutine was called steady at 0.75 s, and its window's first 1.2 s
    ran at 118-128 ms round trips, the rest at 106-107 ms (a 2.3 % standard error). So the
    comparison must hold for ``STEADY_HOLD`` round trips running (``settled_at``, polled):
    replayed on the 76 cells of 16 and 64 users with a slot each in two default runs, the first
    0.3 s of the window ran 0.1 % slower than its end on average (worst 5.4 %), where one check
    let them run 0.8 % slower (worst 21 %), for 0.35 s more warm-up on average.
    """

    def __init__(self) -> None:
        self.cycles = 0
        self.origin = math.inf
        self.counts: dict[int, int] = {}
        self.waiting = 0  # users still below ``cycles``; settled at 0
        self.users = 0
        self.round_trips: deque[float] = deque()
        self.steady_since: float | None = None  # first poll of the steady run now going on

    def begin(self, at: float, users: int, cycles: int) -> None:
        """Count from ``at`` (spawning completed) until ``users`` users completed ``cycles``."""
        self.origin, self.counts, self.waiting, self.cycles = at, {}, users, cycles
        self.users, self.round_trips = users, deque(maxlen=2 * STEADY_SPAN * users)
        self.steady_since = None

    def end(self) -> None:
        """The warm-up is over: ``count``, on every request's path, returns at once from now."""
        self.origin = math.inf

    @property
    def settled(self) -> bool:
        """Every user counted and the round trips steady; never with ``cycles`` 0 (a fixed
        warm-up) or before ``begin``."""
        counted = self.cycles > 0 and self.waiting <= 0 and self.origin < math.inf
        return counted and self.steady

    def settled_at(self, now: float) -> bool:
        """``settled``, and steady without a break (polled) for ``STEADY_HOLD`` mean round
        trips up to ``now``."""
        if not self.settled:
            self.steady_since = None
            return False
        if not self._judges_round_trips:
            return True
        if self.steady_since is None:
            self.steady_since = now
        mean = sum(self.round_trips) / len(self.round_trips)
        return now - self.steady_since >= STEADY_HOLD * mean

    @property
    def steady(self) -> bool:
        """The last ``STEADY_SPAN × users`` round trips are not ``STEADY_FALL`` shorter than as
        many before them (always, under ``STEADY_USERS`` users or with no round trips timed: a
        room's members count messages)."""
        if not self._judges_round_trips:
            return True
        span = STEADY_SPAN * self.users
        if len(self.round_trips) < 2 * span:
            return False
        recent = list(self.round_trips)
        before, last = sum(recent[:span]), sum(recent[span:])
        return last >= (1 - STEADY_FALL) * before

    @property
    def _judges_round_trips(self) -> bool:
        return self.users >= STEADY_USERS and bool(self.round_trips)

    def count(self, user: int, began: float, round_trip: float | None = None) -> None:
        """``user`` completed a request (received a message) that began at ``began``, taking
        ``round_trip`` seconds (a request; None for a message)."""
        if began < self.origin or user < 0:
            return
        if round_trip is not None and self.users >= STEADY_USERS:
            self.round_trips.append(round_trip)
        if self.waiting <= 0:
            return
        done = self.counts.get(user, 0) + 1
        self.counts[user] = done
        if done == self.cycles:
            self.waiting -= 1


PRECISE = 0.01  # an adaptive window ends once its throughput's standard error is at most 1 %
P99_REQUESTS = 300  # ... and this many requests completed in it: 3 or more above its p99
PRECISION_SLICES = 10  # batch means over this many equal slices of the window so far
PRECISION_BUCKET_S = 0.01  # completions are counted in buckets this long (cheap per request)
ROOM_MESSAGES = 5  # a room's once every member received this many of the window's messages


class WindowPrecision:
    """When an adaptive window may end (between ``--bench-measure-min`` and ``--bench-measure``;
    pyperf calibrates its loops the same way, until the figure is precise enough).

    A request window: once ``P99_REQUESTS`` requests have completed in it and its throughput's
    standard error is at most ``PRECISE``, by batch means of the completions in
    ``PRECISION_SLICES`` equal slices of the window so far (completions, not starts: none is
    still owed at the end of a slice long passed). The harness's own estimators judge the stored
    cell; this only decides when to stop, and a cell that ends at its cap says why. A room's:
    once every member has received ``ROOM_MESSAGES`` messages sent in the window.
    """

    def __init__(self) -> None:
        self.start = math.inf
        self.buckets = array("l")  # completions per PRECISION_BUCKET_S since ``start``
        self.requests = 0
        self.cycles = False
        self.users: dict[int, list[float]] = {}  # user → [n, Σ round trip, Σ round trip²]
        self.members = 0
        self.received: dict[int, int] = {}

    def begin(self, at: float, members: int = 0, cycles: bool = False) -> None:
        """Count from ``at``; ``members`` > 0 for a room (judged by its deliveries); ``cycles``
        where every user holds a slot of its own (the harness knows: ``--bench-own-slots``)."""
        self.start, self.buckets, self.requests = at, array("l"), 0
        self.cycles, self.users = cycles, {}
        self.members, self.received = members, {}

    def completed(self, finished: float, user: int = -1, round_trip: float = 0.0) -> None:
        if finished < self.start:
            return
        if self.cycles and finished - round_trip >= self.start:
            sums = self.users.setdefault(user, [0, 0.0, 0.0])
            sums[0] += 1
            sums[1] += round_trip
            sums[2] += round_trip * round_trip
        bucket = int((finished - self.start) / PRECISION_BUCKET_S)
        if bucket >= len(self.buckets):
            self.buckets.extend([0] * (bucket + 1 - len(self.buckets)))
        self.buckets[bucket] += 1
        self.requests += 1

    def delivered(self, member: int, sent: float) -> None:
        if sent >= self.start:
            self.received[member] = self.received.get(member, 0) + 1

    def rel_stderr(self, now: float) -> float | None:
        """The throughput's relative standard error so far: users that each hold a slot pace
        themselves, each a renewal stream (rate × CV / √n, the delta method the harness's
        ``closed-loop cycles`` use; completions in trains would overstate it 5-10×, measured);
        others, batch means of the completions."""
        if self.cycles:
            return self._cycles_rel_stderr()
        return self._completions_rel_stderr(now)

    def _cycles_rel_stderr(self) -> float | None:
        rate = variance = 0.0
        for n, total, squares in self.users.values():
            if n < 2 or total <= 0:
                return None  # a user with too few cycles: not yet known
            mean = total / n
            cv2 = max(0.0, squares / n - mean * mean) / (mean * mean) * n / (n - 1)
            rate += 1 / mean
            variance += cv2 / (mean * mean) / n
        return math.sqrt(variance) / rate if rate else None

    def _completions_rel_stderr(self, now: float) -> float | None:
        """The batch-means standard error of the completion rate over ``[start, now)``."""
        whole = int((now - self.start) / PRECISION_BUCKET_S)  # buckets fully past
        if whole < PRECISION_SLICES:
            return None
        counts = [0] * PRECISION_SLICES
        for bucket, n in enumerate(self.buckets[:whole]):
            counts[bucket * PRECISION_SLICES // whole] += n
        mean = sum(counts) / PRECISION_SLICES
        if not mean:
            return None
        variance = sum((c - mean) ** 2 for c in counts) / (PRECISION_SLICES - 1)
        return math.sqrt(variance / PRECISION_SLICES) / mean

    def enough(self, now: float) -> str | None:
        """Why the window may end at ``now`` ("precise: ..."), or None."""
        if self.members:
            least = self._fewest_messages()
            if least < ROOM_MESSAGES:
                return None
            return f"precise: every member received {least} or more of the window's messages"
        rel = self.rel_stderr(now)
        if self.requests < P99_REQUESTS or rel is None or rel > PRECISE:
            return None
        return f"precise: standard error {rel:.1%} over {self.requests:,} requests"

    def shortfall(self, now: float) -> str:
        """Why a window that lasted to its cap did not end sooner."""
        if self.members:
            return (f"cap: the fewest messages a member received was {self._fewest_messages()}"
                    f" (wanted {ROOM_MESSAGES})")  # fmt: skip
        rel, short = self.rel_stderr(now), []
        if self.requests < P99_REQUESTS:
            short.append(f"{self.requests:,} requests (the p99 wants {P99_REQUESTS})")
        if rel is None or rel > PRECISE:
            short.append("no standard error" if rel is None else f"standard error {rel:.1%}")
        return f"cap: {', '.join(short)}" if short else "cap"

    def _fewest_messages(self) -> int:
        if len(self.received) < self.members:
            return 0
        return min(self.received.values(), default=0)
