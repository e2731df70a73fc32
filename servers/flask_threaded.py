"""The ``flask-threaded`` model: the same Flask app on gunicorn ``gthread`` workers.

Each of ``workers`` processes runs ``threads`` threads, each serving one request at a time with
the blocking I/O of ``servers.blocking_io`` (MySQL connections shared by the threads), so the
model holds ``workers × threads`` requests at once: the remedy the skeptic names first ("use
threads"). Unlike sync workers, gthread keeps idle client connections open (``keepalive``
seconds) in its poller, where they hold no thread.
"""

from __future__ import annotations

from typing import Any

from servers import flask_blocking
from servers.config import ServerConfig

MODEL = "flask-threaded"
KEEPALIVE_S = 5  # idle kept-alive connections wait in the poller, not in a thread


def gunicorn_options(config: ServerConfig) -> dict[str, Any]:
    return {
        **flask_blocking.gunicorn_options(config, MODEL),
        "worker_class": "gthread",
        "threads": config.threads,
        "keepalive": KEEPALIVE_S,
        # gthread stops accepting beyond this many open connections per worker; far above any
        # level the harness offers, so it is never the hidden cap
        "worker_connections": 10_000,
    }


def main(argv: list[str] | None = None) -> None:
    flask_blocking.serve(argv, MODEL, gunicorn_options)


if __name__ == "__main__":
    main()
