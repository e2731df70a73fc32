"""Per-process gauges the harness reads while a server runs (``--stats-dir``).

Each serving process owns one small file ``<stats-dir>/<pid>.count`` mapped into memory: the
requests it answered so far, and (processes with an event loop) the loop's lag, the worst
scheduling delay of a periodic callback over the last second. The harness samples the files once
a second, so how requests spread over a multi-process model's workers (forked Tornado's accept
imbalance) and how late an event loop runs are evidence in the results, not claims. Without
``--stats-dir`` nothing is counted.
"""

from __future__ import annotations

import asyncio
import mmap
import os
import struct
import threading
import time
from pathlib import Path

_FORMAT = "<QQ"  # requests answered; event-loop lag in microseconds (worst of the last second)
_SIZE = struct.calcsize(_FORMAT)
LAG_PROBE_S = 0.05  # the periodic callback's interval
LAG_WINDOW_S = 1.0  # the lag reported is the worst over this long


class RequestCounter:
    """This process's counter; safe to call from several threads."""

    def __init__(self, directory: str | None) -> None:
        self._map: mmap.mmap | None = None
        self._lock = threading.Lock()
        self._count = 0
        if directory:
            path = Path(directory) / f"{os.getpid()}.count"
            with open(path, "wb+") as fh:
                fh.write(bytes(_SIZE))
                fh.flush()
                self._map = mmap.mmap(fh.fileno(), _SIZE)

        self._lag_us = 0

    def add(self) -> None:
        if self._map is None:
            return
        with self._lock:
            self._count += 1
            struct.pack_into(_FORMAT, self._map, 0, self._count, self._lag_us)

    def watch_loop(self) -> None:
        """Measure the running asyncio loop's lag from now on (call inside the loop)."""
        if self._map is not None:
            asyncio.get_running_loop().create_task(self._probe_lag())

    def watch_hub(self) -> None:
        """Measure the gevent hub's lag from now on (call in the monkey-patched process that
        serves): how late a greenlet sleeping LAG_PROBE_S wakes, as for an asyncio loop."""
        if self._map is not None:
            import gevent  # only the gevent model has it loaded (and patched) by now

            gevent.spawn(self._probe_hub, gevent.sleep)

    async def _probe_lag(self) -> None:
        window = _LagWindow(self._store_lag)
        while True:
            due = time.monotonic() + LAG_PROBE_S
            await asyncio.sleep(LAG_PROBE_S)
            window.late(time.monotonic() - due)

    def _probe_hub(self, sleep) -> None:
        window = _LagWindow(self._store_lag)
        while True:
            due = time.monotonic() + LAG_PROBE_S
            sleep(LAG_PROBE_S)
            window.late(time.monotonic() - due)

    def _store_lag(self, worst_s: float) -> None:
        assert self._map is not None
        with self._lock:
            self._lag_us = int(worst_s * 1e6)
            struct.pack_into(_FORMAT, self._map, 0, self._count, self._lag_us)


class _LagWindow:
    """The worst lateness seen over each LAG_WINDOW_S, handed to ``store`` as each one ends."""

    def __init__(self, store) -> None:
        self._store = store
        self._worst, self._since = 0.0, time.monotonic()

    def late(self, seconds: float) -> None:
        self._worst = max(self._worst, seconds)
        if time.monotonic() - self._since >= LAG_WINDOW_S:
            self._store(self._worst)
            self._worst, self._since = 0.0, time.monotonic()


def read_gauges(directory: Path) -> dict[int, tuple[int, int]]:
    """Per process counting into ``directory``: (requests answered, loop lag in µs)."""
    found = {}
    for path in Path(directory).glob("*.count"):
        data = path.read_bytes()
        if len(data) == _SIZE and path.stem.isdigit():
            found[int(path.stem)] = struct.unpack(_FORMAT, data)
    return found


def read_counts(directory: Path) -> dict[int, int]:
    """Requests answered so far by each process that counts into ``directory`` (pid → count)."""
    return {pid: count for pid, (count, _) in read_gauges(directory).items()}


def read_loop_lag_ms(directory: Path) -> float | None:
    """The worst event-loop lag over the last second, over every process that has a loop."""
    lags = [lag for _, lag in read_gauges(directory).values()]
    return max(lags) / 1000 if any(lags) else None
