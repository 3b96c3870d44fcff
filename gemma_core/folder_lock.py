"""One writer per folder: an exclusive OS lock on a file inside it.

The lock is the operating system's (``flock`` on Linux and macOS, ``msvcrt``
on Windows), so it disappears with the process that holds it: a run killed
with SIGKILL leaves nothing stale behind, and no PID file is ever trusted. The
lock file also says who holds it (process id, host, start time, command), so a
refused writer can name the holder. Readers never take it.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import socket
import sys
import threading
import time
from pathlib import Path

from gemma_core.errors import Cancelled, UserError

LOCK_FILE = ".lock"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)

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

    def _try_lock_shared(fd: int) -> bool:
        """True when nobody holds the lock (a shared lock, taken and let go at once)."""
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
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

    def _try_lock_shared(fd: int) -> bool:
        return True  # a reader's handle cannot probe msvcrt's lock; the writer's own lock still refuses


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
            # Never through a link: the lock file's description would land in the link's target.
            self._fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o644)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise UserError(f"{self.folder / LOCK_FILE}: is a symbolic link, not this folder's lock "
                                "file; remove it and run again") from None
            raise UserError(f"{self.folder}: not writable ({err.strerror}); choose another folder") from None
        if not stat.S_ISREG(os.fstat(self._fd).st_mode):
            os.close(self._fd)
            self._fd = None
            raise UserError(f"{self.folder / LOCK_FILE}: is not a regular file, so not this folder's lock "
                            "file; remove it and run again")

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


def holder_of(folder: Path) -> str | None:
    """Who holds ``folder``'s lock now (a live run writing there), or None. Takes nothing."""
    path = Path(folder) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode) or _try_lock_shared(fd):
            return None
        try:
            if int(json.loads(os.pread(fd, 4096, 0).decode("utf-8"))["pid"]) == os.getpid():
                return None  # this process's own lock (its engine checks the folder it holds)
        except (OSError, ValueError, KeyError, TypeError):
            pass
        probe = FolderLock(Path(folder))
        probe._fd = fd
        return probe._holder()
    finally:
        os.close(fd)


def refuse_if_live(folder: Path, what: str) -> None:
    """Refuse to write ``what`` into a folder a live run (or cache builder) holds."""
    holder = holder_of(folder)
    if holder is not None:
        raise FolderBusy(f"{folder}: another run is writing here ({holder}); {what} would change its "
                         "files: wait for it to end, stop it first, or choose another place")
