"""Atomic file writes: a temporary file in the same directory, fsync, rename.

A crash at any moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from pathlib import Path
from typing import Iterator

from gemma_core.errors import DiskFull


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem allows it
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` durably."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_directory(path.parent)
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        tmp.unlink(missing_ok=True)
        raise DiskFull(f"{path}: disk full while writing it ({_free_mib(path.parent):,.0f} MiB free); "
                        "the previous version is intact: free some space and run again") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _free_mib(directory: Path) -> float:
    try:
        return shutil.disk_usage(directory).free / 2**20
    except OSError:
        return 0.0


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")
