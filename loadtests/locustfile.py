"""Locust user code for asyncbench: one endpoint, and every request's exact timing kept.

Locust rounds response times in its own percentiles (147 ms becomes 150 ms), so this file keeps
the raw timing of every request from the ``request`` event (start time, latency in float ms,
status, bytes, error, and in rate mode the intended send time) in flat arrays; the listener on
the hot path only appends. The samples are written once, at the end:

* standalone: to ``--samples-out`` when Locust quits;
* distributed: each worker sends its samples to the master when it stops (before it reports
  "stopped", so the master has them all before it quits), and the master writes them merged.

Two load shapes:

* closed loop (default): each user sends its next request as soon as the last one answered;
* open loop (``--bench-rate R``): requests are due at intended times from a constant or Poisson
  arrival process, whatever the server does; a request's corrected latency is measured from its
  intended time, so queueing in front of a slow server is not hidden (coordinated omission).

The harness runs it headless. By hand, against a server started with ``asyncbench serve``::

    locust -f loadtests/locustfile.py -H http://127.0.0.1:8000 --bench-path "/sleep?ms=100"
"""

from __future__ import annotations

import json
import math
import os
import random
import socket
import time
from array import array

import gevent
from gevent import GreenletExit
from locust import FastHttpUser, constant, events, task
from locust.runners import MasterRunner, WorkerRunner

SAMPLES_MESSAGE = "asyncbench_samples"
CHUNK_ROWS = 50_000
COLUMNS = ("start_time", "latency_ms", "status", "bytes", "intended_time")


@events.init_command_line_parser.add_listener
def _add_arguments(parser) -> None:
    group = parser.add_argument_group("asyncbench")
    group.add_argument("--bench-path", default="/hello", help="request path, e.g. /sleep?ms=100")
    group.add_argument("--bench-rate", type=float, default=0.0,
                       help="open loop: requests per second in total (0: closed loop)")
    group.add_argument("--bench-arrival", choices=("constant", "poisson"), default="constant")
    group.add_argument("--bench-seed", type=int, default=0, help="seed of the arrival process")
    group.add_argument("--bench-run-time", type=float, default=0.0,
                       help="stop after this many seconds, collecting every worker's samples")
    group.add_argument("--samples-out", default="", help="write raw samples (parquet) here")
    group.add_argument("--progress-out", default="", help="write live counters (JSON) here")
    group.add_argument("--meta-out", default="", help="write run timestamps (JSON) here")
    # fmt: skip


class SampleRecorder:
    """Raw per-request samples in column arrays; appending is the only work per request."""

    def __init__(self) -> None:
        self.columns = {
            "start_time": array("d"), "latency_ms": array("d"), "status": array("i"),
            "bytes": array("q"), "intended_time": array("d"),
        }  # fmt: skip
        self.errors: dict[int, str] = {}  # row -> message, for the rare failed request
        self.sources: list[tuple[str, int]] = []  # (worker, rows) for merged samples

    def __len__(self) -> int:
        return len(self.columns["start_time"])

    def on_request(self, start_time, response_time, response_length, response, exception,
                   context, **_) -> None:  # fmt: skip
        c = self.columns
        if exception is not None:
            self.errors[len(self)] = f"{type(exception).__name__}: {exception}"[:200]
        c["start_time"].append(start_time)
        c["latency_ms"].append(response_time)
        c["status"].append(getattr(response, "status_code", 0) or 0)
        c["bytes"].append(response_length or 0)
        c["intended_time"].append(context.get("intended_time", math.nan))

    def chunks(self):
        """The samples as messages of at most ``CHUNK_ROWS`` rows, for sending to the master."""
        for begin in range(0, max(len(self), 1), CHUNK_ROWS):
            end = min(begin + CHUNK_ROWS, len(self))
            yield {
                "columns": {k: v[begin:end].tolist() for k, v in self.columns.items()},
                "errors": {str(i - begin): e for i, e in self.errors.items() if begin <= i < end},
            }

    def absorb(self, worker: str, chunk: dict) -> None:
        """Append a chunk received from a worker."""
        offset = len(self)
        for name, values in chunk["columns"].items():
            self.columns[name].extend(values)
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
            }
        )
        tmp = f"{path}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, path)


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


recorder = SampleRecorder()
timestamps: dict[str, float] = {}
# Start times of requests still waiting for their answer when Locust killed their user at the
# stop. They have no sample, so the harness must hear of them: every user stuck since inside the
# window means the server hung. (A user killed while between requests may also be hit just after
# it sent its next one: such a request starts at the stop, after the window, and is harmless.)
abandoned: list[float] = []
schedule: ArrivalSchedule | None = None
node_name = f"{socket.gethostname()}:{os.getpid()}"


