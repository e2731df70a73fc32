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

And two chat-room members (with a sender publishing beside Locust): ``RoomMember`` holds
long-polls, ``RoomSocketMember`` holds a WebSocket; both record every message they receive as a
delivery; ``Probe`` sends ``GET /hello`` meanwhile.

The harness runs it headless. By hand, against a server started with ``asyncbench serve``::

    locust -f loadtests/locustfile.py -H http://127.0.0.1:8000 --bench-path "/sleep?ms=100"
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import time

import gevent
import websocket
from gevent import GreenletExit
from locust import FastHttpUser, constant, events, task
from locust.exception import StopUser
from locust.runners import MasterRunner, WorkerRunner

from loadtests.protocol import USERS_PER_WORKER, LocustMeta, Progress, write_record
from loadtests.recording import (
    ArrivalSchedule,
    DeliveryRecorder,
    SampleRecorder,
    Settling,
    WindowPrecision,
)

SAMPLES_MESSAGE = "asyncbench_samples"
PROGRESS_INTERVAL_S = 1.0
SCHEDULE_LEAD_S = 0.2  # open loop: the first send is due this long after the test starts
MEMBER_RETRY_S = 0.5  # after a failed poll
RECONNECT_MIN_S, RECONNECT_MAX_S = 0.5, 8.0  # a dropped socket's backoff, doubling
SOCKET_ENDPOINT = "/room/ws"
STOP_MARGIN_S = 0.02  # the timed stop falls this long after the harness's window ends
DRAIN_POLL_S = 0.05
DRAIN_MIN_S = 0.1  # a room's drain lasts at least the delivery p99 so far plus this
SETTLE_POLL_S = 0.02
# Before the stop, requests started inside the window are answered: Locust's stop work in this
# process answered the last request of each user 30-70 ms late (every 1-user cell's slowest
# request, a 1-3 % standard error, came at the window's end). Users start nothing after the
# window (``BenchUser.hit``), so the wait is for the window's own requests, bounded by the stop
# timeout (every queued user served one after another).
WINDOW_FINISH_POLL_S = 0.005
# The shortest warm-up, even for a 1 ms endpoint: a few event-loop turns of every process, and
# two 100 ms cycles of the slowest equivalent endpoint.
SETTLE_FLOOR_S = 0.2


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
    group.add_argument("--bench-warmup", type=float, default=0.0,
                       help="the longest warm-up after spawning completes, in seconds")
    group.add_argument("--bench-settle-cycles", type=int, default=0,
                       help="end the warm-up once every user completed this many requests "
                            "(a member: received this many messages) since spawning (0: never)")
    group.add_argument("--bench-measure", type=float, default=0.0,
                       help="the measured window after the warm-up, in seconds; stop after it "
                            "(0: only --bench-run-time stops)")
    group.add_argument("--bench-measure-min", type=float, default=0.0,
                       help="an adaptive window: from this many seconds on, end it once it is "
                            "precise (--bench-measure is then the longest; 0: a fixed window)")
    group.add_argument("--bench-own-slots", action="store_true",
                       help="every user holds a slot of its own: judge an adaptive window's "
                            "precision by the users' cycles")
    group.add_argument("--bench-drain", type=float, default=0.0,
                       help="room: before stopping, wait up to this long for messages in flight")
    group.add_argument("--samples-out", default="", help="write raw samples (parquet) here")
    group.add_argument("--progress-out", default="", help="write live counters (JSON) here")
    group.add_argument("--meta-out", default="", help="write run timestamps (JSON) here")
    group.add_argument("--deliveries-out", default="", help="room: write deliveries here")
    group.add_argument("--bench-probe-rate", type=float, default=2.0,
                       help="room: GET /hello per second from the probe user")
    # fmt: skip


recorder = SampleRecorder()
deliveries = DeliveryRecorder()
settling = Settling()
precision = WindowPrecision()
FIXED_WINDOW = "fixed"
PRECISION_POLL_S = 0.1
timestamps: dict[str, float] = {}
ending: dict[str, str] = {}  # why the window ended (``LocustMeta.window_reason``)
# Start times of requests still waiting for their answer when Locust killed their user at the
# stop. They have no sample, so the harness must hear of them: every user stuck since inside the
# window means the server hung. (A user killed while between requests may also be hit just after
# it sent its next one: such a request starts at the stop, after the window, and is harmless.)
abandoned: list[float] = []
_waiting: dict[int, float] = {}  # user → start time of its request waiting for an answer
schedule: ArrivalSchedule | None = None
node_name = f"{socket.gethostname()}:{os.getpid()}"
_user_numbers = itertools.count()
_environment = None  # the one Environment (the spawning_complete event does not pass it)
_stopping = _stop_scheduled = False
# Set at the window's end: a request started after it is measured by nobody, and waiting for
# it kept queued cells seconds past their window (a request behind a 22-user queue).
_window_over = False


