"""``gemma-core summary``: a model's module tree, parameter counts and layer map."""

from __future__ import annotations

from pathlib import Path

from gemma_core.model.presets import preset
from gemma_core.train.config_file import model_config_from_file


def _load_model_config(args) -> tuple[object, str]:
    """The model config named by --preset, --config or --checkpoint (default: the seed's)."""
    from gemma_core.run.model_dir import read_config

    if args.checkpoint:
        cfg, _ = read_config(args.checkpoint)
        return cfg, f"checkpoint {args.checkpoint}"
    if args.config:
        return model_config_from_file(Path(args.config)), f"config {args.config}"
    name = args.preset or "seed-270m"
    return preset(name), f"preset {name}"


def cmd_summary(args) -> int:
    from gemma_core.model.summary import print_summary

    cfg, title = _load_model_config(args)
    print_summary(cfg, title)
    return 0


def add_commands(commands) -> None:
    summary = commands.add_parser(
        "summary", help="print a model's module tree, parameter counts and layer map",
        description="Print the module tree, per-part and total parameter counts, and which "
                    "layers slide (with window and RoPE base). Default: the seed-270m preset.")
    source = summary.add_mutually_exclusive_group()
    source.add_argument("--preset", help="a preset name: seed-270m, gemma-3-270m, demo, nano")
    source.add_argument("--config", help="a model config file (.json or .toml)")
    source.add_argument("--checkpoint", help="a checkpoint directory (reads its config.json)")
    summary.set_defaults(func=cmd_summary)
