"""How a server model is configured: one frozen record, parsed from the same flags by every model.

The orchestrator builds a ``ServerConfig``, turns it into command-line flags with ``to_argv`` and
starts ``python -m servers.<model>``; the model parses the flags back with ``parse_args``. Every
knob that could make one model look better than another is here, so it lands in the run metadata.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass, fields
from urllib.parse import unquote, urlsplit

from servers.endpoints import MAX_MS
from servers.room import DEFAULT_HOLD_S

# Longer than any allowed delay, so a slow-but-correct request is never cut off by a timeout.
REQUEST_TIMEOUT_S = MAX_MS / 1000 + 15
MYSQL_URL_ENV = "ASYNCBENCH_MYSQL_URL"
REDIS_URL_ENV = "ASYNCBENCH_REDIS_URL"
# URLs that may hold a password travel in the environment, never on a command line.
_URL_ENVS = {"mysql_url": MYSQL_URL_ENV, "redis_url": REDIS_URL_ENV}
# Sane upper bounds: far above any machine this runs on, low enough that a typo is caught
# before thousands of processes or threads are forked.
MAX_WORKERS = 512
MAX_THREADS = 10_000
MAX_WORKER_CONNECTIONS = 100_000
MAX_PORT = 65535


@dataclass(frozen=True)
class MysqlUrl:
    """``mysql://USER:PASSWORD@HOST:PORT/DB`` (``?unix_socket=/path`` for a socket)."""

    host: str = "127.0.0.1"
    port: int = 3306
    user: str = "root"
    password: str = ""
    database: str | None = None
    unix_socket: str | None = None

    @classmethod
    def parse(cls, url: str) -> MysqlUrl:
        parts = urlsplit(url)
        if parts.scheme not in ("mysql", "mariadb"):
            raise ValueError(f"--mysql-url must start with mysql://, got {redact_url(url)!r}")
        try:
            port = parts.port or 3306
        except ValueError:
            raise ValueError(f"--mysql-url has an invalid port: {redact_url(url)!r}") from None
        query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=port,
            user=unquote(parts.username or "root"),
            password=unquote(parts.password or ""),
            database=parts.path.lstrip("/") or None,
            unix_socket=unquote(query["unix_socket"]) if "unix_socket" in query else None,
        )

    def connect_kwargs(self, db_key: str = "database") -> dict:
        """Keyword arguments for ``pymysql.connect`` (``db_key="db"`` for ``aiomysql``)."""
        kwargs: dict = {"user": self.user, "password": self.password, "autocommit": True}
        if self.unix_socket:
            kwargs["unix_socket"] = self.unix_socket
        else:
            kwargs.update(host=self.host, port=self.port)
        if self.database:
            kwargs[db_key] = self.database
        return kwargs

    def redacted(self) -> str:
        where = f"?unix_socket={self.unix_socket}" if self.unix_socket else ""
        user = f"{self.user}:***@" if self.password else f"{self.user}@"
        return f"mysql://{user}{self.host}:{self.port}/{self.database or ''}{where}"


def redact_url(url: str | None) -> str | None:
    """The URL with any password replaced by ``***`` (for logs, metadata and reports)."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


@dataclass(frozen=True)
class ServerConfig:
    """Everything a server model needs to start. Defaults are the harness's fair defaults."""

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 4  # multi-process models: worker processes
    threads: int = 64  # threaded models: threads per process (gthread worker, executor pool)
    # gevent model: connections (one greenlet each) a worker serves at once; gunicorn's own
    # default is 1000 (the registry's library_defaults)
    worker_connections: int = 1024
    reuse_port: bool = False  # forked models: each child binds its own SO_REUSEPORT socket
    backlog: int = 2048  # listen() backlog, the same on every model
    upstream: str | None = None  # base URL of the slow upstream for /fetch
    mysql_url: str | None = None  # for /sql
    redis_url: str | None = None  # the room's message bus (/room/*)
    hold_s: float = DEFAULT_HOLD_S  # how long /room/poll holds before answering 204
    max_clients: int = 1024  # coroutine model: AsyncHTTPClient concurrent fetches
    pool_size: int = 1024  # coroutine model: aiomysql pool maximum
    # Coroutine model: Redis command connections (besides its one subscription). Redis runs
    # commands on one thread, so more connections add no throughput, only sockets.
    bus_pool_size: int = 64
    timeout_s: float = REQUEST_TIMEOUT_S  # worker, upstream and database timeouts
    stats_dir: str | None = None  # where each process counts its requests (servers.counters)

    def to_argv(self) -> list[str]:
        """Command-line flags for ``python -m servers.<model>``.

        The MySQL and Redis URLs may hold a password, so they travel in the environment
        (``to_env``), never on a command line that ``ps`` shows to every user of the machine.
        """
        argv: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or value is False or f.name in _URL_ENVS:
                continue
            flag = f"--{f.name.replace('_', '-')}"
            argv += [flag] if value is True else [flag, str(value)]
        return argv

    def to_env(self) -> dict[str, str]:
        return {env: getattr(self, name) for name, env in _URL_ENVS.items() if getattr(self, name)}

    def describe(self) -> dict:
        """The configuration as it may be shown (credentials redacted)."""
        data = asdict(self)
        for name in _URL_ENVS:
            data[name] = redact_url(getattr(self, name))
        return data


def parse_args(argv: list[str] | None, prog: str) -> ServerConfig:
    parser = argparse.ArgumentParser(prog=prog, description=f"Run the {prog} server model.")
    defaults = ServerConfig()
    for f in fields(ServerConfig):
        flag, default = f"--{f.name.replace('_', '-')}", getattr(defaults, f.name)
        if str(f.type) == "bool":
            parser.add_argument(flag, action="store_true", default=default)
            continue
        kind = {"int": int, "float": float}.get(str(f.type).split(" ")[0], str)
        parser.add_argument(flag, type=kind, default=default)
    ns = parser.parse_args(argv)
    for name, env in _URL_ENVS.items():
        if getattr(ns, name) is None:
            setattr(ns, name, os.environ.get(env) or None)
    config = ServerConfig(**vars(ns))
    if config.workers < 1:
        parser.error("--workers must be at least 1")
    if config.threads < 1:
        parser.error("--threads must be at least 1")
    if config.worker_connections < 1:
        parser.error("--worker-connections must be at least 1")
    return config
