"""The model registry: every fact the harness needs about a server model, declared once.

A model joins the harness as one module in ``servers/`` (started with ``python -m``) plus one
``ModelSpec`` below. The orchestrator, analysis and report ask the entry; none of them switch on a
model's name.

A model's **capacity law** says how many requests it can hold at once (DESIGN rule 6): its own
concurrency (worker processes, threads, or an event loop that is not a limit by itself), capped by
the client pool a scenario's backing service goes through (an HTTP client's ``max_clients``, a
database pool) when the model uses a pool, and always by the database's ``max_connections``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from servers.config import ServerConfig

SIZED, LIBRARY = "sized", "library"  # pool sizes: the harness's fair ones, or the libraries'
COMMON_KNOBS = ("backlog", "timeout_s")


# The libraries' own defaults (--defaults library), as documented by each library.
GUNICORN_DEFAULT_THREADS = 1  # gunicorn --threads
TORNADO_DEFAULT_MAX_CLIENTS = 10  # AsyncHTTPClient(max_clients=10)
AIOMYSQL_DEFAULT_MAXSIZE = 10  # aiomysql.create_pool(maxsize=10)
GUNICORN_DEFAULT_WORKER_CONNECTIONS = 1000  # gunicorn --worker-connections
AIOHTTP_DEFAULT_LIMIT = 100  # aiohttp.TCPConnector(limit=100)


def executor_default_threads() -> int:
    """``ThreadPoolExecutor()``'s default ``max_workers`` on this machine."""
    return min(32, (os.cpu_count() or 1) + 4)


@dataclass(frozen=True)
class Concurrency:
    """How many requests a model's own execution units can hold at once."""

    # as the report says it: "workers", "workers × threads", "threads",
    # "workers × worker_connections", "event loop"
    name: str
    unit: str  # what one slot is, in prose: "workers", "threads", "greenlets", "slots"

    def slots(self, config: ServerConfig) -> float:
        return {
            "workers": config.workers,
            "workers × threads": config.workers * config.threads,
            "threads": config.threads,
            "workers × worker_connections": config.workers * config.worker_connections,
            "event loop": math.inf,
        }[self.name]

    def describe(self, config: ServerConfig) -> str:
        return {
            "workers": f"workers = {config.workers}",
            "workers × threads": f"workers × threads = {config.workers} × {config.threads}",
            "threads": f"threads = {config.threads}",
            "workers × worker_connections": "workers × worker_connections = "
            f"{config.workers} × {config.worker_connections}",
            "event loop": "one event loop (no slot limit)",
        }[self.name]


PER_WORKER = Concurrency("workers", "workers")
PER_THREAD = Concurrency("workers × threads", "threads")
THREAD_POOL = Concurrency("threads", "threads")
# A greenlet per connection, up to worker_connections per worker process (gunicorn's gevent
# worker): a worker's greenlet count is its in-flight count.
PER_GREENLET = Concurrency("workers × worker_connections", "greenlets")
EVENT_LOOP = Concurrency("event loop", "slots")
# What a model people pick instead of a rewrite is weighed against: coroutine Tornado (the
# rewrite) and the thread pools (the other no-rewrite remedy).
INSTEAD_OF_A_REWRITE = ("tornado-coroutine", "flask-threaded", "tornado-threadpool")


