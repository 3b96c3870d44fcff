"""``gemma-core export-hf`` and ``gemma-core import-hf``: Hugging Face interop commands."""

from __future__ import annotations


def cmd_export_hf(args) -> int:
    from gemma_core.hf.exporter import export_hf

    output = export_hf(args.checkpoint, args.output, overwrite=args.overwrite)
    print(f"wrote {output} (load with transformers.AutoModelForCausalLM.from_pretrained)")
    return 0


def cmd_import_hf(args) -> int:
    from gemma_core.hf.importer import import_hf

    output = import_hf(args.hf_dir, args.output, overwrite=args.overwrite, tokenizer=args.tokenizer)
    print(f"wrote {output} (use with gemma-core generate --checkpoint {output})")
    return 0


def add_commands(commands) -> None:
    """Add ``export-hf`` and ``import-hf`` to an argparse subparsers object."""
    export = commands.add_parser(
        "export-hf", help="write a checkpoint as a Hugging Face Gemma3ForCausalLM directory",
        description="Write config.json, generation_config.json, model.safetensors, tokenizer.json "
                    "and tokenizer_config.json that transformers loads as Gemma3ForCausalLM.")
    export.add_argument("--checkpoint", required=True, help="our checkpoint directory")
    export.add_argument("--output", required=True, help="the Hugging Face directory to write")
    export.add_argument("--overwrite", action="store_true", help="write into a non-empty directory")
    export.set_defaults(func=cmd_export_hf)

    imp = commands.add_parser(
        "import-hf", help="convert a local Hugging Face Gemma 3 text checkpoint into ours",
        description="Read config.json and model.safetensors (or a sharded index) of a "
                    "Gemma3ForCausalLM directory and write one of our checkpoint directories.")
    imp.add_argument("hf_dir", help="a local Hugging Face model directory")
    imp.add_argument("--output", required=True, help="the checkpoint directory to write")
    imp.add_argument("--tokenizer", default=None,
                     help="use this tokenizer (gpt2, shakespeare-4k or a .tiktoken file) instead "
                          "of the directory's tokenizer.json")
    imp.add_argument("--overwrite", action="store_true", help="write into a non-empty directory")
    imp.set_defaults(func=cmd_import_hf)
