"""The server models and the upstream against their contract: real processes on loopback."""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import psutil
import pytest
from conftest import SERVER_THREADS, SERVER_WORKERS, model_config

from asyncbench.measuring.mariadb import Database
from asyncbench.measuring.processes import free_port
from asyncbench.measuring.services import Server, Upstream, server
from loadtests.recording import parse_server_timing
from servers import MODELS
from servers.counters import read_counts, read_gauges
from servers.endpoints import CONTENT_TYPE, expected_body
from servers.flask_blocking import GRACEFUL_TIMEOUT_S
from servers.registry import LIBRARY, PER_WORKER

pytestmark = pytest.mark.slow  # real server processes

WORKERS = SERVER_WORKERS
THREADS = SERVER_THREADS
CONCURRENCY = 20
SLOW_MS = 300
SCENARIOS = [("hello", None), ("sleep", 50), ("fetch", 50), ("sql", 50)]
BAD_QUERIES = [
    "",
    "ms=",
    "ms=abc",
    "ms=1.5",
    "ms=-1",
    "ms=+1",
    "ms=60001",
    "ms=1&ms=2",
    "ms=1&host=evil.example",
    "ms=1&url=http://x",
    "%ff",
    "ms=%ff",
]


@contextlib.contextmanager
def connection(url: str, timeout_s: float = 15) -> Iterator[http.client.HTTPConnection]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
    try:
        yield conn
    finally:
        conn.close()


def get(url: str, path: str, method: str = "GET") -> tuple[int, bytes, str | None]:
    """One request on its own connection: status, body bytes, Content-Type."""
    with connection(url) as conn:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.read(), response.getheader("Content-Type")


def timed_get(url: str, path: str) -> tuple[float, int, bytes]:
    start = time.perf_counter()
    status, body, _ = get(url, path)
    return time.perf_counter() - start, status, body


def concurrent_gets(url: str, path: str, n: int) -> tuple[float, list[tuple[int, bytes]]]:
    """``n`` simultaneous requests, each on its own connection; wall time from the release."""
    barrier = threading.Barrier(n + 1)

    def one() -> tuple[int, bytes]:
        barrier.wait()
        status, body, _ = get(url, path)
        return status, body

    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(one) for _ in range(n)]
        barrier.wait()
        start = time.perf_counter()
        results = [f.result() for f in futures]
        return time.perf_counter() - start, results


def assert_json_error(status: int, body: bytes, expected_status: int) -> None:
    assert status == expected_status, body
    assert body.endswith(b"\n") and body.count(b"\n") == 1
    assert "error" in json.loads(body)


@pytest.fixture(params=list(MODELS))
def running(request: pytest.FixtureRequest, servers: dict[str, Server]) -> Server:
    return servers[request.param]


@pytest.mark.parametrize(("endpoint", "ms"), SCENARIOS)
def test_scenario_endpoint_does_the_work(
    running: Server, endpoint: str, ms: int | None, mariadb: Database, upstream_service: Upstream
) -> None:
    path = f"/{endpoint}" if ms is None else f"/{endpoint}?ms={ms}"
    hits, selects = upstream_service.hits(), mariadb.status("Com_select")
    start = time.perf_counter()
    status, body, content_type = get(running.url, path)
    elapsed = time.perf_counter() - start
    assert (status, body, content_type) == (200, expected_body(endpoint, ms), CONTENT_TYPE)
    assert elapsed >= (ms or 0) / 1000
    if endpoint == "fetch":
        assert upstream_service.hits() > hits
    if endpoint == "sql":
        assert mariadb.status("Com_select") > selects


@pytest.mark.parametrize(("endpoint", "ms"), SCENARIOS)
def test_same_bytes_on_every_model(servers: dict[str, Server], endpoint: str, ms: int | None):
    path = f"/{endpoint}" if ms is None else f"/{endpoint}?ms={ms}"
    answers = {name: get(s.url, path) for name, s in servers.items()}
    assert len(set(answers.values())) == 1, answers


@pytest.mark.parametrize("endpoint", ["sleep", "fetch", "sql"])
def test_server_timing_is_the_handler_time(running: Server, endpoint: str) -> None:
    timings = []
    # The first /sql a worker serves may open its MySQL connection: with more requests than
    # workers, some land on a warm one, and the fastest is the handler's own time.
    for _ in range(WORKERS + 2):
        with connection(running.url) as conn:
            conn.request("GET", f"/{endpoint}?ms={SLOW_MS}")
            response = conn.getresponse()
            response.read()
            timings.append(response.getheader("Server-Timing"))
    handlers, pids = zip(*(parse_server_timing(t) for t in timings), strict=True)
    assert SLOW_MS <= min(handlers) < SLOW_MS + 40, timings  # a few ms of work beside the wait
    serving = {p.pid for p in full_tree(running)}
    serving -= {running.process.pid} if MODELS[running.model].multi_process else set()
    assert set(pids) <= serving, (timings, serving)  # the process that answered: a worker's pid


