"""The ``gemma-core`` command line: one module per command group, each a thin client of the library.

    summary    cli/summary.py     a model's tree, parameter counts and layer map
    generate   cli/generate.py    a continuation of a prompt, streamed
    inspect    cli/inspect.py     one forward pass looked inside: attention maps, the logit lens
    train      cli/train.py       training (plus eval, tokenizer train, data wikipedia)
    status     cli/runs.py        runs as services: how a run stands, commands to it,
    control                       the OpenAI API for a checkpoint
    serve
    export-hf  cli/hf.py          Hugging Face interop, both ways; a GGUF file for llama.cpp
    import-hf
    export-gguf

A command module imports a library module that loads torch (or aiohttp, safetensors...)
inside the command that uses it, not at its top: the parser is built for every command,
and a command that needs none of it should not wait for it (tests/core/test_layers.py
allows a function-level import for that reason only). ``output`` is standard output that
fails in one line.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import traceback
from typing import Callable

from gemma_core.cli import generate, hf, inspect, runs, summary, train
from gemma_core.cli.output import safe_output_streams
from gemma_core.errors import (EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, OneLineError, UserError,
                               internal_message)
from gemma_core.safe_text import one_line


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="gemma-core",
        description="Pretrain, inspect and sample Gemma 3 language models on one machine.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                     parser_class=OneLineParser)
    summary.add_commands(commands)
    generate.add_commands(commands)
    inspect.add_commands(commands)
    train.add_commands(commands)
    runs.add_commands(commands)
    hf.add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    safe_output_streams()
    stop_signals_interrupt()
    return run_command(lambda: build_parser().parse_args(debug_first(argv)))


def debug_first(argv: list[str] | None) -> list[str]:
    """``--debug`` is taken anywhere on the line, not only before the command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return ["--debug", *(a for a in argv if a != "--debug")] if "--debug" in argv else argv


class OneLineParser(argparse.ArgumentParser):
    """argparse, with its usage errors told in one line (naming the command, and where
    to find its flags) instead of a usage block and a second line."""

    def error(self, message: str):
        raise UserError(f"{self.prog}: {message} (see {self.prog} --help)")


_command_done = False  # set once the command has returned: the process is only exiting


def _interrupt(signum, frame) -> None:
    if _command_done:  # no command left to stop: a traceback from an exit hook helps nobody
        os._exit(EXIT_INTERRUPTED)
    raise KeyboardInterrupt


def stop_signals_interrupt() -> None:
    """SIGTERM and SIGHUP (a closed terminal) stop a command as Ctrl-C does: exit 130, and
    training saves a checkpoint first. A SIGHUP that ``nohup`` ignores stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGTERM, _interrupt)
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        signal.signal(signal.SIGHUP, _interrupt)


def run_command(parse: Callable[[], argparse.Namespace]) -> int:
    """Parse the command line and run the command; every failure is one line on stderr
    and a non-zero exit status: 2 the user's input or environment, 1 an internal error
    (a bug), 130 interrupted.
    """
    global _command_done
    debug = "--debug" in sys.argv
    try:
        return _run(parse, debug)
    finally:
        _command_done = True


def _run(parse: Callable[[], argparse.Namespace], debug: bool) -> int:
    try:
        args = parse()
        debug = debug or getattr(args, "debug", False)
        status = int(args.func(args) or EXIT_OK)
        sys.stdout.flush()  # a full device is found now, not by Python's exit
        return status
    except SystemExit:  # --help: printed in full, or an error if it could not be
        try:
            sys.stdout.flush()
        except OneLineError as lost:
            report(str(lost))
            return lost.exit_code
        raise
    except OneLineError as err:
        if debug:
            traceback.print_exc()
        report(str(err))
        return err.exit_code
    except KeyboardInterrupt:
        report("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (`gemma-core generate ... | head`)
        with contextlib.suppress(OSError):
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
        return EXIT_OK
    except BaseException as err:  # a bug, including a panic in a Rust extension
        if debug:
            traceback.print_exc()
        report(internal_message(err))
        return EXIT_INTERNAL


def report(line: str) -> None:
    """One line on stderr. Messages quote file names, JSON keys and text from the data:
    their control characters (newlines too) are shown escaped, never acted on."""
    try:
        print("error: " + one_line(line), file=sys.stderr)
    except (OSError, ValueError):
        pass  # stderr closed: the exit status still tells


if __name__ == "__main__":
    sys.exit(main())
