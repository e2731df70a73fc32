"""The model and scenario-kind registries: capacity laws and what each entry declares."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest

import asyncbench
from asyncbench.planning.kinds import KINDS, kind_of_endpoint
from servers import MODELS
from servers.config import ServerConfig
from servers.registry import (
    EVENT_LOOP,
    PER_GREENLET,
    PER_THREAD,
    PER_WORKER,
    THREAD_POOL,
    ModelSpec,
)

CONFIG = ServerConfig(workers=4, threads=8, max_clients=100, pool_size=50, worker_connections=30)


def spec(concurrency, pooled: bool) -> ModelSpec:
    return ModelSpec("m", "servers.m", "test model", concurrency, multi_process=False,
                     pooled_clients=pooled, keep_alive=True, label="m", color="#000")  # fmt: skip


@pytest.mark.parametrize(
    ("concurrency", "pooled", "kind", "db_max", "expected"),
    [
        (PER_WORKER, False, "sleep", None, 4),
        (PER_WORKER, False, "fetch", None, 4),
        (PER_WORKER, False, "sql", 2, 2),  # the database's max_connections binds first
        (PER_THREAD, False, "sleep", None, 32),  # workers × threads
        (THREAD_POOL, False, "fetch", None, 8),
        (THREAD_POOL, False, "sql", 6, 6),
        (PER_GREENLET, False, "sleep", None, 120),  # workers × worker_connections
        (PER_GREENLET, False, "sql", 64, 64),
        (EVENT_LOOP, True, "sleep", None, math.inf),
        (EVENT_LOOP, True, "fetch", None, 100),  # max_clients
        (EVENT_LOOP, True, "sql", None, 50),  # the pool
        (EVENT_LOOP, True, "sql", 20, 20),  # max_connections under the pool
        (EVENT_LOOP, True, "hello", None, None),  # no waiting: no prediction
    ],
)
def test_capacity_laws(concurrency, pooled, kind, db_max, expected):
    assert KINDS[kind].slots(spec(concurrency, pooled), CONFIG, db_max) == expected


def test_every_model_entry_is_complete_and_importable_by_name():
    for name, model in MODELS.items():
        assert model.name == name
        assert model.module.startswith("servers.")
        assert model.color.startswith("#") and model.label and model.summary
        assert model.processes(CONFIG) == (5 if model.multi_process else 1)
    assert len({m.color for m in MODELS.values()}) == len(MODELS)


REQUEST_KINDS = [k for k in KINDS.values() if not k.fields]


@pytest.mark.parametrize("kind", REQUEST_KINDS, ids=[k.name for k in REQUEST_KINDS])
def test_kind_paths_and_bodies(kind):
    assert kind_of_endpoint(kind.endpoint) is kind
    path = kind.path(250)
    assert path == (f"{kind.endpoint}?ms=250" if kind.takes_delay else kind.endpoint)
    body = kind.expected_body(250)
    assert body.endswith(b"\n") and kind.name.encode() in body
    assert kind.proof is None or kind.proof in kind.services


def test_limits_name_each_models_own_pools():
    fastapi, tornado = MODELS["fastapi-uvicorn"], MODELS["tornado-coroutine"]
    assert fastapi.slot_limit(CONFIG, "upstream", None) == "aiohttp connector limit = 100"
    assert tornado.slot_limit(CONFIG, "upstream", None) == "AsyncHTTPClient max_clients = 100"
    assert fastapi.slot_limit(CONFIG, "database", None) == "aiomysql pool maxsize = 50"
    gevent = MODELS["flask-gevent"]
    assert gevent.slot_limit(CONFIG, "upstream", None) == "workers × worker_connections = 4 × 30"
    assert gevent.loop == "gevent hub" and fastapi.loop == "uvicorn loop (uvloop)"


def test_the_harness_never_names_a_model():
    """Everything about a model goes through its registry entry: no model name is a string
    literal in the harness's code."""
    names = set(MODELS)
    found = []
    for path in sorted(Path(asyncbench.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{path.name}:{node.lineno} {node.value!r}")
    assert not found, found
