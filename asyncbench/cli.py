"""The ``asyncbench`` command line: a thin layer over the pipeline stages."""

from __future__ import annotations

import argparse
import errno
import os
import signal
import socket
import sys
from pathlib import Path
from typing import NoReturn

from asyncbench.measuring.processes import ProcessError
from asyncbench.measuring.services import ServiceError
from asyncbench.planning.plan import ScenarioError
from asyncbench.planning.scenario_files import available_scenarios, load_scenario
from asyncbench.planning.settings import SessionError
from asyncbench.planning.thresholds import ComparisonInputError
from asyncbench.planning.validate import (
    UsageError,
    check_compare,
    check_loadgen_worker,
    check_report,
    check_run,
    check_serve,
)
from asyncbench.storing.atomic import is_disk_full
from asyncbench.storing.store import StoreError
from servers import MODELS
from servers.config import ServerConfig
from servers.registry import LIBRARY, SIZED

# What a user can cause and fix: one line each. Anything else is a bug and shows its traceback.
USER_ERRORS = (UsageError, ScenarioError, ServiceError, StoreError, ProcessError, SessionError,
               ComparisonInputError)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    try:
        args = parse_and_check(argv)
        return args.handler(args) or 0
    except USER_ERRORS as exc:
        return print_user_error(exc)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        return print_user_error(UsageError(
            f"no space left on the device holding {exc.filename or 'a file'}: free some space "
            "and try again"))  # fmt: skip
    except KeyboardInterrupt:
        print("asyncbench: interrupted; finished cells are kept", file=sys.stderr)
        return 130


def parse_and_check(argv: list[str] | None = None) -> argparse.Namespace:
    """The parsed command line, every flag validated; nothing has started yet.

    argparse's own errors exit 2 with a usage line; ours raise ``UsageError`` (or
    ``ScenarioError`` for a scenario file), one line each.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        check_run(args, defaults=parser.parse_args(["run"]))
    elif args.command == "serve":
        check_serve(args)
    elif args.command == "report":
        check_report(args)
    elif args.command == "compare":
        check_compare(args)
    elif args.command == "loadgen-worker":
        args.master_address = check_loadgen_worker(args)
    return args


def print_user_error(exc: Exception) -> int:
    """One line on stderr (then indented detail, if the error carries some); exit status 2.

    Validation errors have no detail: any line break in them came from the user's input."""
    text = str(exc)
    first, *rest = [text] if isinstance(exc, UsageError | ScenarioError) else text.split("\n")
    print(f"asyncbench: error: {one_line(first)}", file=sys.stderr)
    if rest:  # e.g. a process's last log lines: useful, but after the one-line error
        print("\n".join(f"  {one_line(line)}" for line in rest), file=sys.stderr)
    return 2


