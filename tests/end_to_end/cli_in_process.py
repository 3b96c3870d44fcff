"""The command line run inside the test's own process, as a subprocess would see it.

Starting ``python -m gemma_core`` costs seconds of imports (torch) before the command even
reads its arguments, so a test of a refusal or a status line runs ``main()`` here instead.
What a subprocess would give it, it gets: arguments in ``sys.argv``, standard input at
/dev/null, standard output and error that are files and not terminals (read back as text), and a
result shaped like ``subprocess.run``'s. What a subprocess would take away with it, is put back:
the streams, ``sys.argv``, the signal handlers ``main()`` installs, the working folder and the
environment. Threads the command starts must have ended, and a command that outlives its
deadline fails the test (an alarm interrupts even a read that waits for ever).

Tests of a real process's own behaviour (signals, exit statuses, a terminal going away, locks
held across processes, a server in another process) stay subprocess tests.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator

from gemma_core import cli as core_cli
from gemma_core.cli import output as core_output

PROGRAMS = {"gemma_core": "gemma-core", "gemma_tui": "gemma-tui"}
DEADLINE_S = 120.0  # a refusal takes well under a second; a busy machine gets a wide margin
THREADS_END_S = 30.0  # how long a command's own threads may take to end once it has returned
TEST_THREAD = "test: "  # the name of a thread a test starts (a fake server's), not a command
RESTORED_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGALRM)


class DeadlinePassed(BaseException):
    """Raised in the command when its deadline passes (not an Exception: nothing catches it
    by accident; the CLI turns it into exit 1, and the caller fails the test)."""


def _main_of(tool: str):
    if tool == "gemma_tui":
        from gemma_tui import cli as tui_cli
        return tui_cli.main
    return core_cli.main


def _text_file() -> io.TextIOWrapper:
    """A real file, as a subprocess's pipe is: it has a descriptor and is not a terminal."""
    return io.TextIOWrapper(tempfile.TemporaryFile(), encoding="utf-8", errors="strict", newline="")


def _read_back(stream: io.TextIOWrapper) -> str:
    stream.flush()
    raw = stream.buffer
    raw.seek(0)
    text = raw.read().decode("utf-8", errors="surrogateescape")
    return text.replace("\r\n", "\n").replace("\r", "\n")  # as subprocess.run(text=True) reads it


class ThreadsOwnStream:
    """One standard stream for several commands running at once on threads of their own: what
    each command's thread writes goes to that command's file (anything else to a file of its own)."""

    def __init__(self, files: dict[int, io.TextIOWrapper], stray: io.TextIOWrapper) -> None:
        self._files, self._stray = files, stray
        self.encoding, self.errors = "utf-8", "strict"

    def _file(self) -> io.TextIOWrapper:
        return self._files.get(threading.get_ident(), self._stray)

    def write(self, text: str) -> int:
        return self._file().write(text)

    def flush(self) -> None:
        self._file().flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._file().fileno()


@contextlib.contextmanager
def _as_a_subprocess(program: str, args: list[str], out=None, err=None) -> Iterator[tuple]:
    saved_streams = (sys.stdin, sys.stdout, sys.stderr, sys.__stdin__, sys.__stdout__, sys.__stderr__)
    saved_argv, saved_cwd, saved_env = sys.argv, os.getcwd(), dict(os.environ)
    saved_signals = {sig: signal.getsignal(sig) for sig in RESTORED_SIGNALS}
    stdin = open(os.devnull, encoding="utf-8")  # noqa: SIM115 (closed below)
    out, err = out or _text_file(), err or _text_file()
    sys.stdin = sys.__stdin__ = stdin
    sys.stdout = sys.__stdout__ = out
    sys.stderr = sys.__stderr__ = err
    sys.argv = [program, *args]
    core_cli._command_done = False
    try:
        yield out, err
    finally:
        (sys.stdin, sys.stdout, sys.stderr, sys.__stdin__, sys.__stdout__, sys.__stderr__) = saved_streams
        sys.argv = saved_argv
        core_cli._command_done = False
        for sig, handler in saved_signals.items():
            if handler is not None:
                signal.signal(sig, handler)
        if os.getcwd() != saved_cwd:
            os.chdir(saved_cwd)
        if dict(os.environ) != saved_env:
            os.environ.clear()
            os.environ.update(saved_env)
        for stream in (stdin, out, err):
            if isinstance(stream, io.IOBase):
                stream.close()


