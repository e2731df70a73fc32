"""Shared fixtures: the harness's own backing services, started once per test session."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from asyncbench.measuring.mariadb import Database, throwaway_mariadb
from asyncbench.measuring.processes import free_port
from asyncbench.measuring.services import (
    MessageBus,
    Server,
    Upstream,
    server,
    throwaway_redis,
    upstream,
)
from servers import MODELS
from servers.config import ServerConfig


@pytest.fixture(scope="session")
def mariadb() -> Iterator[Database]:
    """A private MariaDB on a free loopback port (never the system server)."""
    with throwaway_mariadb() as db:
        yield db


@pytest.fixture(scope="session")
def message_bus() -> Iterator[MessageBus]:
    """A private redis-server on a free loopback port (never the system server on 6379)."""
    with throwaway_redis() as bus:
        yield bus


@pytest.fixture(scope="session")
def upstream_service() -> Iterator[Upstream]:
    """The slow upstream (``servers.upstream``) on a free loopback port."""
    with upstream() as service:
        yield service


SERVER_WORKERS = 2  # the multi-process models' workers in server tests
SERVER_THREADS = 4  # the threaded models' threads per process in server tests
ROOM_HOLD_S = 2.0  # the shared room servers' hold timeout: short, so a 204 test is quick


def model_config(
    upstream_url: str | None, mysql_url: str | None, model: str | None = None, **changes
) -> ServerConfig:
    """The configuration the server tests use: a free port and the given backends (as
    ``model`` adapts it, e.g. a variant's fixed options)."""
    fields = {"workers": SERVER_WORKERS, "threads": SERVER_THREADS, **changes}
    config = ServerConfig(port=free_port(), upstream=upstream_url, mysql_url=mysql_url, **fields)
    return MODELS[model].configure(config) if model else config


@pytest.fixture(scope="module")
def servers(mariadb: Database, upstream_service: Upstream) -> Iterator[dict[str, Server]]:
    """Every model with working backends, started once per test module."""
    with contextlib.ExitStack() as stack:
        yield {
            name: stack.enter_context(
                server(name, model_config(upstream_service.url, mariadb.url, name))
            )
            for name in MODELS
        }


def room_config(
    bus: MessageBus | None, hold_s: float = ROOM_HOLD_S, workers: int = SERVER_WORKERS,
    model: str | None = None,
) -> ServerConfig:  # fmt: skip
    """A room server's configuration on the given bus (as ``model`` adapts it)."""
    config = ServerConfig(port=free_port(), workers=workers, threads=SERVER_THREADS,
                          redis_url=bus.url if bus else None, hold_s=hold_s)  # fmt: skip
    return MODELS[model].configure(config) if model else config


@pytest.fixture(scope="module")
def rooms(message_bus: MessageBus) -> Iterator[dict[str, Server]]:
    """Every model on the shared throwaway Redis, holding polls for ROOM_HOLD_S, started once
    per test module."""
    with contextlib.ExitStack() as stack:
        yield {
            name: stack.enter_context(server(name, room_config(message_bus, model=name)))
            for name in MODELS
        }