@events.init.add_listener
def _on_init(environment, **_) -> None:
    global _environment
    _environment = environment
    if isinstance(environment.runner, MasterRunner):
        environment.runner.register_message(SAMPLES_MESSAGE, _on_samples_message)
    else:
        environment.events.request.add_listener(recorder.on_request)


def _on_samples_message(environment, msg, **_) -> None:
    recorder.absorb(msg.data["worker"], msg.data["chunk"])
    abandoned.extend(msg.data.get("abandoned", ()))
    if msg.data.get("deliveries"):
        deliveries.absorb(msg.data["deliveries"])


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
        schedule.start(time.time() + SCHEDULE_LEAD_S)
    if isinstance(environment.runner, WorkerRunner):
        return
    if options.progress_out:
        gevent.spawn(_write_progress, environment, options.progress_out)
    if options.bench_run_time > 0:
        gevent.spawn_later(options.bench_run_time, _stop_and_quit, environment)


def _stop_and_quit(environment) -> None:
    """Stop (a master waits for every worker's samples and "stopped"), then quit.

    A room first lets the messages in flight arrive (``--bench-drain``); its stop timeout is 0,
    so its members then stop at once: a held poll or socket never ends by itself.
    """
    global _stopping
    if _stopping:
        return
    _stopping = True
    drain_s = environment.parsed_options.bench_drain
    if drain_s > 0:
        _drain(environment, drain_s)
    environment.runner.stop()
    environment.runner.quit()


def _drain(environment, limit_s: float) -> None:
    """Wait until every member owed messages holds the newest one sent before the window's end,
    and at least the delivery p99 so far (a message sent just before the end reaches its first
    member), or ``limit_s``. A master's members live on its workers: it waits ``limit_s``."""
    started = time.monotonic()
    members = [g.args[0] for g in environment.runner.user_greenlets
               if g.args and isinstance(g.args[0], RoomMember | RoomSocketMember)]  # fmt: skip
    if isinstance(environment.runner, MasterRunner) or not members:
        gevent.sleep(limit_s)
        return
    window_end = timestamps.get("window_end", time.time())
    floor_s = min(limit_s, deliveries.p99_latency_s() + DRAIN_MIN_S)
    while (elapsed := time.monotonic() - started) < limit_s:
        if elapsed >= floor_s:
            newest = deliveries.newest_sent_before(window_end)
            if all(m.after >= newest for m in members if m.owed):
                return
        gevent.sleep(DRAIN_POLL_S)


@events.spawning_complete.add_listener
def _on_spawning_complete(user_count, **_) -> None:
    timestamps.setdefault("spawn_complete", time.time())
    environment = _environment
    if environment is None or isinstance(environment.runner, WorkerRunner):
        return
    global _stop_scheduled
    if environment.parsed_options.bench_measure > 0 and not _stop_scheduled:
        _stop_scheduled = True
        counted = sum(n for name, n in environment.runner.user_classes_count.items()
                      if name != Probe.__name__)  # the probe's requests do not end the warm-up
        settling.begin(timestamps["spawn_complete"], counted,
                       environment.parsed_options.bench_settle_cycles)  # fmt: skip
        gevent.spawn(_warm_up_then_measure, environment)


def _warm_up_then_measure(environment) -> None:
    """Warm up until every user has settled (``Settling``), at least ``SETTLE_FLOOR_S`` and at
    most ``--bench-warmup``; then the window, then stop. The window's edges are recorded: the
    harness reads them from the meta file. (A master's users live on its workers, which it
    does not hear from until the end: it always warms up for the full time.)"""
    options = environment.parsed_options
    began = timestamps["spawn_complete"]
    longest = max(options.bench_warmup, 0.0)
    shortest = min(SETTLE_FLOOR_S, longest)
    while (now := time.time()) - began < longest:
        if now - began >= shortest and settling.settled_at(now):
            break
        gevent.sleep(SETTLE_POLL_S)
    settling.end()
    window_start = min(time.time(), began + longest)
    timestamps["window_start"] = window_start
    room = options.bench_drain > 0  # a room's window is judged by its deliveries
    precision.begin(window_start, settling.users if room else 0, options.bench_own_slots)
    window_end, reason = _measure_window(options, window_start)
    timestamps["window_end"] = window_end
    ending["window_reason"] = reason
    gevent.sleep(max(0.0, window_end - time.time()) + STOP_MARGIN_S)
    global _window_over
    _window_over = True
    _let_the_window_finish(window_end, options.stop_timeout or 0.0)
    _stop_and_quit(environment)


