"""Per-process request counters the harness reads while a server runs (``--stats-dir``).

Each serving process owns one 8-byte file ``<stats-dir>/<pid>.count`` mapped into memory and adds
one per answered request. The harness samples the files once a second, so how requests spread
over a multi-process model's workers (forked Tornado's accept imbalance) is evidence in the
results, not a claim. Without ``--stats-dir`` nothing is counted.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
from pathlib import Path

_FORMAT = "<Q"
_SIZE = struct.calcsize(_FORMAT)


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

    def add(self) -> None:
        if self._map is None:
            return
        with self._lock:
            self._count += 1
            struct.pack_into(_FORMAT, self._map, 0, self._count)


def read_counts(directory: Path) -> dict[int, int]:
    """Requests answered so far by each process that counts into ``directory`` (pid → count)."""
    counts = {}
    for path in Path(directory).glob("*.count"):
        data = path.read_bytes()
        if len(data) == _SIZE and path.stem.isdigit():
            counts[int(path.stem)] = struct.unpack(_FORMAT, data)[0]
    return counts