@pytest.mark.parametrize("model", [m for m in MODELS if MODELS[m].concurrency is PER_WORKER])
def test_server_timing_leaves_out_the_wait_for_a_busy_worker(servers, model: str) -> None:
    """8 kept-alive clients per worker: each request waits for others (the latency shows it),
    its Server-Timing is its own handler's time only."""
    url = servers[model].url

    def one_client(_) -> list[tuple[float, float]]:
        timings = []
        with connection(url) as conn:
            for _ in range(3):
                started = time.monotonic()
                conn.request("GET", "/sleep?ms=50")
                response = conn.getresponse()
                response.read()
                handler_ms, _ = parse_server_timing(response.getheader("Server-Timing"))
                timings.append((handler_ms, (time.monotonic() - started) * 1000))
        return timings

    with ThreadPoolExecutor(8 * WORKERS) as pool:
        timings = [t for client in pool.map(one_client, range(8 * WORKERS)) for t in client]
    assert max(latency for _, latency in timings) > 200  # requests did queue
    assert all(50 <= handler < 90 for handler, _ in timings), timings


def test_health(running: Server) -> None:
    status, body, content_type = get(running.url, "/health")
    assert (status, content_type) == (200, CONTENT_TYPE)
    assert json.loads(body) == {"status": "ok", "model": running.model}


# Wall time of 20 simultaneous 300 ms requests, in units of the delay: ~1 when coroutine.
# gunicorn sync workers accept one connection at a time, so 2 workers share them evenly (~10).
# A tornado-forked child accepts every connection queued when it is idle, then serves them one
# by one while the other child may sit idle: anywhere from an even split (~10) to all 20 in one
# child (~20). That is how this model behaves, so the test allows it.
# gthread workers also accept more connections than they have threads and queue them inside:
# from an even split (ceil(20 / 8) = 3 rounds) to all in one worker (ceil(20 / 4) = 5 rounds).
# The thread pool is one queue in front of its threads: ceil(20 / 4) = 5 rounds.
CONCURRENT_DELAYS = {
    "flask-blocking": (0.7 * CONCURRENCY / WORKERS, 1.5 * CONCURRENCY / WORKERS),
    "flask-threaded": (0.9 * math.ceil(CONCURRENCY / (WORKERS * THREADS)),
                       1.25 * math.ceil(CONCURRENCY / THREADS)),
    "tornado-forked": (0.7 * CONCURRENCY / WORKERS, 1.25 * CONCURRENCY),
    "tornado-forked-reuseport": (0.7 * CONCURRENCY / WORKERS, 1.25 * CONCURRENCY),
    "tornado-coroutine": (1.0, 2.0),
    # greenlets: every request at once, on either worker; a query that finds no idle MySQL
    # connection opens one on the hub first (20 sql took 0.63 s once, on a fresh clone's CI).
    # Serialised on the hub, the 20 would take 10 rounds on 2 workers.
    "flask-gevent": (1.0, 3.0),
    "fastapi-uvicorn": (1.0, 2.0),
    "tornado-threadpool": (0.9 * math.ceil(CONCURRENCY / THREADS),
                           1.25 * math.ceil(CONCURRENCY / THREADS)),
}  # fmt: skip


@pytest.mark.parametrize("endpoint", ["sleep", "fetch", "sql"])
def test_concurrency_follows_the_model(running: Server, endpoint: str) -> None:
    if endpoint == "sql":  # aiomysql's pool opens the connections it lacks one at a time,
        concurrent_gets(running.url, "/sql?ms=0", CONCURRENCY)  # 20 added 0.3 s here once
    elapsed, results = concurrent_gets(running.url, f"/{endpoint}?ms={SLOW_MS}", CONCURRENCY)
    assert results == [(200, expected_body(endpoint, SLOW_MS))] * CONCURRENCY
    low, high = CONCURRENT_DELAYS[running.model]
    assert low * SLOW_MS / 1000 <= elapsed < high * SLOW_MS / 1000, f"{elapsed:.2f} s"


# (model, workers, threads) → the requests it holds at once: the capacity law in the registry.
THREAD_SLOTS = [("flask-threaded", 2, 4, 8), ("flask-threaded", 2, 16, 32),
                ("tornado-threadpool", 1, 8, 8), ("tornado-threadpool", 1, 32, 32)]  # fmt: skip


