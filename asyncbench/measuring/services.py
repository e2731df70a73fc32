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
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

import pymysql
from redis import Redis as RedisClient
from redis import RedisError

from asyncbench.measuring.processes import (
    ManagedProcess,
    ProcessError,
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
from servers.config import MysqlUrl, ServerConfig, redact_url

DEFAULT_MAX_CONNECTIONS = 2048
MARIADBD_ENV = "ASYNCBENCH_MARIADBD"  # the server binary to use (the only candidate when set)
MARIADB_ARGS_ENV = "ASYNCBENCH_MARIADB_ARGS"  # extra options for the throwaway server
_MARIADB_NAMES = ("mariadbd", "mysqld")
_INSTALL_DB_NAMES = ("mariadb-install-db", "mysql_install_db")
_MYSQL_URL_HINT = "--mysql-url mysql://USER:PASSWORD@HOST:PORT/DB"
# Every held poll of a coroutine model may need a command connection: far above the pool sizes.
DEFAULT_REDIS_MAX_CLIENTS = 10_000
_REDIS_MISSING = (
    "no redis-server found: install it (apt-get install redis-server), "
    "or use an existing server with --redis-url redis://HOST:PORT"
)


class ServiceError(RuntimeError):
    """A backing service or server could not be provided; the message is one line for the user."""


@dataclass(frozen=True)
class Database:
    """A MariaDB/MySQL server the harness can use, and whether the harness started it."""

    url: str
    owned: bool
    process: ManagedProcess | None = None
    component = "mariadb"  # its name in the resource columns (cpu_mariadb, ...)

    def configure(self, config: ServerConfig) -> ServerConfig:
        """``config`` pointed at this database."""
        return replace(config, mysql_url=self.url)

    def work_done(self) -> int:
        """Queries served so far: rises when a model really ran its ``SELECT``."""
        return self.status("Com_select")

    def describe(self) -> dict:
        url = MysqlUrl.parse(self.url)
        return {
            "host": url.unix_socket or url.host,
            "owned": self.owned,
            "url": url.redacted(),
            "version": self.variable("version"),
            "max_connections": int(self.variable("max_connections") or 0) or None,
        }

    def connect(self, timeout_s: float = 5.0) -> pymysql.Connection:
        return pymysql.connect(
            **MysqlUrl.parse(self.url).connect_kwargs(), connect_timeout=timeout_s
        )

    def status(self, name: str) -> int:
        """A global status counter such as ``Com_select`` or ``Threads_connected``."""
        with contextlib.closing(self.connect()) as conn, conn.cursor() as cur:
            cur.execute("SHOW GLOBAL STATUS LIKE %s", (name,))
            row = cur.fetchone()
        return int(row[1]) if row else 0

    def variable(self, name: str) -> str:
        with contextlib.closing(self.connect()) as conn, conn.cursor() as cur:
            cur.execute("SHOW GLOBAL VARIABLES LIKE %s", (name,))
            row = cur.fetchone()
        return row[1] if row else ""


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


def find_binary(names: tuple[str, ...], first_in: tuple[Path, ...] = ()) -> str | None:
    """The first executable named one of ``names``: in ``first_in``, on PATH, in /usr/(s)bin."""
    for name in names:
        candidates = (
            *(str(d / name) for d in first_in), shutil.which(name), f"/usr/sbin/{name}",
            f"/usr/bin/{name}",
        )  # fmt: skip
        for candidate in candidates:
            if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
                return candidate
    return None


def mariadb_binaries() -> tuple[str, str]:
    """``(mariadbd, mariadb-install-db)`` for a throwaway server, or a ServiceError saying what
    to install or which flag to pass."""
    override = os.environ.get(MARIADBD_ENV)
    if override:
        server_bin = Path(override).expanduser()
        if not (server_bin.is_file() and os.access(server_bin, os.X_OK)):
            raise ServiceError(
                f"{MARIADBD_ENV}={override} is not an executable file: point it at mariadbd, "
                f"unset it, or use an existing server with {_MYSQL_URL_HINT}"
            )
        here = server_bin.resolve().parent
        install_bin = find_binary(_INSTALL_DB_NAMES, first_in=(here, here.parent / "bin"))
        found: tuple[str | None, str | None] = (str(server_bin), install_bin)
    else:
        found = (find_binary(_MARIADB_NAMES), find_binary(_INSTALL_DB_NAMES))
    if not found[0] or not found[1]:
        missing = "mariadbd/mysqld" if not found[0] else "mariadb-install-db/mysql_install_db"
        raise ServiceError(
            f"no {missing} found: install it (apt-get install mariadb-server), set "
            f"{MARIADBD_ENV}=/path/to/mariadbd, or use an existing server with {_MYSQL_URL_HINT}"
        )
    return found[0], found[1]


def extra_mariadb_args() -> list[str]:
    """Options from ``ASYNCBENCH_MARIADB_ARGS`` (split like a shell does)."""
    text = os.environ.get(MARIADB_ARGS_ENV, "")
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise ServiceError(f"{MARIADB_ARGS_ENV} cannot be split into options: {exc}") from None


@contextlib.contextmanager
def database(
    mysql_url: str | None = None,
    *,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    log_dir: Path | None = None,
    on_start: Callable[[ManagedProcess], None] | None = None,
) -> Iterator[Database]:
    """Use the server at ``mysql_url`` if given (checked reachable), else a throwaway MariaDB."""
    if mysql_url:
        db = Database(mysql_url, owned=False)
        try:
            db.status("Uptime")
        except pymysql.MySQLError as exc:
            raise ServiceError(
                f"cannot reach --mysql-url {MysqlUrl.parse(mysql_url).redacted()}: {exc.args[-1]}"
            ) from None
        yield db
        return
    with throwaway_mariadb(
        max_connections=max_connections, log_dir=log_dir, on_start=on_start
    ) as db:
        yield db


@contextlib.contextmanager
def throwaway_mariadb(
    *,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    log_dir: Path | None = None,
    on_start: Callable[[ManagedProcess], None] | None = None,
) -> Iterator[Database]:
    """A private MariaDB: temp datadir, 127.0.0.1 on a free port, a random password, reaped.

    A server that cannot start raises ``ServiceError``: one summary line naming the log, then
    the log's last lines.
    """
    server_bin, install_bin = mariadb_binaries()
    extra = extra_mariadb_args()
    with tempfile.TemporaryDirectory(prefix="asyncbench-mariadb-") as tmp:
        tmpdir = Path(tmp)
        log_path = (log_dir or tmpdir) / "mariadb.log"
        _install_datadir(install_bin, tmpdir / "data", log_path)
        port = free_port()
        socket_path = tmpdir / "mysqld.sock"
        argv = [
            server_bin,
            "--no-defaults",
            f"--datadir={tmpdir / 'data'}",
            f"--socket={socket_path}",
            f"--pid-file={tmpdir / 'mysqld.pid'}",
            "--bind-address=127.0.0.1",
            f"--port={port}",
            "--skip-name-resolve",
            f"--max-connections={max_connections}",
            "--innodb-buffer-pool-size=64M",
            "--skip-log-bin",
            "--thread-cache-size=256",
        ]
        if _running_as_root():
            argv.append("--user=root")
        argv += extra
        root_url = f"mysql://root@localhost/?unix_socket={socket_path}"
        with contextlib.ExitStack() as stack:
            try:
                proc = stack.enter_context(
                    managed_process(
                        argv,
                        name="mariadb",
                        log_path=log_path,
                        ready=lambda: socket_path.exists() and _answers(root_url),
                        ready_timeout_s=60,
                        grace_s=10,
                        on_start=on_start,
                    )
                )
                url = _create_bench_user(root_url, port)
            except (ProcessError, pymysql.MySQLError) as exc:
                raise _start_failed(server_bin, exc, log_path, kept=log_dir is not None) from None
            yield Database(url, owned=True, process=proc)


def _start_failed(server_bin: str, exc: Exception, log_path: Path, *, kept: bool) -> ServiceError:
    """One summary line (what failed, where the log is, the extra options), then detail lines."""
    if isinstance(exc, pymysql.MySQLError):
        first, detail = f"mariadb refused the harness's setup ({exc.args[-1]})", []
    else:
        first, detail = exc.summary, exc.detail
    extra = os.environ.get(MARIADB_ARGS_ENV)
    hint = f"; {MARIADB_ARGS_ENV}={extra!r} is set" if extra else ""
    where = f"see {log_path}" if kept else "its log follows"
    log = log_tail(log_path, 200)
    errors = [line for line in log if "[ERROR]" in line]
    tail = errors[-8:] or detail or log[-8:]
    return ServiceError("\n".join([f"{first} ({server_bin}); {where}{hint}", *tail]))


def _install_datadir(install_bin: str, datadir: Path, log_path: Path) -> None:
    argv = [
        install_bin,
        "--no-defaults",
        f"--datadir={datadir}",
        "--auth-root-authentication-method=normal",
        "--skip-test-db",
    ]
    if _running_as_root():
        argv.append("--user=root")
    with open(log_path, "ab") as log:
        try:
            result = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as exc:
            failure = str(exc)
        else:
            failure = f"exit {result.returncode}" if result.returncode else ""
    if failure:
        lines = [f"{install_bin} failed ({failure}); see {log_path}", *log_tail(log_path)]
        raise ServiceError("\n".join(lines))


def _create_bench_user(root_url: str, port: int) -> str:
    """A TCP user with a random password: servers connect over loopback like a real client."""
    password = secrets.token_urlsafe(18)
    root = Database(root_url, owned=True)
    with contextlib.closing(root.connect()) as conn, conn.cursor() as cur:
        cur.execute("CREATE DATABASE IF NOT EXISTS asyncbench")
        cur.execute("CREATE USER 'asyncbench'@'127.0.0.1' IDENTIFIED BY %s", (password,))
        cur.execute("GRANT ALL ON asyncbench.* TO 'asyncbench'@'127.0.0.1'")
    return f"mysql://asyncbench:{password}@127.0.0.1:{port}/asyncbench"


def _answers(url: str) -> bool:
    try:
        Database(url, owned=True).status("Uptime")
        return True
    except pymysql.MySQLError:
        return False


def _running_as_root() -> bool:
    return os.geteuid() == 0


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