@dataclass(frozen=True)
class ModelSpec:
    """One server model: what it is, how it starts, how much it can hold, how it is shown."""

    name: str
    module: str  # started as ``python -m <module>``
    summary: str
    concurrency: Concurrency
    multi_process: bool  # a parent plus ``workers`` processes, all up before a cell starts
    pooled_clients: bool  # its upstream and database clients are pools sized by the config
    keep_alive: bool  # whether it keeps client connections open between requests
    label: str  # short name for chart legends
    color: str  # the model's colour in every chart and table
    knobs: tuple[str, ...] = ()  # the ServerConfig fields it uses (besides COMMON_KNOBS)
    # Its libraries' own defaults for the pool sizes the harness otherwise sizes (--defaults
    # library); a function because some depend on the machine.
    library_defaults: Callable[[], dict] = field(default=dict)
    overrides: dict = field(default_factory=dict)  # config it always runs with (a variant)
    default_run: bool = True  # part of a run that names no models
    # How many WebSockets it keeps open at once, when that differs from ``concurrency``: a
    # Tornado WebSocketHandler lives on the event loop whatever the HTTP handlers block on.
    socket_concurrency: Concurrency | None = None
    # The models a reader weighs it against instead of a rewrite; each scenario's verdict says
    # where it stands against them, with intervals.
    compared_with: tuple[str, ...] = ()
    # The event loop each of its processes serves every request on, named as the report names
    # a one-process loop's limit (None: its handlers block a thread or a process instead).
    loop: str | None = None
    # What its pooled clients are called where their size caps the slots (``pooled_clients``).
    client_pool: str = "AsyncHTTPClient max_clients"
    db_pool: str = "aiomysql pool maxsize"

    def configure(self, config: ServerConfig, defaults: str = SIZED) -> ServerConfig:
        """``config`` as this model runs it: its fixed overrides, and library pool sizes when
        asked for."""
        library = self.library_defaults() if defaults == LIBRARY else {}
        return replace(config, **{**library, **self.overrides})

    def describe(self, config: ServerConfig) -> dict:
        """The knobs that apply to it, as they were set."""
        return {k: getattr(config, k) for k in (*self.knobs, *COMMON_KNOBS)}

    def processes(self, config: ServerConfig) -> int:
        """How many processes serve once it is ready (the parent included)."""
        return 1 + config.workers if self.multi_process else 1

    def slots(
        self, config: ServerConfig, resource: str | None, db_max_connections: int | None
    ) -> float:
        """Requests it can hold at once when each one waits on ``resource``.

        ``resource`` is the backing service a scenario kind's request waits on (``"upstream"``,
        ``"database"``) or None (a plain sleep). ``math.inf`` means no limit.
        """
        return min(limit for limit, _ in self.limits(config, resource, db_max_connections))

    def socket_slots(self, config: ServerConfig) -> float:
        """WebSockets it holds open at once (``math.inf``: no limit but memory)."""
        return float((self.socket_concurrency or self.concurrency).slots(config))

    def socket_limit(self, config: ServerConfig) -> str:
        """What binds the WebSockets it holds open at once, in words."""
        return (self.socket_concurrency or self.concurrency).describe(config)

    def slot_limit(
        self, config: ServerConfig, resource: str | None, db_max_connections: int | None
    ) -> str:
        """What binds its slots, in words, e.g. ``AsyncHTTPClient max_clients = 10``."""
        return min(self.limits(config, resource, db_max_connections))[1]

    def limits(
        self, config: ServerConfig, resource: str | None, db_max_connections: int | None
    ) -> list[tuple[float, str]]:
        """Every cap on the requests it holds at once, with its name."""
        own = float(self.concurrency.slots(config))
        limits = [(own, self.concurrency.describe(config))]
        if self.pooled_clients and resource == "upstream":
            cap = config.max_clients
            limits.append((cap, f"{self.client_pool} = {cap}"))
        if self.pooled_clients and resource == "database":
            limits.append((config.pool_size, f"{self.db_pool} = {config.pool_size}"))
        if resource == "database" and db_max_connections:
            limits.append((db_max_connections, f"max_connections = {db_max_connections}"))
        return limits