def _measure_window(options, start: float) -> tuple[float, str]:
    """Wait out the window: ``--bench-measure`` seconds, or, adaptive, from
    ``--bench-measure-min`` on until it is precise (``WindowPrecision``); its end and why."""
    cap, shortest = start + options.bench_measure, options.bench_measure_min
    if not 0 < shortest < options.bench_measure:
        return cap, FIXED_WINDOW
    gevent.sleep(max(0.0, start + shortest - time.time()))
    while (now := time.time()) < cap:
        reason = precision.enough(now)
        if reason:
            return now, reason
        gevent.sleep(PRECISION_POLL_S)
    return cap, precision.shortfall(cap)


def _let_the_window_finish(window_end: float, limit_s: float) -> None:
    """Wait, at most ``limit_s``, until every request started inside the window has its
    answer, so that none is timed across the stop's work."""
    deadline = time.time() + limit_s
    while any(started < window_end for started in _waiting.values()) and time.time() < deadline:
        gevent.sleep(WINDOW_FINISH_POLL_S)


@events.test_stop.add_listener
def _on_test_stop(environment, **_) -> None:
    timestamps["test_stop"] = time.time()
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        # Final stats first, so the master's request count includes everything we send.
        runner._send_stats()
        for i, chunk in enumerate(recorder.chunks()):
            data = {"worker": node_name, "chunk": chunk, "abandoned": [] if i else abandoned,
                    "deliveries": None if i else deliveries.chunk()}  # fmt: skip
            runner.send_message(SAMPLES_MESSAGE, data)
        recorder.__init__()
        deliveries.__init__()
        abandoned.clear()


@events.quitting.add_listener
def _on_quitting(environment, **_) -> None:
    options = environment.parsed_options
    if options is None or isinstance(environment.runner, WorkerRunner):
        return
    if options.samples_out:
        recorder.write_parquet(options.samples_out, node_name)
    if options.deliveries_out:
        deliveries.write_parquet(options.deliveries_out)
    if options.meta_out:
        total = environment.stats.total
        planned = None
        if schedule is not None:
            planned = {"origin": schedule.origin, "rate": schedule.rate,
                       "issued": schedule.issued}  # fmt: skip
        meta = LocustMeta(
            **timestamps, **ending, locust_requests=total.num_requests,
            locust_failures=total.num_failures, recorded=len(recorder), abandoned=abandoned,
            workers=sorted({w for w, _ in recorder.sources}) or [node_name], schedule=planned,
        )  # fmt: skip
        write_record(options.meta_out, meta)


def _write_progress(environment, path: str) -> None:
    """Once a second: requests and failures so far, for the harness's live display."""
    while True:
        total = environment.stats.total
        runner = environment.runner
        progress = Progress(
            t=time.time(), requests=total.num_requests, failures=total.num_failures,
            users=runner.user_count if runner else 0, deliveries=len(deliveries),
        )  # fmt: skip
        write_record(path, progress)
        gevent.sleep(PROGRESS_INTERVAL_S)


class _NumberedUser(FastHttpUser):
    """A user with an id unique across worker processes (the samples' ``user`` column)."""

    abstract = True
    wait_time = constant(0)
    # Longer than any allowed delay (60 s) so a slow-but-correct answer is never cut off.
    network_timeout = 75.0
    connection_timeout = 75.0

    def on_start(self) -> None:
        worker = getattr(self.environment.runner, "worker_index", 0) or 0
        self.user_id = worker * USERS_PER_WORKER + next(_user_numbers)


class BenchUser(_NumberedUser):
    """Closed loop by default; with ``--bench-rate`` each request waits for its intended time."""

    def on_start(self) -> None:
        super().on_start()
        self.path = self.environment.parsed_options.bench_path
        self.name = self.path.split("?")[0]  # one stats row per endpoint, not per delay

    @task
    def hit(self) -> None:
        if _window_over:  # its last cycle ends at its last answer (``closed_loop_throughput``)
            raise StopUser()
        context = {"user": self.user_id}
        if schedule is not None:
            context["intended_time"] = intended = schedule.take()
            wait = intended - time.time()
            if wait > 0:
                gevent.sleep(wait)
        started = time.time()
        _waiting[self.user_id] = started
        try:
            self.client.get(self.path, name=self.name, context=context)
        except GreenletExit:
            abandoned.append(started)
            raise
        finally:
            del _waiting[self.user_id]
        finished = time.time()
        precision.completed(finished, self.user_id, finished - started)
        settling.count(self.user_id, started, finished - started)


