"""``gemma-core summary``: the module tree, parameter counts and the layer map."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from gemma_core.model.config import SLIDING, GemmaConfig
from gemma_core.model.model import Gemma3Model


def parameter_breakdown(model: Gemma3Model) -> list[tuple[str, int]]:
    """(part, parameters) rows; the head shows 0 when tied to the embedding."""
    cfg = model.cfg
    embedding = model.embed_tokens.weight.numel()
    head = 0 if cfg.tie_embeddings else model.lm_head.weight.numel()
    layer = sum(p.numel() for p in model.layers[0].parameters())
    attn = model.layers[0].attn
    rows = [
        ("token embedding", embedding),
        ("LM head" + (" (tied to the embedding)" if cfg.tie_embeddings else ""), head),
        (f"decoder layers ({cfg.n_layers} x {layer:,})", layer * cfg.n_layers),
        ("  per layer: q / k / v / o projections",
         sum(m.weight.numel() for m in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj))),
        ("  per layer: MLP (gate, up, down)", sum(p.numel() for p in model.layers[0].mlp.parameters())),
        ("  per layer: norms (4 sandwich + q/k)",
         layer - sum(p.numel() for p in attn.parameters() if p.dim() == 2)
         - sum(p.numel() for p in model.layers[0].mlp.parameters())),
        ("final norm", model.final_norm.weight.numel()),
    ]
    return rows


def print_summary(cfg: GemmaConfig, title: str, console: Console | None = None) -> int:
    """Print the summary; return the unique parameter count. Builds on the meta device."""
    import torch

    console = console or Console(highlight=False)
    with torch.device("meta"):
        model = Gemma3Model(cfg)
    console.print(f"[bold]{title}[/bold]\n")
    console.print(str(model), markup=False)
    console.print()

    counts = Table(title="Parameters", show_edge=False)
    counts.add_column("part")
    counts.add_column("parameters", justify="right")
    for part, n in parameter_breakdown(model):
        counts.add_row(part, f"{n:,}")
    total = model.num_parameters()
    counts.add_row("[bold]total (unique)[/bold]", f"[bold]{total:,}[/bold]")
    console.print(counts)
    console.print()

    layers = Table(title="Attention layers", show_edge=False)
    for column in ("layer", "type", "window", "RoPE base"):
        layers.add_column(column, justify="right" if column != "type" else "left")
    for i, kind in enumerate(cfg.layer_types):
        sliding = kind == SLIDING
        layers.add_row(str(i), "sliding" if sliding else "full",
                       f"{cfg.sliding_window:,}" if sliding else "-",
                       f"{cfg.rope_base_for(kind):,.0f}")
    console.print(layers)
    n_full = sum(1 for kind in cfg.layer_types if kind != SLIDING)
    console.print(
        f"\n{cfg.n_layers - n_full} sliding + {n_full} full layers; {cfg.n_heads} query heads, "
        f"{cfg.n_kv_heads} key/value head(s), head_dim {cfg.head_dim}; vocab {cfg.vocab_size:,}; "
        f"context {cfg.context_length:,}; head {'tied' if cfg.tie_embeddings else 'untied'}.")
    return total
