"""The database behind the ``sql`` scenario: a throwaway MariaDB on a temp datadir and a free
loopback port, always reaped, or an existing server from ``--mysql-url``."""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pymysql

from asyncbench.measuring.processes import (
    ManagedProcess,
    ProcessError,
    ServiceError,
    find_binary,
    free_port,
    log_tail,
    managed_process,
)
from servers.config import MysqlUrl, ServerConfig

DEFAULT_MAX_CONNECTIONS = 2048


MARIADBD_ENV = "ASYNCBENCH_MARIADBD"  # the server binary to use (the only candidate when set)


MARIADB_ARGS_ENV = "ASYNCBENCH_MARIADB_ARGS"  # extra options for the throwaway server


_MARIADB_NAMES = ("mariadbd", "mysqld")


_INSTALL_DB_NAMES = ("mariadb-install-db", "mysql_install_db")


_MYSQL_URL_HINT = "--mysql-url mysql://USER:PASSWORD@HOST:PORT/DB"


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
