"""Security: loopback-only listeners, an unsteerable /fetch, parameterised SQL, no leaked secrets.

Everything runs for real: the three server models, the upstream and a throwaway MariaDB on
loopback, and a short real ``sql`` cell through ``run_matrix`` whose every output file is
searched for the database password.
"""

from __future__ import annotations

import ast
import contextlib
import errno
import http.client
import ipaddress
import socket
import threading
import time
import warnings
from pathlib import Path
from urllib.parse import quote

import pandas as pd
import psutil
import pymysql
import pytest

from asyncbench.measuring.mariadb import Database
from asyncbench.measuring.processes import ManagedProcess
from asyncbench.measuring.run import RunSettings, run_matrix
from asyncbench.measuring.services import Server, Upstream
from servers import MODELS
from servers.config import MYSQL_URL_ENV, MysqlUrl
from servers.endpoints import delay_body

pytestmark = pytest.mark.slow  # real server processes

ROOT = Path(__file__).resolve().parents[2]
DECOY_HOST = "127.0.0.2"  # another address: what a steered /fetch would reach




def listening(proc: ManagedProcess) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket the process tree listens on."""
    return {
        (c.laddr.ip, c.laddr.port)
        for p in proc.tree()
        for c in p.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    }


def other_addresses() -> list[str]:
    """The machine's IPv4 and IPv6 addresses outside loopback (where a remote client connects)."""
    found = []
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family in (socket.AF_INET, socket.AF_INET6):
                ip = ipaddress.ip_address(addr.address.split("%")[0])
                if not ip.is_loopback and not ip.is_link_local:
                    found.append(str(ip))
    return found


def refused(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=3):
            return False
    except OSError as exc:
        assert exc.errno in (errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH, None), exc
        return True


# Listeners ----------------------------------------------------------------------------------


def test_everything_listens_on_loopback_only(
    servers: dict[str, Server], upstream_service: Upstream, mariadb: Database
) -> None:
    processes = {name: s.process for name, s in servers.items()}
    processes |= {"upstream": upstream_service.process, "mariadb": mariadb.process}
    for name, proc in processes.items():
        addresses = listening(proc)
        assert addresses, f"{name} listens on nothing?"
        assert {ip for ip, _ in addresses} == {"127.0.0.1"}, (name, addresses)
        for _, port in addresses:
            for host in [DECOY_HOST, *other_addresses()]:
                assert refused(host, port), f"{name} answers on {host}:{port}"


def test_mariadb_is_reachable_only_from_this_machine(mariadb: Database) -> None:
    assert mariadb.variable("bind_address") == "127.0.0.1"
    url = MysqlUrl.parse(mariadb.url)
    with contextlib.closing(mariadb.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT CURRENT_USER()")
        assert cur.fetchone()[0] == f"{url.user}@127.0.0.1"  # the account exists for loopback only
        cur.execute("SHOW GRANTS")
        grants = [row[0] for row in cur.fetchall()]
    # Its own database and nothing else: not even reading mysql.user.
    assert len(grants) == 2 and grants[0].startswith("GRANT USAGE ON *.*"), grants
    assert "ON `asyncbench`.*" in grants[1], grants
    addresses = other_addresses()
    if not addresses:
        pytest.skip("this machine has no non-loopback address to connect from")
    for host in addresses:
        kwargs = {**url.connect_kwargs(), "host": host}
        with pytest.raises(pymysql.OperationalError):
            pymysql.connect(**kwargs, connect_timeout=3).close()


# /fetch cannot be steered --------------------------------------------------------------------


def steering_attempts(decoy: str) -> list[tuple[str, str, dict[str, str]]]:
    """(method, request target, headers): every way a client might point /fetch elsewhere."""
    url = f"http://{decoy}/delay?ms=1"
    attempts = [
        ("GET", f"/fetch?ms=1&{name}={quote(value, safe='')}", {})
        for name in ("url", "host", "upstream", "target", "to", "proxy")
        for value in (url, decoy, f"http://{decoy}", "http://evil.example/")
    ]
    attempts += [
        ("GET", f"/fetch?ms={quote(url, safe='')}", {}),
        ("GET", f"/fetch?ms=1@{decoy}", {}),
        ("GET", f"http://{decoy}/fetch?ms=1", {}),  # absolute-form request target
        ("GET", "http://evil.example/fetch?ms=1", {"Host": "evil.example"}),
        ("GET", "/fetch?ms=1", {"Host": decoy}),
        ("GET", "/fetch?ms=1", {"Host": "evil.example"}),
        ("GET", "/fetch?ms=1", {"X-Forwarded-Host": decoy, "Forwarded": f"host={decoy}"}),
        ("GET", f"//{decoy}/fetch?ms=1", {}),
        ("CONNECT", decoy, {}),
    ]
    return attempts


@pytest.mark.parametrize("model", list(MODELS))
def test_fetch_cannot_be_steered_to_another_host(
    servers: dict[str, Server], upstream_service: Upstream, model: str
) -> None:
    running = servers[model]
    with socket.socket() as decoy:  # a listener nobody should ever connect to
        decoy.bind((DECOY_HOST, 0))
        decoy.listen(64)
        decoy.setblocking(False)
        decoy_addr = f"{DECOY_HOST}:{decoy.getsockname()[1]}"
        hits = upstream_service.hits()
        answered = 0
        for method, target, headers in steering_attempts(decoy_addr):
            status, body = raw_request(running, method, target, headers)
            assert status in (200, 400, 404, 405), (target, headers, status, body)
            if status == 200:
                assert body == delay_body("fetch", 1), (target, headers, body)
                answered += 1
        time.sleep(0.2)  # a stray connection would be in the decoy's backlog by now
        with pytest.raises(BlockingIOError):
            decoy.accept()
    assert upstream_service.hits() - hits == answered, "something other than /fetch hit it"
    assert answered >= 2  # the Host-header attempts at least are served, from our upstream


def raw_request(running: Server, method: str, target: str, headers: dict[str, str]):
    conn = http.client.HTTPConnection("127.0.0.1", running.config.port, timeout=15)
    try:
        conn.putrequest(method, target, skip_host="Host" in headers, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# SQL is parameterised ---------------------------------------------------------------------


def execute_calls(path: Path) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("execute", "executemany")
    ]


def string_constants(paths: list[Path]) -> dict[str, str]:
    """Module-level ``NAME = "literal"`` assignments (SQL kept in named constants)."""
    found = {}
    for path in paths:
        for node in ast.parse(path.read_text()).body:
            if (
                isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
            ):
                found |= {t.id: node.value.value for t in node.targets if isinstance(t, ast.Name)}
    return found


def sql_literal(arg: ast.expr, constants: dict[str, str]) -> str | None:
    """The SQL text if ``arg`` is a plain string literal or a name bound to one, else None."""
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.Name):
        return constants.get(arg.id)
    return None  # f-string, concatenation, % or .format(), a call...


