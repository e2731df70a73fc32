"""The processes a cell needs: a throwaway MariaDB, a throwaway Redis (the room's message bus),
the slow upstream, and the server under test.

Each is a context manager built on ``processes.managed_process``: it starts the process, waits
for it to answer, yields a small handle, and always stops and reaps it.

The throwaway MariaDB can be tuned from the environment:

* ``ASYNCBENCH_MARIADBD=/path/to/mariadbd`` uses that server binary and no other (the
  ``mariadb-install-db`` next to it, in ``../bin``, is preferred when there is one);
* ``ASYNCBENCH_MARIADB_ARGS="--opt=value ..."`` appends server options (split like a shell
  does) after the harness's own, e.g. ``--innodb-buffer-pool-size=256M``.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

from redis import Redis as RedisClient
from redis import RedisError

from asyncbench.measuring.mariadb import Database, database
from asyncbench.measuring.processes import (
    ManagedProcess,
    ProcessError,
    ServiceError,
    find_binary,
    free_port,
    http_ok,
    listen_queues,
    log_tail,
    managed_process,
    port_in_use,
    wait_until,
)
from servers import MODELS
from servers.backends import UPSTREAM_KEEPALIVE
from servers.bus import RoomStats, reset_room, room_stats
from servers.config import ServerConfig, redact_url

# Every held poll of a coroutine model may need a command connection: far above the pool sizes.
DEFAULT_REDIS_MAX_CLIENTS = 10_000
_REDIS_MISSING = (
    "no redis-server found: install it (apt-get install redis-server), "
    "or use an existing server with --redis-url redis://HOST:PORT"
)


@dataclass(frozen=True)
class MessageBus:
    """A Redis server for the room's message bus, and whether the harness started it."""

    url: str
    owned: bool
    process: ManagedProcess | None = None
    component = "redis"

    def configure(self, config: ServerConfig) -> ServerConfig:
        return replace(config, redis_url=self.url)

    def work_done(self) -> int:
        """Messages published so far."""
        return self.stats().published

    def describe(self) -> dict:
        with contextlib.closing(self.client()) as client:
            version = client.info("server").get("redis_version")
        return {"url": redact_url(self.url), "owned": self.owned, "version": version}

    def client(self, timeout_s: float = 5.0) -> RedisClient:
        return RedisClient.from_url(
            self.url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
        )

    def stats(self) -> RoomStats:
        """Messages published, polls held now and at most (the gauge the harness samples)."""
        with contextlib.closing(self.client()) as client:
            return room_stats(client)

    def reset_room(self) -> None:
        """Empty the room and zero its gauges (before a cell)."""
        with contextlib.closing(self.client()) as client:
            reset_room(client)

    def connected_clients(self) -> int:
        with contextlib.closing(self.client()) as client:
            return int(client.info("clients")["connected_clients"])


@dataclass(frozen=True)
class Upstream:
    """The slow HTTP service ``/fetch`` calls: ``GET /delay?ms=N`` answers after N ms."""

    url: str
    process: ManagedProcess | None  # None when it runs elsewhere (--upstream)
    component = "upstream"

    def configure(self, config: ServerConfig) -> ServerConfig:
        return replace(config, upstream=self.url)

    def hits(self) -> int:
        with urllib.request.urlopen(f"{self.url}/stats", timeout=5) as response:
            return int(json.load(response)["hits"])

    def work_done(self) -> int:
        """Requests the upstream answered so far."""
        return self.hits()

    def describe(self) -> dict:
        return {"url": self.url, "owned": self.process is not None,
                "servers_keep_alive": UPSTREAM_KEEPALIVE}  # fmt: skip


@dataclass(frozen=True)
class Server:
    """A running server model."""

    model: str
    url: str
    config: ServerConfig
    process: ManagedProcess | None  # None when started elsewhere (--target)


@contextlib.contextmanager
def redis(
    redis_url: str | None = None,
    *,
    log_dir: Path | None = None,
    on_start: Callable[[ManagedProcess], None] | None = None,
) -> Iterator[MessageBus]:
    """Use the Redis at ``redis_url`` if given (checked answering PING), else a throwaway one."""
    if redis_url:
        bus = MessageBus(redis_url, owned=False)
        try:
            with contextlib.closing(bus.client()) as client:
                client.ping()
        except (RedisError, ValueError) as exc:
            raise ServiceError(
                f"cannot reach --redis-url {redact_url(redis_url)}: {_redis_error(exc, redis_url)}"
            ) from None
        yield bus
        return
    with throwaway_redis(log_dir=log_dir, on_start=on_start) as bus:
        yield bus