MODELS: dict[str, ModelSpec] = {
    m.name: m
    for m in (
        ModelSpec(
            name="flask-blocking",
            module="servers.flask_blocking",
            summary="Flask on gunicorn sync workers: one request at a time per worker process",
            concurrency=PER_WORKER,
            multi_process=True,
            pooled_clients=False,
            keep_alive=False,  # gunicorn's sync workers close after every response
            label="Flask (sync workers)",
            color="#d95f02",
            knobs=("workers",),
        ),
        ModelSpec(
            name="flask-threaded",
            module="servers.flask_threaded",
            summary="The same Flask app on gunicorn gthread workers: workers × threads at once",
            concurrency=PER_THREAD,
            multi_process=True,
            pooled_clients=False,
            keep_alive=True,  # gthread parks idle kept-alive connections in its poller
            label="Flask (gthread)",
            color="#e7298a",
            knobs=("workers", "threads"),
            library_defaults=lambda: {"threads": GUNICORN_DEFAULT_THREADS},
        ),
        ModelSpec(
            name="tornado-forked",
            module="servers.tornado_forked",
            summary="Tornado with blocking handlers, bind_sockets + fork_processes(workers)",
            concurrency=PER_WORKER,
            multi_process=True,
            pooled_clients=False,
            keep_alive=True,
            label="Tornado forked",
            color="#7570b3",
            knobs=("workers", "reuse_port"),
            socket_concurrency=EVENT_LOOP,  # each child relays its sockets on its own loop
        ),
        ModelSpec(
            name="tornado-forked-reuseport",
            module="servers.tornado_forked",
            summary="Forked Tornado where each child binds its own SO_REUSEPORT socket (the "
            "kernel spreads connections)",
            concurrency=PER_WORKER,
            multi_process=True,
            pooled_clients=False,
            keep_alive=True,
            label="Tornado forked (SO_REUSEPORT)",
            color="#a6761d",
            knobs=("workers", "reuse_port"),
            overrides={"reuse_port": True},
            default_run=False,
            socket_concurrency=EVENT_LOOP,
        ),
        ModelSpec(
            name="tornado-coroutine",
            module="servers.tornado_coroutine",
            summary="Tornado with async def handlers in one process (asyncio, AsyncHTTPClient, "
            "aiomysql)",
            concurrency=EVENT_LOOP,
            multi_process=False,
            pooled_clients=True,
            keep_alive=True,
            label="Tornado coroutine",
            color="#1b9e77",
            knobs=("max_clients", "pool_size"),
            library_defaults=lambda: {"max_clients": TORNADO_DEFAULT_MAX_CLIENTS,
                                      "pool_size": AIOMYSQL_DEFAULT_MAXSIZE},  # fmt: skip
            loop="Tornado IOLoop (asyncio)",
        ),
        ModelSpec(
            name="tornado-threadpool",
            module="servers.tornado_threadpool",
            summary="Tornado async def handlers running the blocking calls in a "
            "ThreadPoolExecutor(threads) via run_in_executor, one process",
            concurrency=THREAD_POOL,
            multi_process=False,
            pooled_clients=False,
            keep_alive=True,
            label="Tornado + thread pool",
            color="#66a61e",
            knobs=("threads",),
            library_defaults=lambda: {"threads": executor_default_threads()},
            # Sockets stay open on the loop; only ``threads`` of them wait on the bus at once.
            socket_concurrency=EVENT_LOOP,
        ),
        ModelSpec(
            name="flask-gevent",
            module="servers.flask_gevent",
            summary="The same Flask app on gunicorn gevent workers (monkey-patched): "
            "workers × worker_connections greenlets at once, each worker one gevent hub",
            concurrency=PER_GREENLET,
            multi_process=True,
            pooled_clients=False,
            keep_alive=True,  # an idle kept-alive connection keeps its greenlet, not a thread
            compared_with=INSTEAD_OF_A_REWRITE,
            label="Flask (gevent)",
            color="#666666",
            knobs=("workers", "worker_connections"),
            library_defaults=lambda: {"worker_connections": GUNICORN_DEFAULT_WORKER_CONNECTIONS},
            loop="gevent hub",
        ),
        ModelSpec(
            name="fastapi-uvicorn",
            module="servers.fastapi_uvicorn",
            summary="FastAPI async def routes on uvicorn (uvloop, httptools) in one process "
            "(aiohttp, aiomysql, redis.asyncio)",
            concurrency=EVENT_LOOP,
            multi_process=False,
            pooled_clients=True,
            keep_alive=True,
            compared_with=INSTEAD_OF_A_REWRITE,
            label="FastAPI (uvicorn)",
            color="#1f78b4",
            knobs=("max_clients", "pool_size"),
            library_defaults=lambda: {"max_clients": AIOHTTP_DEFAULT_LIMIT,
                                      "pool_size": AIOMYSQL_DEFAULT_MAXSIZE},  # fmt: skip
            overrides={"workers": 1},  # one process, like tornado-coroutine (--workers N: more)
            loop="uvicorn loop (uvloop)",
            client_pool="aiohttp connector limit",
        ),
    )
}


def model(name: str) -> ModelSpec:
    """The entry for ``name``; a ``KeyError`` naming the known models otherwise."""
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown server model {name!r} (known: {', '.join(MODELS)})") from None
