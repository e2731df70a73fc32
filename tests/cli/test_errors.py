"""Error paths through the real CLI: a non-zero exit and one clear line, never a traceback.

Each case runs ``python -m asyncbench.cli`` as a subprocess, as a user would, and checks that
stderr holds exactly one unindented line, ``asyncbench: error: ...`` (detail, such as the last
lines of a log, may follow indented), and that nothing anywhere says "Traceback".
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from asyncbench.measuring.mariadb import MARIADBD_ENV, mariadb_binaries
from asyncbench.measuring.services import ServiceError, find_binary
from servers import MODELS
from servers.config import ServerConfig

pytestmark = pytest.mark.slow  # real server processes

SHORT_RUN = ("--duration", "1", "--warmup", "0.5", "--users", "1", "--repeat", "1")


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    """``asyncbench ARGS`` with a clean ASYNCBENCH_* environment plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCBENCH_")}
    return subprocess.run(
        [sys.executable, "-m", "asyncbench.cli", *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        cwd=cwd,
        timeout=120,
    )


def error_line(result: subprocess.CompletedProcess) -> str:
    """The one error line of a failed command (after checking there is exactly one).

    Before it, ``run`` may have printed its header (``run ID: N cells → DIR``, which Rich may
    wrap) when stderr is not a terminal; after it, only indented detail.
    """
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    lines = result.stderr.splitlines()
    errors = [i for i, line in enumerate(lines) if line.startswith("asyncbench: error: ")]
    assert len(errors) == 1, result.stderr
    assert "error" not in "".join(lines[: errors[0]]).lower(), result.stderr
    assert all(line.startswith("  ") for line in lines[errors[0] + 1 :]), result.stderr
    return lines[errors[0]]


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port this test holds open."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_serve_on_a_port_in_use(taken_port: int) -> None:
    result = cli("serve", "tornado-coroutine", "--port", str(taken_port))
    line = error_line(result)
    assert f"port {taken_port}" in line and "in use" in line, line


@pytest.mark.parametrize("model", list(MODELS))
def test_server_model_started_directly_on_a_port_in_use(taken_port: int, model: str) -> None:
    """The race behind `serve`'s check: the model itself says so in one line, promptly."""
    flags = MODELS[model].configure(ServerConfig(port=taken_port)).to_argv()
    result = subprocess.run(
        [sys.executable, "-m", MODELS[model].module, *flags],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines() == [
        f"{model}: cannot listen on 127.0.0.1:{taken_port}: Address already in use"
    ]


def test_unreachable_mysql_url(tmp_path: Path) -> None:
    url = "mysql://root:wrong@127.0.0.1:1/x"
    result = cli("run", "--scenario", "sql", "--mysql-url", url, *SHORT_RUN, "--out", str(tmp_path))
    line = error_line(result)
    assert "cannot reach --mysql-url mysql://root:***@127.0.0.1:1/x" in line, line
    assert "wrong" not in result.stdout + result.stderr  # the password is never printed


def test_missing_mariadbd_says_what_to_install_or_pass(tmp_path: Path) -> None:
    result = cli(
        "run", "--scenario", "sql", *SHORT_RUN, "--out", str(tmp_path),
        env={"ASYNCBENCH_MARIADBD": "/nonexistent/mariadbd"},
    )  # fmt: skip
    line = error_line(result)
    assert "/nonexistent/mariadbd" in line, line
    assert "--mysql-url" in line or "apt-get install" in line, line


def test_mariadb_that_fails_to_start_names_its_log(tmp_path: Path) -> None:
    result = cli(
        "run", "--scenario", "sql", *SHORT_RUN, "--out", str(tmp_path),
        env={"ASYNCBENCH_MARIADB_ARGS": "--no-such-option=1"},
    )  # fmt: skip
    line = error_line(result)
    log = (tmp_path / "latest" / "logs" / "mariadb.log").resolve()  # in the run's own logs
    assert str(log) in line and "ASYNCBENCH_MARIADB_ARGS" in line, line
    assert "unknown variable 'no-such-option=1'" in log.read_text()
    detail = result.stderr.split(line, 1)[1]  # the log's error lines, indented
    assert "[ERROR]" in detail and "no-such-option" in detail, detail


def test_bad_scenario_file_names_the_file_and_the_field(tmp_path: Path) -> None:
    scenario = tmp_path / "x.toml"
    scenario.write_text(
        "\n".join(['endpoint = "/sleep"', "delay_ms = 10", "users = [1]", "colour = 3", ""])
    )
    result = cli("run", "--scenario", str(scenario), *SHORT_RUN, "--out", str(tmp_path / "out"))
    line = error_line(result)
    assert str(scenario) in line and "colour" in line, line


def test_mariadbd_override_is_the_only_candidate(tmp_path: Path, monkeypatch) -> None:
    """Set, it is used as given; unusable, it fails rather than falling back to the one on PATH."""
    link = tmp_path / "my-mariadbd"
    link.symlink_to(find_binary(("mariadbd", "mysqld")))
    monkeypatch.setenv(MARIADBD_ENV, str(link))
    assert mariadb_binaries()[0] == str(link)
    not_executable = tmp_path / "mariadbd"
    not_executable.write_text("")
    monkeypatch.setenv(MARIADBD_ENV, str(not_executable))
    with pytest.raises(ServiceError, match="is not an executable file"):
        mariadb_binaries()
