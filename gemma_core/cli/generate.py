"""``gemma-core generate``: stream a continuation of a prompt from a checkpoint."""

from __future__ import annotations

import dataclasses
import sys

from gemma_core.safe_text import printable, require_utf8


def cmd_generate(args) -> int:
    from gemma_core.device import resolve_device, resolve_dtype
    from gemma_core.model.generation import SamplingParams, fit_to_context, stream_text
    from gemma_core.run.model_dir import load_model_dir

    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                            top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                            stop_strings=tuple(args.stop or ()))
    params.validate()
    require_utf8(args.prompt, "--prompt")
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    model, tokenizer, _ = load_model_dir(args.checkpoint, device)
    prompt_tokens = len(tokenizer.encode_document(args.prompt))
    fits = fit_to_context(prompt_tokens, params.max_new_tokens, model.cfg.context_length)
    if fits < params.max_new_tokens:
        print(f"note: the prompt takes {prompt_tokens:,} of the model's {model.cfg.context_length:,} context "
              f"tokens: generating at most {fits:,} tokens, not {params.max_new_tokens:,}", file=sys.stderr)
        params = dataclasses.replace(params, max_new_tokens=fits)
    if args.attention:
        model.set_attention_kernel(args.attention)
    out = sys.stdout
    out.write(printable(args.prompt))
    out.flush()
    for piece in stream_text(model, tokenizer, args.prompt, params, compiled=args.compile, dtype=dtype):
        out.write(printable(piece))
        out.flush()
    out.write("\n")
    return 0


def add_commands(commands) -> None:
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
    generate.add_argument("--dtype", default="auto",
                          help="auto, bf16 or fp32: the precision to compute in (auto: as training "
                               "would here, bf16 where the hardware has it)")
    generate.add_argument("--attention", default=None, help="attention kernel: auto, eager, sdpa, flex")
    generate.add_argument("--compile", action="store_true",
                          help="decode with a torch.compile'd step: about twice the tokens/s on a CPU "
                               "after a one-off compile of 10-50 s, so worth it for long outputs")
    generate.set_defaults(func=cmd_generate)
