"""``gemma-core export-hf``, ``import-hf`` and ``export-gguf``: Hugging Face and llama.cpp interop."""

from __future__ import annotations

import argparse


def cmd_export_hf(args) -> int:
    from gemma_core.hf.exporter import export_hf

    output = export_hf(args.checkpoint, args.output, overwrite=args.overwrite)
    print(f"wrote {output} (load with transformers.AutoModelForCausalLM.from_pretrained)")
    return 0


def cmd_export_gguf(args) -> int:
    from gemma_core.hf.gguf_export import export_gguf

    output = export_gguf(args.checkpoint, args.output, tensor_type=args.type, overwrite=args.overwrite)
    print(f"wrote {output} (run with: llama-completion -m {output} -no-cnv -p 'Once upon a time' "
          "-n 64 --temp 0; README: Ollama, LM Studio)")
    return 0


def cmd_import_hf(args) -> int:
    from gemma_core.hf.importer import import_hf

    output = import_hf(args.hf_dir, args.output, overwrite=args.overwrite, tokenizer=args.tokenizer)
    print(f"wrote {output} (use with gemma-core generate --checkpoint {output})")
    return 0


def add_commands(commands) -> None:
    """Add ``export-hf``, ``import-hf`` and ``export-gguf`` to an argparse subparsers object."""
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

    add_export_gguf(commands)


def add_export_gguf(commands) -> None:
    from gemma_core.hf.gguf_export import TENSOR_TYPES

    gguf = commands.add_parser(
        "export-gguf", help="write a checkpoint as one GGUF file for llama.cpp, Ollama and LM Studio",
        description="Write the model and its tokenizer as one GGUF file (llama.cpp's gemma3 "
                    "architecture). Needs the gguf package: pip install 'gemma-studio[gguf]'.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="--type:\n" + "\n".join(f"  {name:5} {what}" for name, what in TENSOR_TYPES.items()))
    gguf.add_argument("--checkpoint", required=True, help="our checkpoint directory")
    gguf.add_argument("--output", required=True, help="the .gguf file to write")
    gguf.add_argument("--type", default="f32", choices=list(TENSOR_TYPES),
                      help="how tensors are stored (default f32; see below)")
    gguf.add_argument("--overwrite", action="store_true", help="replace an existing file")
    gguf.set_defaults(func=cmd_export_gguf)
