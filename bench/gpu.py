"""GPU benchmark: kernel agreement on CUDA, training tokens/s and MFU, generation vs transformers.

One short script (GPU time is scarce): the seed config at sequence 2048 in
bf16 with each attention kernel, and generation against transformers. Without
CUDA it refuses cleanly.
"""

from __future__ import annotations

import argparse
import sys

import torch

from bench.common import median_time, report
from gemma_core.model.attention import available_kernels
from gemma_core.model.config import FULL, SLIDING, GemmaConfig
from gemma_core.model.model import Gemma3Model
from gemma_core.model.presets import preset
from gemma_core.train.flops import device_peak_flops, training_flops_per_token


def kernel_agreement(device) -> dict:
    """Largest logit difference of each kernel from eager, fp32, past the window; and decode."""
    cfg = GemmaConfig(vocab_size=512, context_length=2048, emb_dim=128, n_heads=4, n_layers=3,
                      hidden_dim=256, head_dim=64, n_kv_groups=1, sliding_window=64,
                      layer_types=[SLIDING, FULL, SLIDING], dtype="float32", query_pre_attn_scalar=64)
    torch.manual_seed(0)
    model = Gemma3Model(cfg).to(device).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
        ids = torch.randint(0, cfg.vocab_size, (2, 640), device=device)
        model.set_attention_kernel("eager")
        reference = model(ids)
        out = {}
        for kernel in available_kernels(device):
            model.set_attention_kernel(kernel)
            out[kernel] = float((model(ids) - reference).abs().max())
        model.set_attention_kernel("sdpa")
        cache = model.new_cache()
        steps = [model(ids[:, :7], cache)] + [model(ids[:, t:t + 1], cache) for t in range(7, 640)]
        out["kv_decode"] = float((torch.cat(steps, 1) - reference).abs().max())
    return out


def training_throughput(device, kernel: str, batch: int, seq: int, compile_model: bool, repeats: int) -> dict:
    cfg = preset("seed-270m")
    torch.manual_seed(0)
    model = Gemma3Model(cfg).to(device)
    model.set_attention_kernel(kernel)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    forward = torch.compile(model.loss) if compile_model else model.loss
    ids = torch.randint(0, cfg.vocab_size, (batch, seq + 1), device=device)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = forward(ids[:, :-1], ids[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    torch.cuda.reset_peak_memory_stats()
    seconds = median_time(step, warmup=3, repeats=repeats, sync=True)
    tokens_per_s = batch * seq / seconds
    peak = device_peak_flops(device)
    flops = training_flops_per_token(cfg, seq)
    return {"kernel": kernel, "compile": compile_model, "batch": batch, "seq": seq,
            "tokens_per_s": round(tokens_per_s), "mfu": round(tokens_per_s * flops / peak, 4) if peak else None,
            "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}


def generation_vs_transformers(device, repeats: int) -> dict:
    from gemma_core.hf.interop import config_to_hf, state_dict_to_hf
    from gemma_core.model.generation import SamplingParams, generate_tokens

    cfg = preset("seed-270m")
    torch.manual_seed(0)
    ours = Gemma3Model(cfg).to(device).eval()
    result = {"new_tokens": 128, "prompt_tokens": 32}
    prompt = torch.randint(0, cfg.vocab_size, (32,)).tolist()
    params = SamplingParams(max_new_tokens=128, temperature=0, stop_at_eos=False)
    ours_tokens = []

    def run_ours():
        ours_tokens[:] = list(generate_tokens(ours, prompt, params, dtype=torch.bfloat16))

    seconds = median_time(run_ours, warmup=1, repeats=repeats, sync=True)
    result["ours_tokens_per_s"] = round(128 / seconds, 1)
    try:
        import transformers
    except ImportError:
        result["reference"] = "transformers not installed"
        return result
    result["transformers"] = transformers.__version__
    fields = {k: v for k, v in config_to_hf(cfg).items() if k not in ("architectures", "model_type")}
    try:
        hf_config = transformers.Gemma3TextConfig(**fields)
    except TypeError as err:
        result["reference"] = f"config not accepted: {err}"
        return result
    reference = transformers.Gemma3ForCausalLM(hf_config).to(device).eval()
    reference.load_state_dict(state_dict_to_hf(ours.state_dict(), cfg), strict=False)
    reference = reference.to(torch.bfloat16)
    ours.to(torch.bfloat16)
    ids = torch.tensor([prompt], device=device)
    hf_tokens = []

    def run_reference():
        with torch.no_grad():
            out = reference.generate(ids, max_new_tokens=128, min_new_tokens=128, do_sample=False,
                                     pad_token_id=0)
        hf_tokens[:] = out[0, 32:].tolist()

    compiled_tokens = []

    def run_compiled():
        compiled_tokens[:] = list(generate_tokens(ours, prompt, params, compiled=True, dtype=torch.bfloat16))

    ref_seconds = median_time(run_reference, warmup=1, repeats=repeats, sync=True)
    seconds = median_time(run_ours, warmup=1, repeats=repeats, sync=True)
    compiled_seconds = median_time(run_compiled, warmup=1, repeats=repeats, sync=True)
    result["ours_bf16_tokens_per_s"] = round(128 / seconds, 1)
    result["ours_bf16_compiled_tokens_per_s"] = round(128 / compiled_seconds, 1)
    result["reference_tokens_per_s"] = round(128 / ref_seconds, 1)
    result["eager_ratio"] = round(ref_seconds / seconds, 2)
    result["ratio"] = round(ref_seconds / compiled_seconds, 2)
    result["same_tokens"] = ours_tokens == hf_tokens
    result["compiled_same_tokens"] = compiled_tokens == ours_tokens
    result["first_difference"] = next((i for i, (a, b) in enumerate(zip(ours_tokens, hf_tokens)) if a != b), None)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench gpu", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and configurations")
    parser.add_argument("--batch", type=int, default=8, help="sequences of 2048 tokens per step")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench gpu: no CUDA device here; this benchmark needs one (nothing was measured)",
              file=sys.stderr)
        return 2
    device = torch.device("cuda")
    repeats = 3 if args.quick else 10
    torch.backends.cuda.matmul.allow_tf32 = False  # exactness first: full fp32 matmuls
    payload = {"kernels": kernel_agreement(device)}
    print("kernel agreement:", payload["kernels"], flush=True)
    torch.backends.cuda.matmul.allow_tf32 = True
    runs = []
    kernels = ["sdpa", "flex"] if "flex" in available_kernels(device) else ["sdpa"]
    for kernel in kernels:
        for compiled in ((True,) if args.quick else (False, True)):
            try:
                runs.append(training_throughput(device, kernel, args.batch, 2048, compiled, repeats))
            except Exception as err:  # report, never fail on one configuration
                runs.append({"kernel": kernel, "compile": compiled, "error": f"{type(err).__name__}: {err}"[:300]})
            print("train:", runs[-1], flush=True)
            torch.cuda.empty_cache()
    payload["training_seed_t2048_bf16"] = runs
    payload["generation_seed"] = generation_vs_transformers(device, repeats)
    print("generate:", payload["generation_seed"], flush=True)
    best = max((r for r in runs if "tokens_per_s" in r), key=lambda r: r["tokens_per_s"], default=None)
    payload["best_mfu"] = best["mfu"] if best else None
    payload["ratio"] = payload["generation_seed"].get("ratio")
    report("gpu", payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
