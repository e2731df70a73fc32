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
from dataclasses import dataclass

from servers.config import ServerConfig


@dataclass(frozen=True)
class Concurrency:
    """How many requests a model's own execution units can hold at once."""

    name: str  # as the report says it: "workers", "workers × threads", "threads", "event loop"
    unit: str  # what one slot is, in prose: "workers", "threads", "slots"

    def slots(self, config: ServerConfig) -> float:
        return {
            "workers": config.workers,
            "workers × threads": config.workers * config.threads,
            "threads": config.threads,
            "event loop": math.inf,
        }[self.name]


PER_WORKER = Concurrency("workers", "workers")
PER_THREAD = Concurrency("workers × threads", "threads")
THREAD_POOL = Concurrency("threads", "threads")
EVENT_LOOP = Concurrency("event loop", "slots")


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
        slots = float(self.concurrency.slots(config))
        if self.pooled_clients and resource == "upstream":
            slots = min(slots, config.max_clients)
        if resource == "database":
            if self.pooled_clients:
                slots = min(slots, config.pool_size)
            slots = min(slots, db_max_connections or math.inf)
        return slots


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
        ),
    )
}


def model(name: str) -> ModelSpec:
    """The entry for ``name``; a ``KeyError`` naming the known models otherwise."""
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown server model {name!r} (known: {', '.join(MODELS)})") from None
