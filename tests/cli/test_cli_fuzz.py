"""Generated command lines: whatever the argv, ``asyncbench`` answers 0 or 2 with one line.

Hypothesis builds argv for every subcommand from the parser itself (every flag it has, so flags
added later are covered too): values in and out of range, NaN and infinities, junk text, URLs and
hosts of every shape, unknown flags, missing values, stray positionals. The fast tests run
``cli.parse_and_check`` in-process: it must accept (and then every value is in range) or refuse
with exit 2 and one line, never raise anything else, start a process or create a file. The slow
tests run a sample through the real CLI as a subprocess.

Run with ``-s`` to see how many command lines were tried (also ``--hypothesis-show-statistics``);
``ASYNCBENCH_FUZZ_SCALE=20`` tries twenty times as many.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from asyncbench import cli
from asyncbench.planning.plan import MAX_SECONDS, MAX_USERS, ScenarioError
from asyncbench.planning.validate import UsageError
from servers.config import MAX_PORT, MAX_THREADS, MAX_WORKERS

PARSER = cli._parser()
SUBCOMMANDS: dict[str, argparse.ArgumentParser] = next(
    a.choices for a in PARSER._actions if isinstance(a, argparse._SubParsersAction)
)
TRIED: Counter[str] = Counter()
ERROR_PREFIX = "asyncbench: error: "
SCALE = int(os.environ.get("ASYNCBENCH_FUZZ_SCALE", "1"))  # e.g. 20 for a deeper search
FAST = settings(
    max_examples=150 * SCALE, deadline=None, database=None,
    suppress_health_check=list(HealthCheck),
)  # fmt: skip

EDGES = st.sampled_from(["0", "-1", "0.5", "65535", "65536", "99999", "nan", "inf", "-inf",
                         "1e999", "0.0001", "86401", "5001", "4294967296", "9" * 40, "1_0", "0x10",
                         "", " 3"])  # fmt: skip
INTEGERS = st.one_of(st.integers(1, 8).map(str), st.integers(-(10**6), 10**6).map(str), EDGES)
FLOATS = st.one_of(
    st.floats(0.5, 5).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr), EDGES
)
NUMBERS = st.one_of(INTEGERS, FLOATS)
LISTS = st.lists(NUMBERS, min_size=0, max_size=4).map(",".join)
SMALL_LISTS = st.lists(st.integers(1, 8).map(str), min_size=1, max_size=3).map(",".join)
TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\0"), max_size=20)
URLS = st.sampled_from([
    "http://127.0.0.1:1", "http://localhost:8000/", "http://h:99999", "http://h:port",
    "http://[::1", "http://", "ftp://x:1", "http://u:p@h:1", "http://h:1/path?q=1",
    "mysql://u:p@127.0.0.1:1/db", "mysql://h:0x/db", "mysql://h:70000/db", "redis://h:1", "",
])  # fmt: skip
HOSTS = st.sampled_from(
    ["127.0.0.1", "::1", "0.0.0.0", "*", "localhost", "-bad", "a b", "", "x" * 300, "256.1.1.1"]
)
PATHS = st.sampled_from(["reports", "out", "", ".", "/", "/proc/nope", "/dev/null",
                         "no/such/run", "reports/latest", "/etc/hostname", "hello", "sleep",
                         "x.toml", "/tmp"])  # fmt: skip


def values_for(action: argparse.Action, junk: bool) -> st.SearchStrategy[str]:
    """Values of the flag's type (so validation, not only argparse, is exercised); ``junk``
    adds text of any kind."""
    if action.choices:
        typed = st.sampled_from([str(c) for c in action.choices])
    elif action.type is int:
        typed = INTEGERS
    elif action.type is float:
        typed = FLOATS
    elif action.type in (cli._int_list, cli._rate_list):
        typed = st.one_of(SMALL_LISTS, SMALL_LISTS, LISTS)
    else:
        typed = st.one_of(URLS, HOSTS, PATHS)
    return st.one_of(typed, TEXT, NUMBERS) if junk else typed


@st.composite
def argvs(draw, command: str) -> list[str]:
    """An argv for ``command``: half well-typed, half with junk of every kind."""
    junk = draw(st.booleans())
    return draw(_argvs(command, junk))


@st.composite
def _argvs(draw, command: str, junk: bool) -> list[str]:
    """``command``'s positionals (usually), then a few options (and, with ``junk``, junk)."""
    sub = SUBCOMMANDS[command]
    actions = [a for a in sub._actions if not isinstance(a, argparse._HelpAction)]
    options = [a for a in actions if a.option_strings]
    argv = [command]
    for action in (a for a in actions if not a.option_strings):
        if draw(st.integers(0, 9)):  # mostly present
            argv.append(draw(values_for(action, junk)))
    for _ in range(draw(st.integers(0, 6))):
        oddities = ["unknown", "no value", "stray"] if junk else []
        kind = draw(st.sampled_from(["option"] * 8 + oddities))
        if kind == "option" and options:
            action = draw(st.sampled_from(options))
            flag = draw(st.sampled_from(action.option_strings))
            if action.nargs == 0:
                argv.append(flag)
            elif draw(st.booleans()):
                argv += [flag, draw(values_for(action, junk))]
            else:
                argv.append(f"{flag}={draw(values_for(action, junk))}")
        elif kind == "unknown":
            argv.append("--" + draw(TEXT))
        elif kind == "no value" and options:
            argv.append(draw(st.sampled_from(options)).option_strings[-1])
        else:
            argv.append(draw(TEXT))
    return argv


