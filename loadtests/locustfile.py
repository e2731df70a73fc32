"""Locust user code for asyncbench: one endpoint, no wait, and every request's exact timing kept.

Locust rounds response times in its own percentiles (147 ms becomes 150 ms), so this file keeps
the raw timing of every request from the ``request`` event (start time, latency in float ms,
status, bytes, error) in flat arrays and writes them once, when Locust quits: the listener on the
hot path only appends.

The harness runs it headless with ``--bench-path`` and ``--samples-out``. By hand, against a
server started with ``asyncbench serve``::

    locust -f loadtests/locustfile.py -H http://127.0.0.1:8000 --bench-path "/sleep?ms=100"
"""

from __future__ import annotations

import json
import os
import time
from array import array

import gevent
from locust import FastHttpUser, constant, events, task
from locust.runners import MasterRunner


@events.init_command_line_parser.add_listener
def _add_arguments(parser) -> None:
    group = parser.add_argument_group("asyncbench")
    group.add_argument("--bench-path", default="/hello", help="request path, e.g. /sleep?ms=100")
    group.add_argument("--samples-out", default="", help="write raw samples (parquet) here")
    group.add_argument("--progress-out", default="", help="write live counters (JSON) here")
    group.add_argument("--meta-out", default="", help="write run timestamps (JSON) here")


class SampleRecorder:
    """Raw per-request samples in column arrays; appending is the only work per request."""

    def __init__(self) -> None:
        self.start = array("d")
        self.latency_ms = array("d")
        self.status = array("i")
        self.nbytes = array("q")
        self.errors: dict[int, str] = {}  # row -> message, for the rare failed request

    def __len__(self) -> int:
        return len(self.start)

    def on_request(self, start_time, response_time, response_length, response, exception, **_):
        if exception is not None:
            self.errors[len(self.start)] = f"{type(exception).__name__}: {exception}"[:200]
        self.start.append(start_time)
        self.latency_ms.append(response_time)
        self.status.append(getattr(response, "status_code", 0) or 0)
        self.nbytes.append(response_length or 0)

    def write_parquet(self, path: str) -> None:
        import pyarrow as pa  # imported at the end only: nothing extra on the hot path
        import pyarrow.parquet as pq

        errors = [self.errors.get(i) for i in range(len(self))] if self.errors else None
        table = pa.table(
            {
                "start_time": pa.array(self.start, pa.float64()),
                "latency_ms": pa.array(self.latency_ms, pa.float64()),
                "status": pa.array(self.status, pa.int32()),
                "bytes": pa.array(self.nbytes, pa.int64()),
                "error": pa.array(errors or [None] * len(self), pa.string()),
            }
        )
        tmp = f"{path}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, path)


recorder = SampleRecorder()
timestamps: dict[str, float] = {}


@events.init.add_listener
def _on_init(environment, **_) -> None:
    if not isinstance(environment.runner, MasterRunner):
        environment.events.request.add_listener(recorder.on_request)


@events.test_start.add_listener
def _on_test_start(environment, **_) -> None:
    timestamps["test_start"] = time.time()
    out = environment.parsed_options.progress_out if environment.parsed_options else ""
    if out:
        gevent.spawn(_write_progress, environment, out)


@events.spawning_complete.add_listener
def _on_spawning_complete(user_count, **_) -> None:
    timestamps.setdefault("spawn_complete", time.time())


@events.test_stop.add_listener
def _on_test_stop(environment, **_) -> None:
    timestamps["test_stop"] = time.time()


@events.quitting.add_listener
def _on_quitting(environment, **_) -> None:
    options = environment.parsed_options
    if options is None:
        return
    if options.samples_out:
        recorder.write_parquet(options.samples_out)
    if options.meta_out:
        total = environment.stats.total
        meta = {
            **timestamps,
            "locust_requests": total.num_requests,
            "locust_failures": total.num_failures,
            "recorded": len(recorder),
        }
        _write_json(options.meta_out, meta)


def _write_progress(environment, path: str) -> None:
    """Once a second: requests and failures so far, for the harness's live display."""
    while True:
        total = environment.stats.total
        _write_json(
            path,
            {
                "t": time.time(),
                "requests": total.num_requests,
                "failures": total.num_failures,
                "users": environment.runner.user_count if environment.runner else 0,
            },
        )
        gevent.sleep(1.0)


def _write_json(path: str, payload: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(payload, fh)
    os.replace(tmp, path)


class EndpointUser(FastHttpUser):
    """A closed-loop user: sends the next request as soon as the previous one answered."""

    wait_time = constant(0)
    # Longer than any allowed delay (60 s) so a slow-but-correct answer is never cut off.
    network_timeout = 75.0
    connection_timeout = 75.0

    @task
    def hit(self) -> None:
        self.client.get(self.environment.parsed_options.bench_path, name=self._name())

    def _name(self) -> str:
        return self.environment.parsed_options.bench_path.split("?")[0]