@contextlib.contextmanager
def throwaway_redis(
    *,
    max_clients: int = DEFAULT_REDIS_MAX_CLIENTS,
    log_dir: Path | None = None,
    on_start: Callable[[ManagedProcess], None] | None = None,
) -> Iterator[MessageBus]:
    """A private redis-server: no config file, no persistence, 127.0.0.1 on a free port, a
    random password, a temp working directory; always reaped.

    The password is on its command line only until redis-server starts: it then overwrites its
    argv with its process title (``redis-server 127.0.0.1:PORT``).
    """
    server_bin = find_binary(("redis-server",))
    if not server_bin:
        raise ServiceError(_REDIS_MISSING)
    with tempfile.TemporaryDirectory(prefix="asyncbench-redis-") as tmp:
        log_path = (log_dir or Path(tmp)) / "redis.log"
        port, password = free_port(), secrets.token_urlsafe(18)
        url = f"redis://:{password}@127.0.0.1:{port}/0"
        argv = [
            server_bin,
            *("--bind", "127.0.0.1", "--port", str(port), "--protected-mode", "yes"),
            *("--requirepass", password, "--maxclients", str(max_clients)),
            *("--save", "", "--appendonly", "no", "--dir", tmp),
            *("--daemonize", "no", "--logfile", "", "--loglevel", "warning"),
        ]
        with contextlib.ExitStack() as stack:
            try:
                proc = stack.enter_context(
                    managed_process(
                        argv,
                        name="redis",
                        log_path=log_path,
                        ready=lambda: _pings(MessageBus(url, owned=True)),
                        ready_timeout_s=30,
                        on_start=on_start,
                    )
                )
            except ProcessError as exc:
                where = f"see {log_path}" if log_dir else "its log follows"
                lines = [f"{exc.summary} ({server_bin}); {where}", *log_tail(log_path)]
                raise ServiceError("\n".join(lines)) from None
            yield MessageBus(url, owned=True, process=proc)


def _pings(bus: MessageBus) -> bool:
    try:
        with contextlib.closing(bus.client(timeout_s=1)) as client:
            return bool(client.ping())
    except RedisError:
        return False


def _redis_error(exc: Exception, url: str) -> str:
    """The error's text, with the URL's password (if any) masked."""
    text = f"{type(exc).__name__}: {exc}"
    password = urlsplit(url).password
    return text.replace(password, "***") if password else text


@contextlib.contextmanager
def upstream(
    *, url: str | None = None, host: str = "127.0.0.1", log_dir: Path | None = None, on_start=None
) -> Iterator[Upstream]:
    """Start the slow upstream (``servers.upstream``) on a free loopback port, or use ``url``."""
    if url:
        url = url.rstrip("/")
        if not http_ok(f"{url}/health", timeout_s=5)():
            raise ServiceError(f"the upstream at {url} does not answer GET /health")
        yield Upstream(url, None)
        return
    port = free_port(host)
    url = f"http://{host}:{port}"
    argv = [sys.executable, "-m", "servers.upstream", "--host", host, "--port", str(port)]
    log_path = log_dir / "upstream.log" if log_dir else None
    with managed_process(
        argv, name="upstream", log_path=log_path, ready=http_ok(f"{url}/health"), on_start=on_start
    ) as proc:
        yield Upstream(url, proc)


# The backing services a scenario kind may need (``ScenarioKind.services``), by name: each starts
# from the URL the user gave for it (or a throwaway instance) and yields a handle with
# ``component``, ``process``, ``configure(config)`` and ``work_done()``.
SERVICES: dict[str, Callable[..., contextlib.AbstractContextManager]] = {
    "database": lambda url, log_dir: database(url, log_dir=log_dir),
    "upstream": lambda url, log_dir: upstream(url=url, log_dir=log_dir),
    "bus": lambda url, log_dir: redis(url, log_dir=log_dir),
}


@contextlib.contextmanager
def backing_services(
    needed: set[str], urls: dict[str, str | None], log_dir: Path | None
) -> Iterator[dict[str, Database | Upstream | MessageBus]]:
    """Start (or reach) each needed service once, in a stable order; stop them all on exit."""
    with contextlib.ExitStack() as stack:
        yield {
            name: stack.enter_context(SERVICES[name](urls.get(name), log_dir))
            for name in SERVICES
            if name in needed
        }


@contextlib.contextmanager
def server(
    model: str,
    config: ServerConfig,
    *,
    log_path: Path | None = None,
    ready_timeout_s: float = 30.0,
    on_start=None,
    grace_s: float = 5.0,
) -> Iterator[Server]:
    """Start one server model as a fresh process and wait for ``/health``; at the end, SIGTERM
    it and SIGKILL what is left after ``grace_s`` (0: at once)."""
    if model not in MODELS:
        raise ServiceError(f"unknown server model {model!r}; choose from {', '.join(MODELS)}")
    spec = MODELS[model]
    if port_in_use(config.host, config.port):
        raise ServiceError(f"port {config.port} on {config.host} is already in use")
    url = f"http://{config.host}:{config.port}"
    argv = [sys.executable, "-m", spec.module, *config.to_argv()]
    try:
        with managed_process(
            argv,
            name=model,
            log_path=log_path,
            env=config.to_env(),
            ready=http_ok(f"{url}/health"),
            ready_timeout_s=ready_timeout_s,
            on_start=on_start,
            grace_s=grace_s,
        ) as proc:
            # /health answers once one worker is up; a cell must not start before all of them.
            processes = spec.processes(config)
            wait_until(proc, lambda: len(proc.tree()) >= processes, ready_timeout_s)
            if config.reuse_port:  # the kernel spreads connections over the sockets bound so far
                wait_until(proc, lambda: len(listen_queues(config.port)) >= config.workers,
                           ready_timeout_s)  # fmt: skip
            yield Server(model, url, config, proc)
    except ProcessError as exc:
        raise ServiceError(str(exc)) from None


@contextlib.contextmanager
def remote_server(model: str, target: str, config: ServerConfig) -> Iterator[Server]:
    """A server started elsewhere (``asyncbench serve MODEL`` on another host): check, don't own."""
    url = target.rstrip("/")
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            serving = json.load(response).get("model")
    except (OSError, ValueError):
        raise ServiceError(f"the target {url} does not answer GET /health") from None
    if serving != model:
        raise ServiceError(f"the target {url} serves {serving!r}, not {model!r}")
    yield Server(model, url, config, None)
