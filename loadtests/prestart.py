"""A Locust process started ahead of its cell.

It imports what a Locust run needs (Locust, which patches the standard library with gevent
first, as the ``locust`` command does; the locustfile's libraries; pyarrow for the samples file),
then waits for its command line on stdin as one JSON list, and runs it. The harness starts the
next cell's Locust this way while the current cell is stopped and stored, so the imports are no
longer on the critical path. An empty line, or end of input, exits without running anything.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import locust  # noqa: F401  (first: gevent patches the standard library)
import pyarrow.parquet  # noqa: F401
import websocket  # noqa: F401
from locust.main import main


def run() -> int:
    line = sys.stdin.readline()
    if not line.strip():
        return 0
    argv = json.loads(line)
    if not isinstance(argv, list) or not all(isinstance(arg, str) for arg in argv):
        print(f"prestart: expected a JSON list of arguments, got {line[:200]!r}", file=sys.stderr)
        return 2
    sys.argv = ["locust", *argv]
    with contextlib.suppress(OSError):  # named as the `locust` command's process is (Linux)
        Path("/proc/self/comm").write_text("locust")
    return main()


if __name__ == "__main__":
    sys.exit(run())
