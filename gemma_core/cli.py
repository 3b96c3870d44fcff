"""The ``gemma-core`` command line."""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from gemma_core.errors import UserError
from gemma_core.safe_text import printable


def _load_model_config(args) -> tuple[object, str]:
    """The model config named by --preset, --config or --checkpoint (default: the seed's)."""
    from gemma_core.checkpoint import read_config
    from gemma_core.config import preset
    from gemma_core.settings import model_config_from_file

    if args.checkpoint:
        cfg, _ = read_config(args.checkpoint)
        return cfg, f"checkpoint {args.checkpoint}"
    if args.config:
        return model_config_from_file(Path(args.config)), f"config {args.config}"
    name = args.preset or "seed-270m"
    return preset(name), f"preset {name}"


def cmd_summary(args) -> int:
    from gemma_core.summary import print_summary

    cfg, title = _load_model_config(args)
    print_summary(cfg, title)
    return 0


def cmd_generate(args) -> int:
    from gemma_core.checkpoint import load_model_dir
    from gemma_core.device import resolve_device
    from gemma_core.generation import SamplingParams, stream_text
    from gemma_core.safe_text import printable

    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                            top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                            stop_strings=tuple(args.stop or ()))
    params.validate()
    device = resolve_device(args.device)
    model, tokenizer, _ = load_model_dir(args.checkpoint, device)
    if args.attention:
        model.set_attention_kernel(args.attention)
    out = sys.stdout
    out.write(printable(args.prompt))
    out.flush()
    for piece in stream_text(model, tokenizer, args.prompt, params, compiled=args.compile):
        out.write(printable(piece))
        out.flush()
    out.write("\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gemma-core",
        description="Pretrain, inspect and sample Gemma 3 language models on one machine.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    summary = commands.add_parser(
        "summary", help="print a model's module tree, parameter counts and layer map",
        description="Print the module tree, per-part and total parameter counts, and which "
                    "layers slide (with window and RoPE base). Default: the seed-270m preset.")
    source = summary.add_mutually_exclusive_group()
    source.add_argument("--preset", help="a preset name: seed-270m, gemma-3-270m, demo, nano")
    source.add_argument("--config", help="a model config file (.json or .toml)")
    source.add_argument("--checkpoint", help="a checkpoint directory (reads its config.json)")
    summary.set_defaults(func=cmd_summary)

    generate = commands.add_parser(
        "generate", help="stream a continuation of a prompt from a checkpoint",
        description="Prefill the prompt, then decode with a KV cache, streaming text to stdout.")
    generate.add_argument("--checkpoint", required=True, help="checkpoint directory")
    generate.add_argument("--prompt", required=True, help="text to continue")
    generate.add_argument("--max_new_tokens", type=int, default=128)
    generate.add_argument("--temperature", type=float, default=0.8, help="0 means greedy")
    generate.add_argument("--top_k", type=int, default=None)
    generate.add_argument("--top_p", type=float, default=None)
    generate.add_argument("--seed", type=int, default=None, help="seed for sampling")
    generate.add_argument("--stop", action="append", metavar="TEXT",
                          help="stop when this text appears (repeatable)")
    generate.add_argument("--device", default="auto", help="auto, cpu or cuda")
    generate.add_argument("--attention", default=None, help="attention kernel: auto, eager, sdpa, flex")
    generate.add_argument("--compile", action="store_true",
                          help="decode with a torch.compile'd step: about twice the tokens/s on a CPU "
                               "after a one-off compile of 10-50 s, so worth it for long outputs")
    generate.set_defaults(func=cmd_generate)

    from gemma_core import hf_cli, train_cli
    train_cli.add_commands(commands)
    hf_cli.add_commands(commands)
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
