"""The ``gemma-core`` command line: one module per command group, each a thin client of the library.

    summary    cli/summary.py     a model's tree, parameter counts and layer map
    generate   cli/generate.py    a continuation of a prompt, streamed
    train      cli/train.py       training (plus eval, tokenizer train, data wikipedia)
    status     cli/runs.py        runs as services: how a run stands, commands to it,
    control                       the OpenAI API for a checkpoint
    serve
    export-hf  cli/hf.py          Hugging Face interop, both ways
    import-hf
"""

from __future__ import annotations

import argparse
import sys
import traceback

from gemma_core.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, OneLineError, internal_message
from gemma_core.safe_text import printable


def build_parser() -> argparse.ArgumentParser:
    from gemma_core.cli import generate, hf, runs, summary, train

    parser = argparse.ArgumentParser(
        prog="gemma-core",
        description="Pretrain, inspect and sample Gemma 3 language models on one machine.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    summary.add_commands(commands)
    generate.add_commands(commands)
    train.add_commands(commands)
    runs.add_commands(commands)
    hf.add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    safe_output_streams()
    return run_command(build_parser().parse_args(argv))


def safe_output_streams() -> None:
    """Text that the terminal's encoding cannot show (a model's output, a file name) is
    escaped, never a crash: an ASCII-only locale still gets every line."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):
                pass


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed command; every failure is one line on stderr and a non-zero exit status.

    2: the user's input or environment; 1: an internal error (a bug); 130: interrupted.
    """
    try:
        return int(args.func(args) or EXIT_OK)
    except OneLineError as err:
        if args.debug:
            traceback.print_exc()
        # Messages quote file names, JSON keys and text from the data: never let them
        # carry escape sequences to the terminal.
        report(str(err))
        return err.exit_code
    except KeyboardInterrupt:
        report("interrupted", prefix="")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (`gemma-core generate ... | head`)
        return EXIT_OK
    except SystemExit:
        raise
    except BaseException as err:  # a bug, including a panic in a Rust extension
        if args.debug:
            traceback.print_exc()
        report(internal_message(err))
        return EXIT_INTERNAL


def report(line: str, prefix: str = "error: ") -> None:
    try:
        print(prefix + printable(line), file=sys.stderr)
    except (OSError, ValueError):
        pass  # stderr closed: the exit status still tells


if __name__ == "__main__":
    sys.exit(main())