def test_server_sql_is_a_constant_with_a_params_tuple() -> None:
    files = sorted((ROOT / "servers").glob("*.py"))
    constants = string_constants(files)
    checked = 0
    for path in files:
        for call in execute_calls(path):
            where = f"{path.name}:{call.lineno}"
            assert call.args and sql_literal(call.args[0], constants) is not None, where
            assert len(call.args) == 2 and isinstance(call.args[1], ast.Tuple), where
            assert not call.keywords, where
            checked += 1
    assert checked >= 2, "the blocking and the coroutine /sql were not found"


def test_harness_sql_is_constant_too() -> None:
    """The orchestrator's own queries: literal SQL, values only through a params tuple."""
    files = sorted((ROOT / "asyncbench").glob("*.py"))
    constants = string_constants(files)
    for path in files:
        for call in execute_calls(path):
            where = f"{path.name}:{call.lineno}"
            sql = sql_literal(call.args[0], constants) if call.args else None
            assert sql is not None, where
            if "%s" in sql:
                assert len(call.args) == 2 and isinstance(call.args[1], ast.Tuple), where


# No credentials in results, logs, reports or command lines ---------------------------------


class ProcessWatcher(threading.Thread):
    """Records the command line and MySQL URL (from the environment) of every new descendant."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.seen: dict[int, tuple[list[str], str | None]] = {}
        self.stop = threading.Event()
        self.before = {p.pid for p in psutil.Process().children(recursive=True)}

    def run(self) -> None:
        me = psutil.Process()
        while not self.stop.wait(0.05):
            for proc in me.children(recursive=True):
                if proc.pid in self.before:
                    continue
                # Keep the latest reading: between fork and exec a child still shows the
                # parent's command line and environment.
                with contextlib.suppress(psutil.Error):
                    self.seen[proc.pid] = (proc.cmdline(), proc.environ().get(MYSQL_URL_ENV))

    def __enter__(self) -> ProcessWatcher:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.join(5)


@pytest.mark.slow
@pytest.mark.parametrize("owned", [False, True], ids=["given --mysql-url", "throwaway"])
def test_no_password_in_results_logs_report_or_command_lines(
    tmp_path: Path, mariadb: Database, owned: bool
) -> None:
    settings = RunSettings(
        scenarios=("sql",), servers=("tornado-coroutine",), users=(2,), duration_s=1,
        warmup_s=0.5, repeat=1, reports_dir=str(tmp_path), new=True,
        mysql_url=None if owned else mariadb.url,
    )  # fmt: skip
    with ProcessWatcher() as watcher:
        run = run_matrix(settings)
    model = [url for cmd, url in watcher.seen.values() if "servers.tornado_coroutine" in cmd]
    assert model, "the server process was never seen"
    urls = set(model)
    assert len(urls) == 1 and None not in urls, "the server gets the MySQL URL in its environment"
    password = MysqlUrl.parse(urls.pop()).password
    assert len(password) >= 16
    if not owned:
        assert password == MysqlUrl.parse(mariadb.url).password
    # Measured (verified against MariaDB, then loaded): the password was really used. "invalid"
    # is allowed, as a busy shared machine may saturate the CPU; that is not this test's subject.
    results = run.results()
    assert results["status"].tolist() in (["ok"], ["invalid"]), results["reason"].tolist()
    assert results["requests"].iloc[0] > 0

    for cmdline, _ in watcher.seen.values():
        assert not any(password in arg for arg in cmdline), cmdline
    with contextlib.suppress(ImportError):  # the report stage, when this checkout has it
        from asyncbench.reporting.report import build_report

        with warnings.catch_warnings():  # its deprecation warnings are not this test's subject
            warnings.simplefilter("ignore")
            build_report(run)
    files = [p for p in run.path.rglob("*") if p.is_file()]
    names = {p.relative_to(run.path).as_posix() for p in files}
    assert {"run.json", "results.csv"} <= names and any(n.startswith("logs/") for n in names)
    for path in files:
        assert password.encode() not in path.read_bytes(), path
        if path.suffix == ".parquet":  # compressed pages: check the decoded values too
            frame = pd.read_parquet(path)
            assert password not in frame.astype(str).to_csv(), path
    assert password not in "".join(str(p) for p in files)