@pytest.mark.parametrize(("model", "workers", "threads", "slots"), THREAD_SLOTS)
@pytest.mark.parametrize("endpoint", ["sleep", "fetch", "sql"])
def test_threads_are_the_slots(mariadb, upstream_service, model, workers, threads, slots, endpoint):
    """20 simultaneous 300 ms requests take ceil(20 / slots) rounds; gthread may take up to
    ceil(20 / threads) when one worker accepted more than its share."""
    config = model_config(upstream_service.url, mariadb.url, model, workers=workers,
                          threads=threads)  # fmt: skip
    assert MODELS[model].slots(config, "upstream", None) == slots
    with server(model, config) as running:
        # a first round starts the threads and opens their database connections
        concurrent_gets(running.url, f"/{endpoint}?ms=0", CONCURRENCY)
        elapsed, results = concurrent_gets(running.url, f"/{endpoint}?ms={SLOW_MS}", CONCURRENCY)
    assert results == [(200, expected_body(endpoint, SLOW_MS))] * CONCURRENCY
    fewest, most = math.ceil(CONCURRENCY / slots), math.ceil(CONCURRENCY / threads)
    rounds = elapsed / (SLOW_MS / 1000)
    assert 0.9 * fewest <= rounds < 1.25 * most + 0.5, f"{elapsed:.2f} s"


def test_library_defaults_cap_the_coroutine_models_fetch_at_ten(upstream_service):
    """AsyncHTTPClient's default max_clients = 10: 20 simultaneous fetches take two rounds."""
    model = MODELS["tornado-coroutine"]
    config = model.configure(model_config(upstream_service.url, None), LIBRARY)
    assert config.max_clients == 10
    with server(model.name, config) as running:
        elapsed, results = concurrent_gets(running.url, f"/fetch?ms={SLOW_MS}", CONCURRENCY)
    assert results == [(200, expected_body("fetch", SLOW_MS))] * CONCURRENCY
    assert 1.8 <= elapsed / (SLOW_MS / 1000) < 3.0, f"{elapsed:.2f} s"


def test_each_process_counts_its_requests(tmp_path, model_name="tornado-forked"):
    config = model_config(None, None, model_name, stats_dir=str(tmp_path))
    with server(model_name, config) as running:
        full_tree(running)
        for _ in range(30):
            get(running.url, "/hello")
        time.sleep(0.2)
        counts = read_counts(tmp_path)
        workers = {p.pid for p in running.process.tree()[1:]}
    assert set(counts) <= workers and sum(counts.values()) >= 30  # /health checks count too


