"""A JSON-lines log read as it grows: each read parses only the whole lines appended since
the last one, so watching a million-line log costs what its new lines cost.

A line still being written (no newline yet) is left for the next read. A log that was
replaced (``truncate_logs_to`` rewrites it on resume) or cut short is read again from its
start, and the reader says so, so whoever keeps its entries starts over too.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Iterator

from gemma_core.errors import UserError

CHUNK_BYTES = 1 << 22  # what one read holds in memory, whatever the log's size


class LogFollower:
    """Follows one JSON-lines log; see ``read_appended``."""

    def __init__(self, path: Path, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.path = Path(path)
        self.chunk_bytes = chunk_bytes
        self.started_over = False  # the last read began again at the log's first line
        self.damage: list[str] = []  # each damaged line met, said once, as a UserError would say it
        self._identity: tuple[int, int] | None = None  # (device, inode) of the file being followed
        self._offset = 0  # bytes consumed: whole lines only
        self._lines = 0  # lines consumed, for "path:line" in messages

    def read_appended(self, stop: threading.Event | None = None) -> Iterator[tuple[int, dict]]:
        """(line number, entry) for each whole line appended since the last read.

        A damaged line (not a JSON object) is skipped and said in ``damage``; ``stop``
        ends the read early, and the next read carries on where this one stopped.
        """
        try:
            log = open(self.path, "rb")  # noqa: SIM115 - closed in the generator's finally
        except FileNotFoundError:
            self.started_over = self._offset > 0 or self._identity is not None  # removed: nothing is left
            self._forget()
            return iter(())
        except OSError as err:
            raise UserError(f"{self.path}: cannot read ({err.strerror})") from None
        info = os.fstat(log.fileno())
        identity = (info.st_dev, info.st_ino)
        self.started_over = self._identity is not None and (identity != self._identity
                                                             or info.st_size < self._offset)
        if self.started_over:
            self._forget()
        self._identity = identity
        return self._entries(log, info.st_size, stop)

    def _forget(self) -> None:
        self._identity, self._offset, self._lines = None, 0, 0

    def _entries(self, log, size: int, stop: threading.Event | None) -> Iterator[tuple[int, dict]]:
        # Up to the size seen now: lines appended while this read runs are the next read's.
        with log:
            log.seek(self._offset)
            left = size - self._offset
            pending = b""
            while left > 0 and not (stop is not None and stop.is_set()):
                chunk = log.read(min(self.chunk_bytes, left))
                if not chunk:
                    break
                left -= len(chunk)
                *whole, pending = (pending + chunk).split(b"\n")
                for line in whole:
                    self._offset += len(line) + 1
                    self._lines += 1
                    entry = self._parse(line)
                    if entry is not None:
                        yield self._lines, entry

    def _parse(self, line: bytes) -> dict | None:
        if not line.strip():
            return None
        try:
            entry = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError):
            entry = None
        if not isinstance(entry, dict):
            self.damage.append(f"{self.path}:{self._lines}: damaged log line (not a JSON object); delete the "
                               "line or restore the file")
            return None
        return entry
