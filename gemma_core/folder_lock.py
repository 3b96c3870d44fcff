"""One writer per folder: an exclusive OS lock on a file inside it.

The lock is the operating system's (``flock`` on Linux and macOS, ``msvcrt``
on Windows), so it disappears with the process that holds it: a run killed
with SIGKILL leaves nothing stale behind, and no PID file is ever trusted. The
lock file also says who holds it (process id, host, start time, command), so a
refused writer can name the holder. Readers never take it.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

from gemma_core.errors import Cancelled, UserError

LOCK_FILE = ".lock"

try:  # POSIX
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
except ImportError:  # pragma: no cover - Windows
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


class FolderBusy(UserError):
    """Another process holds the folder's lock."""


class FolderLock:
    """An exclusive lock on ``folder`` (created if missing), held until ``release``."""

    def __init__(self, folder: Path, what: str = "run") -> None:
        self.folder = Path(folder)
        self.what = what  # for messages: "run", "token cache"
        self.created_folder = False  # this lock made the folder (so may remove it, if left empty)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, wait: bool = False, cancel: threading.Event | None = None) -> None:
        """Take the lock. Without ``wait`` a held lock is refused at once, naming its holder;
        with it, wait (stopping with ``Cancelled`` when ``cancel`` is set)."""
        self._open()
        while not _try_lock(self._fd):
            if not wait:
                holder = self._holder()
                os.close(self._fd)
                self._fd = None
                raise FolderBusy(f"{self.folder}: another {self.what} is writing here ({holder}); wait "
                                 "for it to end, or stop it first")
            if cancel is not None and cancel.is_set():
                os.close(self._fd)
                self._fd = None
                raise Cancelled(f"stopped while waiting for {self.folder}")
            time.sleep(0.1)
        self._describe_holder()

    def release(self, remove_if_unused: bool = False) -> None:
        """Let go. ``remove_if_unused``: a folder this lock created and nothing else wrote to
        (a run that failed before it began) is removed again."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        if remove_if_unused and self.created_folder:
            try:  # before unlocking: nobody else can be using the file now
                if [p.name for p in self.folder.iterdir()] == [LOCK_FILE]:
                    (self.folder / LOCK_FILE).unlink()
                    self.folder.rmdir()
            except OSError:
                pass
        _unlock(fd)
        os.close(fd)

    # ---------------------------------------------------------------- helpers
    def _open(self) -> None:
        existing = self.folder
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if existing != self.folder and not existing.is_dir():
            raise UserError(f"{self.folder}: cannot be created: {existing} is a file; choose another folder")
        if self.folder.exists() and not self.folder.is_dir():
            raise UserError(f"{self.folder}: is a file, not a folder; choose another folder")
        try:
            self.created_folder = not self.folder.exists()
            self.folder.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise UserError(f"{self.folder}: not writable ({err.strerror}); choose another folder") from None

    def _describe_holder(self) -> None:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                "command": " ".join(sys.argv)[:500]}
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, json.dumps(info).encode("utf-8"), 0)
        except OSError:
            pass  # a full disk: the lock still holds, only its description is missing

    def _holder(self) -> str:
        try:
            info = json.loads(os.pread(self._fd, 4096, 0).decode("utf-8"))
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["started"])))
            return f"process {int(info['pid'])} on {info.get('host', '?')}, started {started}"
        except (OSError, ValueError, KeyError, TypeError):
            return "a process that is still starting"
