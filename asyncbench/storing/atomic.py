"""Atomic file writes: a reader (or a crash, or a full disk) sees the old file or the new one.

Every file the harness writes into a run directory goes through here: the bytes go to a
``.tmp`` sibling, are flushed to the disk, and replace the target in one ``rename``. When a write
fails (``ENOSPC`` on a full disk, most likely), the partial ``.tmp`` is removed before the error
propagates, so no half-written file is ever left and its blocks are free again.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterable
from pathlib import Path

DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
TMP_SUFFIX = ".tmp"


def is_disk_full(exc: BaseException) -> bool:
    """True for "no space left on device" and "disk quota exceeded"."""
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


def tmp_path(path: Path) -> Path:
    return path.with_name(path.name + TMP_SUFFIX)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` all at once."""
    write_all_atomic([(path, data)])


def write_all_atomic(files: Iterable[tuple[Path, bytes]]) -> None:
    """Write every file to its ``.tmp`` first, then rename them all.

    The renames need no new space, so either every file is replaced or (the disk filled while
    writing) none is and no ``.tmp`` remains.
    """
    staged: list[tuple[Path, Path]] = []
    try:
        for path, data in files:
            tmp = tmp_path(Path(path))
            staged.append((tmp, Path(path)))
            _write_synced(tmp, data)
    except BaseException:
        for tmp, _ in staged:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        raise
    for tmp, path in staged:
        os.replace(tmp, path)


def _write_synced(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)  # the data is on the disk before the rename makes it the file
    except OSError as exc:
        exc.filename = exc.filename or str(path)
        raise
    finally:
        os.close(fd)
