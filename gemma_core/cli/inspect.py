"""``gemma-core inspect``: one forward pass of a prompt, looked inside (attention, logit lens)."""

from __future__ import annotations

import json
import sys

from gemma_core.errors import UserError
from gemma_core.run.checkpoint_state import read_checkpoint_state
from gemma_core.safe_text import one_line, require_utf8


def cmd_inspect(args) -> int:
    from gemma_core.device import resolve_device
    from gemma_core.inspect import MAX_TOP_K, inspect_prompt
    from gemma_core.run.model_dir import load_model_dir

    if not 1 <= args.top_k <= MAX_TOP_K:
        raise UserError(f"--top_k must be from 1 to {MAX_TOP_K}, got {args.top_k}")
    require_utf8(args.prompt, "--prompt")
    if not args.prompt:
        raise UserError("--prompt is empty; give some text to inspect")
    device = resolve_device(args.device)
    model, tokenizer, _ = load_model_dir(args.checkpoint, device)
    found = inspect_prompt(model, tokenizer, args.prompt, top_k=args.top_k,
                           step=checkpoint_step(args.checkpoint), what="--prompt")
    if args.json:
        json.dump(found.to_json(), sys.stdout, separators=(",", ":"))  # ASCII: valid in any locale
        sys.stdout.write("\n")
    else:
        print_inspection(found, args.checkpoint)
    return 0


def checkpoint_step(folder) -> int:
    """The step of the folder's newest checkpoint; 0 for a folder without a readable one (an
    exported or imported model). A run folder's weights are its best validation's, saved at
    or before that step."""
    from pathlib import Path


    try:
        return read_checkpoint_state(Path(folder))["step"]
    except UserError:
        return 0


def print_inspection(found, checkpoint: str) -> None:
    """Per layer one row, then each prompt token's surprisal, then the next-token candidates."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text


    console = Console(highlight=False)
    console.print(Text(one_line(f"{checkpoint}: step {found.step:,}, {len(found.tokens)} tokens")))
    console.print("\nlayers (entropy: nats per head, mean over positions; lens: the top next token "
                  "from the layer's output)")
    layers = Table(show_edge=False)
    for column in ("layer", "type", "window", "entropy per head", "residual RMS", "lens: next"):
        layers.add_column(column, justify="right" if column in ("layer", "window", "residual RMS") else "left",
                          no_wrap=column != "lens: next")
    for layer in found.layers:
        top = layer.lens[-1][0]
        layers.add_row(str(layer.index), layer.type, "-" if layer.window is None else f"{layer.window:,}",
                       " ".join(f"{e:.2f}" for e in layer.entropy.tolist()), f"{layer.residual_rms:.3f}",
                       Text(f"{shown(top.token)} {top.prob:.3f}"))
    console.print(layers)
    console.print("\nprompt tokens (surprisal: -log2 p(token | the tokens before it))")
    tokens = Table(show_edge=False)
    for column in ("position", "token", "surprisal (bits)"):
        tokens.add_column(column, justify="left" if column == "token" else "right")
    for position, (token, bits) in enumerate(zip(found.tokens, found.surprisal)):
        tokens.add_row(str(position), Text(shown(token)), "-" if bits is None else f"{bits:.2f}")
    console.print(tokens)
    candidates = ", ".join(f"{shown(p.token)} {p.prob:.3f}" for p in found.next)
    console.print(Text(f"\nnext token (top {len(found.next)}): {candidates}"))


def shown(token: str) -> str:
    """A token quoted with its spaces visible and its newlines and controls escaped."""
    return one_line(repr(token))


def add_commands(commands) -> None:
    inspect = commands.add_parser(
        "inspect", help="look inside one forward pass: attention, entropy, logit lens, surprisal",
        description="Run a prompt through a checkpoint once and show, per layer, its type and window, "
                    "each head's attention entropy, the residual stream's RMS and what the logit lens "
                    "predicts next; then each prompt token's surprisal and the next-token candidates. "
                    "--json prints every attention map too (README: 'Look inside').")
    inspect.add_argument("--checkpoint", required=True, help="checkpoint directory (a run folder or a model)")
    inspect.add_argument("--prompt", required=True, help="text to inspect (at most 512 tokens)")
    inspect.add_argument("--top_k", type=int, default=5, help="candidates per position, 1 to 50 (default 5)")
    inspect.add_argument("--json", action="store_true", help="print everything as one JSON object")
    inspect.add_argument("--device", default="cpu", help="cpu (default), auto or cuda")
    inspect.set_defaults(func=cmd_inspect)