def one_line(text: str) -> str:
    """``text`` with line breaks and other unprintable characters escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _raise_interrupt(signum, frame) -> None:
    """First Ctrl-C or SIGTERM: unwind, stopping every child. Later ones must not cut that short."""
    signal.signal(signal.SIGINT, _still_cleaning_up)
    signal.signal(signal.SIGTERM, _still_cleaning_up)
    raise KeyboardInterrupt


def _still_cleaning_up(signum, frame) -> None:
    print("asyncbench: stopping child processes, please wait", file=sys.stderr)


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors in the project's one-line style (subcommands inherit it)."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("asyncbench").strip()
        where = f"{command}: " if command else ""
        message = one_line(f"{where}{message} (see `{self.prog} --help`)")
        self.exit(2, f"asyncbench: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="asyncbench", description="Benchmark blocking versus asynchronous Python servers."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the benchmark matrix and write results and the report")
    run.add_argument(
        "--scenario",
        action="append",
        default=[],
        metavar="S",
        help="scenario name or .toml path (repeatable; default: all)",
    )
    run.add_argument(
        "--server",
        action="append",
        default=[],
        metavar="M",
        choices=list(MODELS),
        help="server model (repeatable; default: all)",
    )
    run.add_argument("--users", type=_int_list, help="load levels, e.g. 1,10,50 (overrides)")
    run.add_argument("--duration", type=float, metavar="SEC", help="measured seconds per cell")
    run.add_argument("--warmup", type=float, metavar="SEC", help="discarded warm-up seconds")
    run.add_argument(
        "--repeat", type=int, default=None,
        help="repeats per cell (default: 1, and a second where the first does not settle the "
        "answer; --full 2; --quick 1)",
    )  # fmt: skip
    run.add_argument("--workers", type=int, default=ServerConfig.workers,
                     help="multi-process models' worker processes (default 4)")
    run.add_argument("--threads", type=int, default=ServerConfig.threads,
                     help="threaded models' threads per process (default 64)")
    run.add_argument("--worker-connections", type=int, default=ServerConfig.worker_connections,
                     help="greenlet models' connections per worker (default 1024)")
    run.add_argument("--defaults", choices=(SIZED, LIBRARY), default=SIZED,
                     help="pool sizes: the harness's fair ones (sized) or each library's own")
    run.add_argument("--spawn-rate", type=float, metavar="USERS_PER_S",
                     help="open users gradually at this rate (default: all at once)")
    run.add_argument("--out", default="reports", metavar="DIR", help="reports directory")
    run.add_argument("--mysql-url", metavar="URL", help="use this MySQL/MariaDB server")
    sweep = run.add_mutually_exclusive_group()
    sweep.add_argument(
        "--quick", action="store_true", help="smoke profile: short windows, few levels"
    )
    sweep.add_argument(
        "--full", action="store_true",
        help="the full sweep: every level of every scenario file, two repeats",
    )  # fmt: skip
    run.add_argument("--seed", type=int, help="seed for the cell order (default: random, recorded)")
    run.add_argument(
        "--new",
        action="store_true",
        help="with --scenario/--server: start a new run instead of updating the latest",
    )
    run.add_argument("--rate", type=_rate_list, metavar="R,R",
                     help="open loop: offered requests/s per cell instead of --users")
    run.add_argument("--arrival", choices=("constant", "poisson"), default="constant",
                     help="open loop arrival process (default constant)")
    run.add_argument("--locust-workers", type=int, default=0, metavar="N",
                     help="drive each cell with a Locust master and N local worker processes")
    run.add_argument("--expect-workers", type=int, default=0, metavar="N",
                     help="wait for N remote `asyncbench loadgen-worker` processes per cell")
    run.add_argument("--locust-master-bind", default="127.0.0.1", metavar="ADDR",
                     help="address the Locust master listens on for remote workers")
    run.add_argument("--locust-master-port", type=int, default=5557, metavar="PORT")
    run.add_argument("--target", metavar="URL",
                     help="measure a server started elsewhere by `asyncbench serve` (one --server)")
    run.add_argument("--upstream", metavar="URL", help="use an upstream started elsewhere")
    run.add_argument("--redis-url", metavar="URL",
                     help="the room's message bus: an existing Redis (default: a throwaway one)")
    run.add_argument("--profile", action="store_true",
                     help="record a py-spy flame graph of the server in each cell's window "
                     "(choose cells with --scenario/--server/--users)")
    run.add_argument("--resume", metavar="RUN_DIR",
                     help="continue an interrupted run: run the cells it has no result for")
    run.add_argument("--check", action="store_true",
                     help="apply the scenarios' [thresholds] to this run; exit 1 if one fails")
    run.set_defaults(handler=_cmd_run)

    compare = sub.add_parser(
        "compare", help="compare a run with a baseline level by level (exit 1: regressed)")
    compare.add_argument("run_dir", metavar="RUN", help="the run directory to judge")
    compare.add_argument("--baseline", required=True, metavar="OTHER",
                         help="the run directory to compare with")
    compare.add_argument("--confidence", type=_confidence, default=0.95,
                         help="confidence of the intervals (default 0.95)")
    compare.add_argument("--within-run", action="store_true",
                         help="judge by each run's own A/A floor alone, not also by how far the "
                         "A/A level moved between the runs (for a change to the A/A model)")
    compare.set_defaults(handler=_cmd_compare)

    worker = sub.add_parser("loadgen-worker",
                            help="join runs as a Locust worker (on a load-generator machine)")
    worker.add_argument("--master", required=True, metavar="HOST[:PORT]")
    worker.add_argument("--idle-timeout", type=float, default=600, metavar="SEC",
                        help="give up after this long without joining a cell (default 600)")
    worker.set_defaults(handler=_cmd_loadgen_worker)  # fmt: skip

    serve = sub.add_parser("serve", help="run one server model in the foreground")
    serve.add_argument("model", choices=list(MODELS))
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=ServerConfig.workers)
    serve.add_argument("--threads", type=int, default=ServerConfig.threads)
    serve.add_argument("--worker-connections", type=int,
                       default=ServerConfig.worker_connections)
    serve.add_argument("--upstream", metavar="URL", help="base URL of the slow upstream for /fetch")
    serve.add_argument("--mysql-url", metavar="URL", help="MySQL/MariaDB for /sql")
    serve.add_argument("--redis-url", metavar="URL", help="Redis for the room (/room/*)")
    serve.set_defaults(handler=_cmd_serve)

    report = sub.add_parser("report", help="rebuild a run's HTML report from its stored results")
    report.add_argument("run_dir", nargs="?", default="reports/latest", metavar="RUN_DIR",
                        help="a run directory (default: reports/latest)")
    report.add_argument("--baseline", metavar="OTHER_RUN",
                        help="add the change against another run")
    report.set_defaults(handler=_cmd_report)

    lister = sub.add_parser("list", help="list scenarios and server models")
    lister.set_defaults(handler=_cmd_list)
    return parser


def _positive_list(kind: type, what: str, example: str):
    """An argparse type for comma-separated positive numbers, e.g. ``--users 1,10,50``."""

    def parse(text: str) -> tuple:
        try:
            values = tuple(sorted({kind(v) for v in text.split(",") if v.strip()}))
        except ValueError:
            message = f"expected {what} like {example}, got {text!r}"
            raise argparse.ArgumentTypeError(message) from None
        if not values or min(values) <= 0:
            raise argparse.ArgumentTypeError(f"{what} must be positive")
        return values

    return parse


def _confidence(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.5 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a level like 0.95 (0.5 to <1), got {text!r}")
    return value


_int_list = _positive_list(int, "load levels", "1,10,50")
_rate_list = _positive_list(float, "rates (requests/s)", "50,100,200")


def run_and_report(settings, hooks=None, argv=None):
    """Measure the cells ``settings`` select into the store, then build the report from the
    store: after every invocation, interrupted and failed ones included (not on a full disk,
    where it would not fit either; the next complete run rebuilds it)."""
    from asyncbench.measuring.run import RunHooks, measure_run, open_run
    from asyncbench.reporting.report import build_after_run

    hooks = hooks or RunHooks()
    opened = open_run(settings, hooks, argv)
    try:
        measure_run(opened, hooks)
    finally:
        if not opened.disk_full:
            build_after_run(opened.run, opened.meta, hooks.warn)
        hooks.run_finished(opened.run, opened.meta.invocations[-1])
    return opened.run


def _cmd_run(args: argparse.Namespace) -> int:
    from asyncbench.planning.settings import RunSettings
    from asyncbench.reporting.display import RichDisplay

    settings = RunSettings(
        scenarios=tuple(args.scenario), servers=tuple(args.server), users=args.users,
        duration_s=args.duration, warmup_s=args.warmup,
        repeat=args.repeat or (2 if args.full else 1), full=args.full,
        second_repeats=not (args.quick or args.full or args.repeat), workers=args.workers,
        threads=args.threads, worker_connections=args.worker_connections,
        defaults=args.defaults, spawn_rate=args.spawn_rate,
        reports_dir=args.out, mysql_url=args.mysql_url, quick=args.quick, seed=args.seed,
        new=args.new, rates=args.rate, arrival=args.arrival, locust_workers=args.locust_workers,
        expect_workers=args.expect_workers, master_bind=args.locust_master_bind,
        master_port=args.locust_master_port, target=args.target, upstream_url=args.upstream,
        redis_url=args.redis_url, profile=args.profile,
        resume=args.resume,
    )  # fmt: skip
    with RichDisplay() as display:
        run = run_and_report(settings, display, argv=["asyncbench", *sys.argv[1:]])
    print(f"results: {run.path}")
    report = run.path / "index.html"
    if report.exists():
        print(f"report:  {report}")
    return _check(run.path) if args.check else 0


def _check(run_path: Path) -> int:
    """``run --check``: the thresholds of each scenario on the run just made."""
    from asyncbench.judging import regression

    result = regression.check(regression.load(run_path))
    for failure in result.failures:
        print(f"threshold failed: {failure}")
    print(f"check: {regression.summary(result)}")
    return result.status


def _cmd_compare(args: argparse.Namespace) -> int:
    from asyncbench.judging import regression

    run, baseline = regression.load(Path(args.run_dir)), regression.load(Path(args.baseline))
    floors = regression.gate_floors(run.cells, baseline.cells, across_runs=not args.within_run)
    result = regression.compare(run, baseline, floors, args.confidence)
    print("\n".join(regression.lines(result, floors)))
    return result.status


def _cmd_report(args: argparse.Namespace) -> int:
    from asyncbench.reporting.report import build_report
    from asyncbench.storing.store import RunDir

    baseline = RunDir.open(Path(args.baseline)) if args.baseline else None
    path = build_report(RunDir.open(Path(args.run_dir)), baseline)
    print(f"report: {path}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from servers.config import MYSQL_URL_ENV, REDIS_URL_ENV

    _check_can_listen(args.host, args.port)
    spec = MODELS[args.model]
    config = spec.configure(ServerConfig(
        host=args.host, port=args.port, workers=args.workers, threads=args.threads,
        worker_connections=args.worker_connections, upstream=args.upstream,
    ))  # fmt: skip
    if args.mysql_url:
        os.environ[MYSQL_URL_ENV] = args.mysql_url
    if args.redis_url:
        os.environ[REDIS_URL_ENV] = args.redis_url
    print(f"asyncbench: serving {args.model} on http://{args.host}:{args.port}", file=sys.stderr)
    module = spec.module
    os.execv(sys.executable, [sys.executable, "-m", module, *config.to_argv()])
    return 0  # not reached


def _check_can_listen(host: str, port: int) -> None:
    """Fail with one line, before exec'ing the model, if ``host:port`` cannot be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ServiceError(f"port {port} on {host} is already in use") from None
            raise ServiceError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _cmd_loadgen_worker(args: argparse.Namespace) -> int:
    from asyncbench.measuring.measure import run_remote_worker

    host, port = args.master_address
    run_remote_worker(host, port, args.idle_timeout)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    print("scenarios:")
    for name, path in available_scenarios().items():
        try:
            print(f"  {name:8} {load_scenario(path).description}")
        except ScenarioError as exc:
            print(f"  {name:8} (invalid: {exc})")
    print("servers:")
    for spec in MODELS.values():
        extra = "" if spec.default_run else " (on request: --server)"
        print(f"  {spec.name:26} {spec.summary}{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