def test_sql_survives_the_database_dropping_its_connections(running: Server, mariadb: Database):
    assert get(running.url, "/sql?ms=0")[0] == 200
    with contextlib.closing(mariadb.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID()")
        thread_ids = [row[0] for row in cur.fetchall()]
        for thread_id in thread_ids:
            cur.execute("KILL CONNECTION %s", (thread_id,))
    assert thread_ids, "the server holds no database connection"
    time.sleep(0.1)
    for _ in range(2 * WORKERS):
        assert get(running.url, "/sql?ms=0")[:2] == (200, expected_body("sql", 0))


def database_connections(mariadb: Database) -> int:
    """Client connections MariaDB holds, not counting the one asking."""
    with contextlib.closing(mariadb.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                    "WHERE ID <> CONNECTION_ID() AND COMMAND <> 'Daemon'")  # fmt: skip
        return int(cur.fetchone()[0])


@pytest.mark.parametrize("model", ["flask-blocking", "tornado-forked"])
def test_one_thread_per_process_models_connect_each_worker_before_any_request(mariadb, model):
    before = database_connections(mariadb)
    config = model_config(None, mariadb.url, model)
    with server(model, config):
        deadline = time.monotonic() + 10
        while (held := database_connections(mariadb) - before) < WORKERS:
            assert time.monotonic() < deadline, f"{held} of {WORKERS} workers connected"
            time.sleep(0.05)
    assert held == WORKERS  # one per worker, no request made


@pytest.mark.parametrize("model", ["flask-threaded", "tornado-threadpool"])
def test_a_process_threads_share_its_idle_database_connection(mariadb, model):
    """Queries one at a time take the idle connection whichever pool thread serves them: a
    process holds one, not one per thread it happened to use (with one per thread, threads
    new to a query opened theirs inside measured windows)."""
    before = database_connections(mariadb)
    config = model_config(None, mariadb.url, model)
    with server(model, config) as running:
        concurrent_gets(running.url, "/sleep?ms=50", CONCURRENCY)  # every pool thread started
        for _ in range(4 * SERVER_THREADS):
            assert get(running.url, "/sql?ms=0")[:2] == (200, expected_body("sql", 0))
        held = database_connections(mariadb) - before
    processes = config.workers if MODELS[model].multi_process else 1
    assert 1 <= held <= processes, f"{held} connections for {processes} processes"


@pytest.mark.parametrize("query", BAD_QUERIES)
def test_bad_input_is_400_json(running: Server, query: str) -> None:
    for endpoint in ("sleep", "fetch", "sql"):
        status, body, content_type = get(running.url, f"/{endpoint}?{query}")
        assert_json_error(status, body, 400)
        assert content_type == CONTENT_TYPE


def test_params_on_hello_and_health_are_400(running: Server) -> None:
    for path in ("/hello?ms=1", "/hello?name=x", "/health?x=1"):
        assert_json_error(*get(running.url, path)[:2], 400)


def test_unknown_path_is_404_and_wrong_method_405(running: Server) -> None:
    for path in ("/nope", "/hello/", "/sleeps?ms=1", "/"):
        assert_json_error(*get(running.url, path)[:2], 404)
    assert_json_error(*get(running.url, "/hello", method="POST")[:2], 405)


def test_binds_loopback_only(running: Server) -> None:
    listening = [
        c.laddr
        for proc in running.process.tree()
        for c in proc.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]
    assert listening and {addr.ip for addr in listening} == {"127.0.0.1"}
    assert {addr.port for addr in listening} == {running.config.port}


def expected_tree(model: str) -> int:
    """Processes a model runs: one, or a parent plus one per worker."""
    return 1 + WORKERS if MODELS[model].multi_process else 1


def full_tree(running: Server, timeout_s: float = 5) -> list[psutil.Process]:
    """The process tree once every worker is up (``/health`` answers as soon as one is)."""
    deadline = time.monotonic() + timeout_s
    while len(tree := running.process.tree()) < expected_tree(running.model):
        assert time.monotonic() < deadline, f"only {len(tree)} processes"
        time.sleep(0.05)
    return tree


def still_running(pids: list[int], timeout_s: float = 0) -> list[int]:
    """Which of ``pids`` still run (zombies waiting for init to reap them have stopped)."""
    deadline = time.monotonic() + timeout_s
    while (alive := [pid for pid in pids if _running(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("model", list(MODELS))
def test_failed_backends_are_502_503_and_sigterm_stops_the_tree(model: str) -> None:
    dead_upstream = f"http://127.0.0.1:{free_port()}"
    dead_db = f"mysql://nobody:secret@127.0.0.1:{free_port()}/none"
    with server(model, model_config(dead_upstream, dead_db)) as running:
        assert_json_error(*get(running.url, "/fetch?ms=1")[:2], 502)
        status, body, _ = get(running.url, "/sql?ms=1")
        assert_json_error(status, body, 503)
        assert b"secret" not in body
        pids = [p.pid for p in full_tree(running)]
        os.kill(running.process.pid, signal.SIGTERM)  # the parent only, not the group
        # gunicorn's arbiter gives its workers GRACEFUL_TIMEOUT_S before it kills them (a
        # gthread worker was seen still running after 2 s in CI): that, and a margin.
        bound_s = GRACEFUL_TIMEOUT_S + 2
        assert not still_running(pids, timeout_s=bound_s), "workers outlived their parent"


@pytest.mark.parametrize("model", list(MODELS))
def test_stopping_leaves_no_process_behind(model: str) -> None:
    with server(model, model_config(None, None)) as running:
        assert_json_error(*get(running.url, "/fetch?ms=1")[:2], 503)
        assert_json_error(*get(running.url, "/sql?ms=1")[:2], 503)
        pids = [p.pid for p in full_tree(running)]
        start = time.perf_counter()
    # Every model stops on SIGTERM by itself, before the harness's SIGKILL (5 s): Tornado at
    # once, gunicorn within its arbiter's GRACEFUL_TIMEOUT_S (gunicorn 27's gthread worker lets
    # kept-alive and just-accepted connections linger for up to 2 s first: 3.2 s was seen in CI).
    assert time.perf_counter() - start < GRACEFUL_TIMEOUT_S + 1
    assert not still_running(pids)


# The upstream (servers.upstream)


def test_upstream_delays_and_counts(upstream_service: Upstream) -> None:
    hits = upstream_service.hits()
    elapsed, status, body = timed_get(upstream_service.url, "/delay?ms=100")
    assert (status, json.loads(body)) == (200, {"delay_ms": 100})
    assert elapsed >= 0.1
    assert upstream_service.hits() == hits + 1


def test_upstream_rejects_bad_input(upstream_service: Upstream) -> None:
    hits = upstream_service.hits()
    for query in BAD_QUERIES:
        assert_json_error(*get(upstream_service.url, f"/delay?{query}")[:2], 400)
    assert_json_error(*get(upstream_service.url, "/nope")[:2], 404)
    assert_json_error(*get(upstream_service.url, "/delay?ms=1", method="POST")[:2], 405)
    assert upstream_service.hits() == hits


def test_upstream_keeps_alive_and_answers_pipelined_requests_in_order(upstream_service: Upstream):
    with connection(upstream_service.url) as conn:
        for ms in (20, 0):
            conn.request("GET", f"/delay?ms={ms}")
            assert json.loads(conn.getresponse().read()) == {"delay_ms": ms}
    pipelined = (
        b"GET /delay?ms=30 HTTP/1.1\r\n\r\nGET /health HTTP/1.1\r\nConnection: close\r\n\r\n"
    )
    answer = raw_exchange(upstream_service.url, pipelined)
    assert answer.index(b'{"delay_ms":30}') < answer.index(b'"status":"ok"')


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /health HTTP/9.9\r\n\r\n",
        b"GET /health HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET /health HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        b"GET /h\xffealth HTTP/1.1\r\n\r\n",
        b"GET /health HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n",
    ],
)
def test_upstream_answers_malformed_requests_400_and_closes(upstream_service: Upstream, raw):
    answer = raw_exchange(upstream_service.url, raw)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"Connection: close" in answer
    assert get(upstream_service.url, "/health")[0] == 200


def raw_exchange(url: str, data: bytes) -> bytes:
    """Send raw bytes and read until the server closes the connection."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            sock.sendall(data)
        chunks = []
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    return b"".join(chunks)


# The gevent model: drivers that yield --------------------------------------------------------

SQL_OVERLAP = 20


def test_gevent_sql_overlaps_on_one_worker(mariadb: Database) -> None:
    """One gevent worker, SQL_OVERLAP simultaneous ``SELECT SLEEP``: PyMySQL on the patched
    socket yields to the hub, so they take one round; unpatched, the hub would run them one
    after another (SQL_OVERLAP rounds)."""
    config = model_config(None, mariadb.url, "flask-gevent", workers=1)
    with server("flask-gevent", config) as running:
        concurrent_gets(running.url, "/sql?ms=50", SQL_OVERLAP)  # open the connections first
        elapsed, results = concurrent_gets(running.url, f"/sql?ms={SLOW_MS}", SQL_OVERLAP)
    assert results == [(200, expected_body("sql", SLOW_MS))] * SQL_OVERLAP
    rounds = elapsed / (SLOW_MS / 1000)
    print(f"\nflask-gevent, one worker: {SQL_OVERLAP} x {SLOW_MS} ms SELECT SLEEP in "
          f"{elapsed:.2f} s ({rounds:.1f} rounds)")  # fmt: skip
    assert rounds < 3, f"{elapsed:.2f} s: the queries did not overlap"


def test_gevent_model_refuses_to_start_unpatched() -> None:
    """A patch that did not happen (patch_all replaced by a no-op): one line, no server."""
    code = ("import gevent.monkey as monkey; monkey.patch_all = lambda *a, **k: None; "
            "import servers.flask_gevent as model; model.main(['--port', '0'])")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30)  # fmt: skip
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "not monkey-patched: socket" in lines[0], done.stderr


def test_gevent_hub_lag_is_measured(tmp_path) -> None:
    """Each worker's hub reports its lag like an event loop's (a small one when idle)."""
    config = model_config(None, None, "flask-gevent", stats_dir=str(tmp_path))
    with server("flask-gevent", config) as running:
        full_tree(running)
        time.sleep(1.5)  # a lag window of 1 s, after the probe's first sleep
        gauges = read_gauges(tmp_path)
        workers = {p.pid for p in running.process.tree()[1:]}
    assert workers <= set(gauges), (workers, gauges)
    assert all(gauges[pid][1] < 200_000 for pid in workers), gauges  # µs


def test_library_defaults_are_each_librarys_own() -> None:
    gevent, fastapi = MODELS["flask-gevent"], MODELS["fastapi-uvicorn"]
    config = model_config(None, None)
    assert gevent.configure(config, LIBRARY).worker_connections == 1000
    assert (fastapi.configure(config, LIBRARY).max_clients,
            fastapi.configure(config, LIBRARY).pool_size) == (100, 10)  # fmt: skip
    assert gevent.configure(config).worker_connections == 1024
