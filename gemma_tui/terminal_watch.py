"""Noticing that the terminal an app draws on has gone, and ending without it.

A terminal can go without a SIGHUP reaching the app (one that was never its controlling
terminal, an ssh session torn down): Textual then reads an endless end of input and would
spin a core, unseen, forever. So the app looks once a second and ends itself instead.

A hang-up also sends SIGCONT, on which Textual's driver starts its terminal afresh, from
within whatever the main thread was doing (a write to its output queue among them, which
then never wakes its writer): on a terminal that has gone, SIGCONT is passed over.

Ending needs care too: Textual's last writes (leaving the alternate screen) go to a
terminal that answers every write with an error, and its writer thread stops on the
first one while the app waits for it. So once the terminal is gone, the descriptors that
pointed at it point at /dev/null: the app ends as it would on a live terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from typing import Callable

CHECK_S = 1.0


def terminal_is_gone(fd: int) -> bool:
    """The terminal on ``fd`` was closed or hung up: a hung-up terminal fails every query
    with EIO, so it no longer answers as a terminal."""
    return not os.isatty(fd)


def forget_terminal() -> None:
    """Point standard input, output and error at /dev/null where they were a terminal that has
    gone (a terminal still there is left alone)."""
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for fd in (0, 1, 2):
            try:
                gone = not os.isatty(fd) and _was_a_terminal(fd)
            except OSError:
                gone = False
            if gone:
                os.dup2(null, fd)
    finally:
        os.close(null)


def _was_a_terminal(fd: int) -> bool:
    """A descriptor whose terminal hung up still names a terminal device (its ``/dev/pts/N``,
    or the hung-up console) though it no longer answers as one."""
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return False
    return target.startswith(("/dev/pts/", "/dev/tty", "/dev/console"))


def end_on_stop_signal_or_lost_terminal(app, end: Callable[[], None]) -> None:
    """Call ``end`` on SIGINT, SIGTERM or SIGHUP (a SIGHUP that ``nohup`` ignores stays
    ignored), or once the terminal ``app`` started on goes without a signal; a terminal that
    has gone is forgotten first. Signals are taken only on the main thread; a page served by
    textual-serve has no terminal here, and none is watched."""

    def ending() -> None:
        forget_terminal()  # after a hang-up, the last writes must not wait on a terminal that is gone
        end()

    if threading.current_thread() is threading.main_thread():
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            if sig == signal.SIGHUP and signal.getsignal(sig) is signal.SIG_IGN:
                continue
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, ending)
    _watch_terminal(app, ending)


def _watch_terminal(app, on_gone: Callable[[], None]) -> None:
    """Call ``on_gone`` once the terminal ``app`` started on (standard input or output) goes."""
    fds = [fd for fd in (0, 1) if os.isatty(fd)]
    if not fds:
        return
    called = False

    def check() -> None:
        nonlocal called
        if not called and any(terminal_is_gone(fd) for fd in fds):
            called = True
            on_gone()

    app.set_interval(CHECK_S, check)
    if threading.current_thread() is threading.main_thread():
        _no_restart_without(fds)


def _no_restart_without(fds: list[int]) -> None:
    """Textual's SIGCONT handler, only while the terminal is there."""
    restart = signal.getsignal(signal.SIGCONT)
    if not callable(restart):
        return

    def on_continue(signum, frame) -> None:
        if not any(terminal_is_gone(fd) for fd in fds):
            restart(signum, frame)

    signal.signal(signal.SIGCONT, on_continue)
