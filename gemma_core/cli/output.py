"""Standard output that fails in one line: a closed or full stdout stops a command with an
error that names it (``OutputLost``), and text the terminal cannot show is escaped."""

from __future__ import annotations

import contextlib
import os
import sys

from gemma_core.errors import UserError


class OutputLost(UserError):
    """Standard output cannot be written (closed, or a full device): what the command
    printed would be lost, so the command stops instead of going on unheard."""


class GuardedOutput:
    """``sys.stdout``, whose write failures become ``OutputLost`` (from any thread; the
    first is kept in ``lost``). After one, the descriptor is pointed at /dev/null so
    that Python's own flush at exit does not fail a second time."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self.lost: OutputLost | None = None

    def _failed(self, err: OSError | None) -> OutputLost:
        why = "it is closed" if err is None else (err.strerror or type(err).__name__)
        lost = OutputLost(f"cannot write to standard output ({why}); point it at a file or "
                          "terminal that takes output")
        if self.lost is None:
            self.lost = lost
            try:
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, 1)
                os.close(null)
            except OSError:
                pass
        return lost

    def write(self, text: str) -> int:
        if self._stream is None:
            raise self._failed(None)
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise
        except OSError as err:
            raise self._failed(err) from None

    def flush(self) -> None:
        if self._stream is None:
            return
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as err:
            raise self._failed(err) from None

    def isatty(self) -> bool:
        return self._stream is not None and self._stream.isatty()

    def __getattr__(self, name: str):
        if self._stream is None:
            raise self._failed(None)
        return getattr(self._stream, name)


def safe_output_streams() -> None:
    """Standard streams that never crash a command: text the terminal's encoding cannot
    show (a model's output, a file name) is escaped (an ASCII-only locale still gets every
    line); a closed stdin reads as empty; a closed or full stdout is an error that names it."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):
                pass
    for fd, name, mode in ((0, "stdin", os.O_RDONLY), (1, "stdout", os.O_WRONLY)):
        if getattr(sys, name) is None:  # closed when started: keep the descriptor from being reused
            with contextlib.suppress(OSError):
                null = os.open(os.devnull, mode)
                if null != fd:
                    os.dup2(null, fd)
                    os.close(null)
    if sys.stdin is None:
        sys.stdin = sys.__stdin__ = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
    if not isinstance(sys.stdout, GuardedOutput):
        sys.stdout = GuardedOutput(sys.stdout)


def output_lost() -> OutputLost | None:
    """The failure to write standard output, if one happened (in any thread)."""
    return sys.stdout.lost if isinstance(sys.stdout, GuardedOutput) else None
