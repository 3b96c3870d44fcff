"""The ``gemma-core`` command line: one module per command group, each a thin client of the library.

    summary    cli/summary.py     a model's tree, parameter counts and layer map
    generate   cli/generate.py    a continuation of a prompt, streamed
    train      cli/train.py       training (plus eval, tokenizer train, data wikipedia)
    export-hf  cli/hf.py          Hugging Face interop, both ways
    import-hf
"""

from __future__ import annotations

import argparse
import sys
import traceback

from gemma_core.errors import UserError
from gemma_core.safe_text import printable


def build_parser() -> argparse.ArgumentParser:
    from gemma_core.cli import generate, hf, summary, train

    parser = argparse.ArgumentParser(
        prog="gemma-core",
        description="Pretrain, inspect and sample Gemma 3 language models on one machine.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    summary.add_commands(commands)
    generate.add_commands(commands)
    train.add_commands(commands)
    hf.add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser().parse_args(argv))


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed command: a user's mistake is one line on stderr and exit status 2."""
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        if args.debug:
            traceback.print_exc()
        # Messages quote file names, JSON keys and text from the data: never let them
        # carry escape sequences to the terminal.
        print(f"error: {printable(str(err))}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