@events.init.add_listener
def _on_init(environment, **_) -> None:
    if isinstance(environment.runner, MasterRunner):
        environment.runner.register_message(SAMPLES_MESSAGE, _on_samples_message)
    else:
        environment.events.request.add_listener(recorder.on_request)


def _on_samples_message(environment, msg, **_) -> None:
    recorder.absorb(msg.data["worker"], msg.data["chunk"])
    abandoned.extend(msg.data.get("abandoned", ()))


@events.test_start.add_listener
def _on_test_start(environment, **_) -> None:
    global schedule
    timestamps["test_start"] = time.time()
    options = environment.parsed_options
    if options is None:
        return
    if options.bench_rate > 0 and not isinstance(environment.runner, MasterRunner):
        processes = max(1, getattr(options, "expect_workers", 1) or 1)
        if not isinstance(environment.runner, WorkerRunner):
            processes = 1
        seed = options.bench_seed + (getattr(environment.runner, "worker_index", 0) or 0)
        schedule = ArrivalSchedule(options.bench_rate / processes, options.bench_arrival, seed)
        schedule.start(time.time() + 0.2)
    if isinstance(environment.runner, WorkerRunner):
        return
    if options.progress_out:
        gevent.spawn(_write_progress, environment, options.progress_out)
    if options.bench_run_time > 0:
        gevent.spawn_later(options.bench_run_time, _stop_and_quit, environment)


def _stop_and_quit(environment) -> None:
    """Stop (a master waits for every worker's samples and "stopped"), then quit."""
    environment.runner.stop()
    environment.runner.quit()


@events.spawning_complete.add_listener
def _on_spawning_complete(user_count, **_) -> None:
    timestamps.setdefault("spawn_complete", time.time())


@events.test_stop.add_listener
def _on_test_stop(environment, **_) -> None:
    timestamps["test_stop"] = time.time()
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        # Final stats first, so the master's request count includes everything we send.
        runner._send_stats()
        for i, chunk in enumerate(recorder.chunks()):
            data = {"worker": node_name, "chunk": chunk, "abandoned": [] if i else abandoned}
            runner.send_message(SAMPLES_MESSAGE, data)
        recorder.__init__()
        abandoned.clear()


@events.quitting.add_listener
def _on_quitting(environment, **_) -> None:
    options = environment.parsed_options
    if options is None or isinstance(environment.runner, WorkerRunner):
        return
    if options.samples_out:
        recorder.write_parquet(options.samples_out, node_name)
    if options.meta_out:
        total = environment.stats.total
        meta = {
            **timestamps,
            "locust_requests": total.num_requests,
            "locust_failures": total.num_failures,
            "recorded": len(recorder),
            "abandoned": abandoned,
            "workers": sorted({w for w, _ in recorder.sources}) or [node_name],
        }
        if schedule is not None:
            meta["schedule"] = {"origin": schedule.origin, "rate": schedule.rate,
                                "issued": schedule.issued}  # fmt: skip
        _write_json(options.meta_out, meta)


def _write_progress(environment, path: str) -> None:
    """Once a second: requests and failures so far, for the harness's live display."""
    while True:
        total = environment.stats.total
        runner = environment.runner
        _write_json(
            path,
            {
                "t": time.time(),
                "requests": total.num_requests,
                "failures": total.num_failures,
                "users": runner.user_count if runner else 0,
            },
        )
        gevent.sleep(1.0)


def _write_json(path: str, payload: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(payload, fh)
    os.replace(tmp, path)


class BenchUser(FastHttpUser):
    """Closed loop by default; with ``--bench-rate`` each request waits for its intended time."""

    wait_time = constant(0)
    # Longer than any allowed delay (60 s) so a slow-but-correct answer is never cut off.
    network_timeout = 75.0
    connection_timeout = 75.0

    def on_start(self) -> None:
        self.path = self.environment.parsed_options.bench_path
        self.name = self.path.split("?")[0]  # one stats row per endpoint, not per delay

    @task
    def hit(self) -> None:
        context = {}
        if schedule is not None:
            context["intended_time"] = intended = schedule.take()
            wait = intended - time.time()
            if wait > 0:
                gevent.sleep(wait)
        started = time.time()
        try:
            self.client.get(self.path, name=self.name, context=context)
        except GreenletExit:
            abandoned.append(started)
            raise