class RoomMember(_NumberedUser):
    """A chat-room member on long-poll: poll with the last id it has, record every message it
    receives (with the sender's embedded timestamp), poll again at once."""

    owed = True  # every message, whether or not a worker holds its poll yet

    def on_start(self) -> None:
        super().on_start()
        self.after = 0  # network_timeout (75 s) outlasts the longest hold (60 s)

    @task
    def poll(self) -> None:
        context = {"user": self.user_id}
        with self.client.get(f"/room/poll?after={self.after}", name="/room/poll",
                             context=context, catch_response=True) as response:  # fmt: skip
            received = time.time()
            if response.status_code == 200:
                for message in json.loads(response.content)["messages"]:
                    deliveries.record(self.user_id, message["id"], message["sent"], received)
                    settling.count(self.user_id, message["sent"])
                    precision.delivered(self.user_id, message["sent"])
                    self.after = max(self.after, message["id"])
            elif response.status_code == 204:
                response.success()
            else:
                response.failure(f"HTTP {response.status_code}")
                gevent.sleep(MEMBER_RETRY_S)


class Probe(_NumberedUser):
    """While a room is held: ``GET /hello`` at fixed intended times (an open loop), so its
    latency shows whether the server can still serve anything else."""

    fixed_count = 1

    def on_start(self) -> None:
        super().on_start()
        self.gap = 1 / self.environment.parsed_options.bench_probe_rate
        self.next_time = time.time()

    @task
    def hello(self) -> None:
        intended, self.next_time = self.next_time, self.next_time + self.gap
        wait = intended - time.time()
        if wait > 0:
            gevent.sleep(wait)
        self.client.get("/hello", name="/hello", context={"user": self.user_id,
                                                          "intended_time": intended})  # fmt: skip


class Handshake:
    """What the sample recorder reads of a WebSocket upgrade: its HTTP status."""

    headers = None

    def __init__(self, status_code: int) -> None:
        self.status_code = status_code


class SocketDropped(Exception):
    """A member's open WebSocket ended without the member closing it."""


class RoomSocketMember(_NumberedUser):
    """A chat-room member on a WebSocket: one connection, every message a text frame.

    Each upgrade is a sample (endpoint ``/room/ws``, status 101, latency = time to be
    connected, which includes any wait in the server's accept queue); a socket that drops is a
    failed sample, and the member reconnects with ``after`` = the last id it has, backing off
    from RECONNECT_MIN_S, doubling up to RECONNECT_MAX_S (every reconnect is counted).
    """

    def on_start(self) -> None:
        super().on_start()
        self.after = 0
        self.socket: websocket.WebSocket | None = None
        self.backoff = RECONNECT_MIN_S
        self.owed = False  # messages are owed once connected (the harness counts it so too)

    def on_stop(self) -> None:
        if self.socket is not None:
            self.socket.close()
            self.socket = None

    @task
    def listen(self) -> None:
        if self.socket is None:
            if not self._connect():
                self._back_off()
            return
        try:
            frame = self.socket.recv()
        except (websocket.WebSocketException, OSError) as exc:
            self.socket = None
            self._fire(time.time(), 0.0, 0, SocketDropped(f"{type(exc).__name__}: {exc}"))
            self._back_off()
            return
        received = time.time()
        message = json.loads(frame)
        deliveries.record(self.user_id, message["id"], message["sent"], received)
        settling.count(self.user_id, message["sent"])
        precision.delivered(self.user_id, message["sent"])
        self.after = max(self.after, message["id"])

    def _connect(self) -> bool:
        url = self.host.replace("http", "ws", 1) + f"{SOCKET_ENDPOINT}?after={self.after}"
        started = time.time()
        try:
            self.socket = websocket.create_connection(url, timeout=self.network_timeout)
        except websocket.WebSocketBadStatusException as exc:
            self._fire(started, _ms_since(started), exc.status_code, exc)
            return False
        except (websocket.WebSocketException, OSError) as exc:
            self._fire(started, _ms_since(started), 0, exc)
            return False
        self.socket.settimeout(None)  # a quiet room is not an error: wait for the next frame
        self.owed = True
        self._fire(started, _ms_since(started), 101, None)
        self.backoff = RECONNECT_MIN_S
        return True

    def _back_off(self) -> None:
        gevent.sleep(self.backoff)
        self.backoff = min(RECONNECT_MAX_S, 2 * self.backoff)

    def _fire(self, started: float, ms: float, status: int, exc: Exception | None) -> None:
        self.environment.events.request.fire(
            request_type="WS", name=SOCKET_ENDPOINT, start_time=started, response_time=ms,
            response_length=0, response=Handshake(status), exception=exc,
            context={"user": self.user_id},
        )  # fmt: skip


def _ms_since(started: float) -> float:
    return (time.time() - started) * 1000
