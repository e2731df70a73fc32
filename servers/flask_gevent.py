"""The ``flask-gevent`` model: the same Flask app on gunicorn ``gevent`` workers.

The remedy a team with a blocking Flask app asks about first: no rewrite, the standard library
monkey-patched so that every blocking call yields to the worker's gevent hub. The app, its
handlers and its drivers are ``flask-blocking``'s (``servers.flask_blocking.create_app``):
``time.sleep``, ``http.client``, PyMySQL (pure Python over the patched ``socket``) and redis-py
(the room) all wait on patched sockets. Each of ``workers`` processes serves up to
``worker_connections`` connections at once, one greenlet each, so a worker's greenlets are its
in-flight requests, and the hub, one per process, is an event loop: CPU of one core, and a hub
that a call never yields from serialises everything behind it.

``monkey.patch_all()`` runs below before anything else of ours is imported, and the master and
every worker refuse to start (one line) if a module that must be patched is not: a driver on an
unpatched socket would block the hub and serve one request at a time per worker.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
from typing import Any  # noqa: E402

from flask import Flask  # noqa: E402
from gunicorn.workers.base import Worker  # noqa: E402

from servers import flask_blocking  # noqa: E402
from servers.config import ServerConfig  # noqa: E402

MODEL = "flask-gevent"
KEEPALIVE_S = 5  # an idle kept-alive connection keeps its greenlet, not a thread
# What the drivers wait on: sockets (PyMySQL, http.client, redis-py), select (redis-py's
# subscription reads), time.sleep, and threading (the bus's per-greenlet subscription).
MUST_BE_PATCHED = ("socket", "ssl", "select", "time", "threading")
WORKER_BOOT_ERROR = 3  # gunicorn's exit status for a worker that cannot start: the master stops


def unpatched() -> list[str]:
    """The modules of MUST_BE_PATCHED that gevent has not patched in this process."""
    return [name for name in MUST_BE_PATCHED if not monkey.is_module_patched(name)]


def refusal() -> str | None:
    """The one-line reason not to serve, if a module that must be patched is not."""
    missing = unpatched()
    if not missing:
        return None
    return (f"{MODEL}: not monkey-patched: {', '.join(missing)} (gevent.monkey.patch_all() must "
            "run before anything imports them; a driver on them would block the hub)")  # fmt: skip


def create_app(config: ServerConfig, model: str = MODEL) -> Flask:
    """``flask-blocking``'s app, its bus pool sized for every greenlet that may wait on the
    room, one MySQL connection opened now (the hub serves every request of the process), and
    the hub's lag measured."""
    app = flask_blocking.create_app(config, model, warm=True, holders=config.worker_connections)
    app.extensions["request_counter"].watch_hub()
    return app


def post_worker_init(worker: Worker) -> None:
    """``flask-blocking``'s worker set-up, and the refusal: a worker whose drivers would not
    yield exits at once, and the master stops with it.

    SIGTERM ends the worker at once. gunicorn's gevent worker quits by raising ``SystemExit``
    in a spawned greenlet, which gevent reports with a traceback at every stop; a benchmark
    server has nothing to drain."""
    flask_blocking.post_worker_init(worker)
    signal.signal(signal.SIGTERM, quit_now)
    if reason := refusal():
        print(reason, file=sys.stderr, flush=True)
        sys.exit(WORKER_BOOT_ERROR)


def quit_now(_signum: int, _frame: object) -> None:
    sys.stderr.flush()
    os._exit(0)


def gunicorn_options(config: ServerConfig) -> dict[str, Any]:
    return {
        **flask_blocking.gunicorn_options(config, MODEL),
        "worker_class": "gevent",
        "worker_connections": config.worker_connections,
        "keepalive": KEEPALIVE_S,
        "post_worker_init": post_worker_init,
    }


def main(argv: list[str] | None = None) -> None:
    if reason := refusal():
        sys.exit(reason)
    flask_blocking.serve(argv, MODEL, gunicorn_options, create_app)


if __name__ == "__main__":
    main()