@contextlib.contextmanager
def empty_cwd() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):
        yield Path(tmp)


def check_argv(argv: list[str]) -> str:
    """Parse and validate ``argv`` in-process; the outcome, after checking its output."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = cli.parse_and_check(argv)
    except SystemExit as exc:
        if exc.code == 0:
            assert "usage:" in out.getvalue()  # --help
            return "help"
        assert exc.code == 2, (argv, exc.code)
        lines = err.getvalue().splitlines()
        assert len(lines) == 1 and lines[0].startswith(ERROR_PREFIX), (argv, lines)
        return "refused by argparse"
    except (UsageError, ScenarioError) as exc:
        with contextlib.redirect_stderr(err):
            assert cli.print_user_error(exc) == 2
        lines = err.getvalue().splitlines()
        assert len(lines) == 1 and lines[0].startswith(ERROR_PREFIX), (argv, lines)
        return "refused by validation"
    assert_in_range(args)
    return "accepted"


def assert_in_range(args: argparse.Namespace) -> None:
    """What an accepted command line may contain, whatever the subcommand."""
    for name, value in vars(args).items():
        if isinstance(value, float):
            assert math.isfinite(value), (name, value)
    for name, most in (("workers", MAX_WORKERS), ("threads", MAX_THREADS)):
        if hasattr(args, name):
            assert 1 <= getattr(args, name) <= most
    if args.command == "serve":
        assert 1 <= args.port <= MAX_PORT
    if args.command == "loadgen-worker":
        assert 1 <= args.master_address[1] <= MAX_PORT and args.idle_timeout > 0
    if args.command == "run" and not args.resume:
        assert args.duration is None or 0.5 <= args.duration <= MAX_SECONDS
        assert args.warmup is None or 0 <= args.warmup <= MAX_SECONDS
        assert args.repeat is None or args.repeat >= 1
        assert all(1 <= u <= MAX_USERS for u in args.users or ())
        assert all(0 < r and math.isfinite(r) for r in args.rate or ())
        assert not (args.users and args.rate)
        assert not args.target or len(args.server) == 1
        assert 1 <= args.locust_master_port <= MAX_PORT


def children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def run_property(command: str, argv: list[str]) -> None:
    # Processes alive before the call are not its own: the session's MariaDB, Redis and
    # upstream fixtures stay up until the suite ends, whichever test started them.
    before = children()
    with empty_cwd() as cwd:
        outcome = check_argv(argv)
        assert not list(cwd.iterdir()), f"{argv} created {list(cwd.iterdir())}"
    left = children() - before
    assert not left, f"{argv} left processes {sorted(left)} behind"
    TRIED[command] += 1
    event(f"{command}: {outcome}")


@pytest.fixture(scope="module", autouse=True)
def report_counts() -> Iterator[None]:
    yield
    print(f"\ngenerated command lines tried: {dict(TRIED)}, total {sum(TRIED.values())}")


@FAST
@given(argvs("run"))
def test_any_run_command_line_is_accepted_in_range_or_refused_in_one_line(argv):
    run_property("run", argv)


@settings(FAST, max_examples=60 * SCALE)
@given(argvs("compare"))
def test_any_compare_command_line_exits_0_1_or_2_in_one_line(argv):
    run_property("compare", argv)


@FAST
@given(argvs("serve"))
def test_any_serve_command_line_is_accepted_in_range_or_refused_in_one_line(argv):
    run_property("serve", argv)


@settings(FAST, max_examples=60 * SCALE)
@given(argvs("report"))
def test_any_report_command_line_is_accepted_or_refused_in_one_line(argv):
    run_property("report", argv)


@settings(FAST, max_examples=60 * SCALE)
@given(argvs("list"))
def test_any_list_command_line_is_accepted_or_refused_in_one_line(argv):
    run_property("list", argv)


@settings(FAST, max_examples=60 * SCALE)
@given(argvs("loadgen-worker"))
def test_any_loadgen_worker_command_line_is_accepted_in_range_or_refused(argv):
    run_property("loadgen-worker", argv)


@settings(FAST, max_examples=60 * SCALE)
@given(st.lists(st.one_of(TEXT, st.sampled_from(["compare", "run", "--help", "-h"])), max_size=4))
def test_any_top_level_command_line_exits_0_or_2_in_one_line(argv):
    run_property("top level", argv)


@pytest.mark.skipif("compare" in SUBCOMMANDS, reason="compare exists: fuzzed like the others")
def test_an_unknown_subcommand_is_one_line_and_exit_2():
    assert check_argv(["compare", "a", "b"]) == "refused by argparse"


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["run", "--duration", "-1"], "--duration"),  # issue 17
        (["run", "--duration", "nan"], "--duration"),
        (["run", "--warmup", "inf"], "--warmup"),
        (["run", "--users", "1,6000"], "--users"),
        (["run", "--rate", "nan"], "--rate"),
        (["run", "--workers", "100000"], "--workers"),
        (["run", "--repeat", "0"], "--repeat"),
        (["run", "--spawn-rate", "0.01"], "--spawn-rate"),
        (["run", "--locust-master-port", "70000", "--expect-workers", "1"], "--locust-master-port"),
        (["run", "--locust-master-port", "6000"], "--expect-workers"),
        (["run", "--arrival", "poisson"], "--rate"),
        (["run", "--target", "http://h:1"], "--server"),
        (["run", "--target", "h:1", "--server", "flask-blocking"], "--target"),
        (["run", "--upstream", "http://h:99999"], "--upstream"),
        (["run", "--mysql-url", "mysql://h:99999/x"], "--mysql-url"),
        (["run", "--out", "/dev/null"], "--out"),
        (["run", "--seed", "-5"], "--seed"),
        (["serve", "tornado-coroutine", "--port", "99999"], "--port"),  # issue 17
        (["serve", "tornado-coroutine", "--port", "0"], "--port"),
        (["serve", "tornado-coroutine", "--host", "a b"], "--host"),
        (["serve", "flask-blocking", "--workers", "0"], "--workers"),
        (["serve", "flask-blocking", "--upstream", "ftp://h:1"], "--upstream"),
        (["loadgen-worker", "--master", "h:99999"], "--master"),
        (["loadgen-worker", "--master", "h", "--idle-timeout", "-1"], "--idle-timeout"),
        (["report", "no/such/run"], "RUN_DIR"),
    ],
)
def test_known_bad_command_lines_name_the_flag(argv, flag):
    with empty_cwd(), pytest.raises(UsageError) as err:
        cli.parse_and_check(argv)
    assert flag in str(err.value) and "\n" not in str(err.value)


def test_resume_refuses_flags_that_would_change_the_plan(tmp_path):
    with pytest.raises(UsageError, match=r"--duration, --users would change it"):
        cli.parse_and_check(["run", "--resume", str(tmp_path), "--users", "3", "--duration", "2"])
    args = cli.parse_and_check(["run", "--resume", str(tmp_path), "--mysql-url", "mysql://h/x"])
    assert args.resume == str(tmp_path)


# --- The real CLI, as a subprocess ------------------------------------------------------------

SAFE_WHEN_ACCEPTED = {"list", "report"}  # accepted, these read and exit; the others would run


def run_cli(argv: list[str], cwd: Path, token: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "asyncbench.cli", *argv], capture_output=True, text=True,
        cwd=cwd, timeout=60, env={**os.environ, "ASYNCBENCH_FUZZ_TOKEN": token},
    )  # fmt: skip


def processes_with(token: str) -> list[int]:
    found = []
    for proc in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error):
            if proc.environ().get("ASYNCBENCH_FUZZ_TOKEN") == token:
                found.append(proc.pid)
    return found


@pytest.mark.slow
@settings(FAST, max_examples=10 * SCALE)  # each starts the real CLI: 1.6-2.6 s
@given(st.sampled_from(sorted(SUBCOMMANDS)).flatmap(argvs))
def test_the_real_cli_exits_0_or_2_without_a_traceback_or_a_process_left(argv):
    with empty_cwd():
        outcome = check_argv(argv)
    if outcome == "accepted" and argv[0] not in SAFE_WHEN_ACCEPTED:
        event("accepted: not run (it would start a benchmark, a server or a worker)")
        return
    token = uuid.uuid4().hex
    with empty_cwd() as cwd:
        result = run_cli(argv, cwd, token)
        created = list(cwd.iterdir())
    TRIED["real cli"] += 1
    event(f"real cli: exit {result.returncode}")
    assert result.returncode in (0, 1, 2), (argv, result.returncode, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr, (argv, result.stderr)
    if result.returncode == 2:
        assert len(result.stderr.splitlines()) == 1, (argv, result.stderr)
        assert result.stderr.startswith(ERROR_PREFIX), (argv, result.stderr)
    assert not processes_with(token), argv
    assert outcome == "accepted" or not created, (argv, created)


@pytest.mark.slow
@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--duration", "-1"],
        ["serve", "tornado-coroutine", "--port", "99999"],
        ["run", "--resume", "no/such/run"],
        ["report"],
        ["compare", "a", "b"],
    ],
)
def test_the_two_defects_of_issue_17_and_friends_through_the_real_cli(argv, tmp_path):
    token = uuid.uuid4().hex
    result = run_cli(argv, tmp_path, token)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(ERROR_PREFIX)
    assert not list(tmp_path.iterdir()) and not processes_with(token)