@contextlib.contextmanager
def _deadline(seconds: float, args: list[str]) -> Iterator[list[bool]]:
    """SIGALRM after ``seconds``: its handler raises in the command, wherever it waits."""
    passed = [False]

    def alarm(signum, frame) -> None:
        passed[0] = True
        raise DeadlinePassed(f"still running after {seconds:g} s")

    signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield passed
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    assert not passed[0], f"{args} did not finish within {seconds:g} s"


def _wait_for_threads_to_end(before: set[threading.Thread], args: list) -> None:
    """The command's threads end with it (a test's own, named ``TEST_THREAD...``, may go on)."""
    started = {t for t in set(threading.enumerate()) - before if not t.name.startswith(TEST_THREAD)}
    deadline = time.monotonic() + THREADS_END_S
    for thread in started:
        thread.join(max(0.0, deadline - time.monotonic()))
    left = [t.name for t in started if t.is_alive()]
    assert not left, f"{args} left threads running: {left}"


def run_cli(*args: str, tool: str = "gemma_core", deadline_s: float = DEADLINE_S) -> subprocess.CompletedProcess:
    """``python -m <tool> *args``, run in this process: its exit status, stdout and stderr.

    Must be called from the main thread (the deadline is an alarm signal, and ``main()``
    installs the handlers a command line has)."""
    assert threading.current_thread() is threading.main_thread(), "run_cli runs in the main thread"
    argv = [str(a) for a in args]
    threads = set(threading.enumerate())
    with _as_a_subprocess(PROGRAMS[tool], argv) as (out, err):
        with _deadline(deadline_s, argv):
            try:
                code = _main_of(tool)(argv)
            except SystemExit as done:  # --help, as a subprocess would exit
                code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        stdout, stderr = _read_back(out), _read_back(err)
    _wait_for_threads_to_end(threads, argv)
    return subprocess.CompletedProcess([PROGRAMS[tool], *argv], code, stdout, stderr)


def run_cli_together(*commands: tuple[str, ...], tool: str = "gemma_core",
                     deadline_s: float = DEADLINE_S) -> list[subprocess.CompletedProcess]:
    """Several commands at once in this process, each on a thread of its own (as if each were a
    process: its own stdout and stderr), for commands that each wait out the same silence.

    On a thread other than the main one ``main()`` installs no signal handlers, and no alarm
    can reach the command: a command still running at its deadline fails the test instead."""
    argvs = [[str(a) for a in args] for args in commands]
    threads = set(threading.enumerate())
    outs, errs = [_text_file() for _ in argvs], [_text_file() for _ in argvs]
    stray_out, stray_err = _text_file(), _text_file()
    out_of_thread: dict[int, io.TextIOWrapper] = {}
    err_of_thread: dict[int, io.TextIOWrapper] = {}
    codes: list[int | None] = [None] * len(argvs)
    ready = threading.Barrier(len(argvs))

    def run(index: int) -> None:
        out_of_thread[threading.get_ident()] = outs[index]
        err_of_thread[threading.get_ident()] = errs[index]
        ready.wait()  # every command's streams are routed before any command starts
        try:
            codes[index] = _main_of(tool)(argvs[index])
        except SystemExit as done:
            codes[index] = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)

    stdout = ThreadsOwnStream(out_of_thread, stray_out)
    stderr = ThreadsOwnStream(err_of_thread, stray_err)
    with _as_a_subprocess(PROGRAMS[tool], [], core_output.GuardedOutput(stdout), stderr):
        workers = [threading.Thread(target=run, args=(i,), name=f"command {' '.join(argv)}", daemon=True)
                   for i, argv in enumerate(argvs)]
        started = time.monotonic()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(max(0.0, deadline_s - (time.monotonic() - started)))
        late = [argv for worker, argv in zip(workers, argvs) if worker.is_alive()]
        assert not late, f"{late} did not finish within {deadline_s:g} s"
        results = [subprocess.CompletedProcess([PROGRAMS[tool], *argv], code, _read_back(out), _read_back(err))
                   for argv, code, out, err in zip(argvs, codes, outs, errs)]
        for stream in (*outs, *errs, stray_out, stray_err):
            stream.close()
    _wait_for_threads_to_end(threads, argvs)
    return results
