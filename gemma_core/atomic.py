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

from safetensors import SafetensorError

from gemma_core.errors import DiskFull, UserError
from gemma_core.folder_lock import refuse_if_live


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
    except (OSError, SafetensorError) as err:
        with contextlib.suppress(OSError):
            tmp.unlink()  # first, so the space it took counts as free in the message
        if is_disk_full(err):
            raise DiskFull(f"{path}: disk full while writing it ({free_mib(path.parent):,.0f} MiB free); "
                           "the previous version is intact: free some space") from None
        if isinstance(err, OSError) and err.errno is not None:  # read-only, no permission, not a folder...
            raise UserError(f"{path}: cannot write it ({err.strerror}); the previous version is intact: "
                            "make the folder writable (or choose another)") from None
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def is_disk_full(err: BaseException) -> bool:
    """ENOSPC (or a quota), whether raised by Python or by the safetensors library, which
    reports it as its own error type with the OS error in the text."""
    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, errno.EDQUOT)
    text = str(err)
    return any(sign in text for sign in ("No space left on device", "os error 28", "code: 28", "StorageFull"))


def remove_leftovers(directory: Path) -> list[Path]:
    """Delete temporary files an interrupted write left in ``directory`` (``.NAME.tmp-PID``).

    Call it only while holding the folder's lock: then no other process can be
    writing there, and every such file is a leftover.
    """
    removed = []
    for path in directory.glob(".*.tmp-*"):
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path)
    return removed


def free_mib(directory: Path) -> float:
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


def check_output_file(path: Path, overwrite: bool, flag: str = "--output") -> Path:
    """The file a command is about to write, checked before any work: its folder exists,
    it is a regular file (never a device, pipe or folder, whatever --overwrite says) and
    no live run writes beside it. A link is followed: the file it names is written."""
    path = Path(path)
    if path.is_symlink():
        path = path.resolve()
    parent = path.parent
    if not parent.is_dir():
        raise UserError(f"{flag} {path}: the folder {parent} does not exist; create it first")
    if path.exists():
        if path.is_dir():
            raise UserError(f"{flag} {path}: is a folder; give a file path")
        if not path.is_file():
            raise UserError(f"{flag} {path}: is not a regular file (a device or pipe); give a file path")
        if not overwrite:
            raise UserError(f"{flag} {path}: exists; pass --overwrite to replace it")
    refuse_if_live(parent, f"writing {path.name} there")
    return path
