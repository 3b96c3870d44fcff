"""GPU benchmark: kernel agreement on CUDA, training tokens/s and MFU, generation vs transformers.

One short script (GPU time is scarce): the seed config at sequence 2048 in
bf16 with each attention kernel and with the plain and the chunked loss; a
profile of one compiled training step (the kernels taking the most time); generation
against transformers; the Machine pane's NVML readings against nvidia-smi; and
(``--seed-run STEPS``) the seed's default run end to end, and (``--seed-optimizers
STEPS``) the seed at sequence 512 trained with AdamW and with Muon. Without CUDA it refuses
cleanly. The parts that do not need CUDA (the profile table, reading nvidia-smi)
are tested on the CPU.
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


def training_step(device, cfg: GemmaConfig, kernel: str, batch: int, seq: int, compile_model: bool,
                  chunk_tokens: int | None = None):
    """One optimizer step of the training recipe on random tokens, as a function to time."""
    torch.manual_seed(0)
    model = Gemma3Model(cfg).to(device)
    model.set_attention_kernel(kernel)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def loss_of(ids, targets):
        return model.loss(ids, targets, chunk_tokens=chunk_tokens)

    forward = torch.compile(loss_of) if compile_model else loss_of
    ids = torch.randint(0, cfg.vocab_size, (batch, seq + 1), device=device)
    autocast_dtype = torch.bfloat16

    def step():
        with torch.autocast(device.type, dtype=autocast_dtype):
            loss = forward(ids[:, :-1], ids[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def training_throughput(device, kernel: str, batch: int, seq: int, compile_model: bool, repeats: int,
                        chunk_tokens: int | None = None) -> dict:
    cfg = preset("seed-270m")
    step = training_step(device, cfg, kernel, batch, seq, compile_model, chunk_tokens)
    torch.cuda.reset_peak_memory_stats()
    seconds = median_time(step, warmup=3, repeats=repeats, sync=True)
    tokens_per_s = batch * seq / seconds
    peak = device_peak_flops(device)
    flops = training_flops_per_token(cfg, seq)
    return {"kernel": kernel, "compile": compile_model, "batch": batch, "seq": seq,
            "loss": f"chunked {chunk_tokens}" if chunk_tokens else "plain",
            "tokens_per_s": round(tokens_per_s), "mfu": round(tokens_per_s * flops / peak, 4) if peak else None,
            "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}


def profile_table(step, device, steps: int = 3, top: int = 15) -> list[dict]:
    """The operations taking the most device time (self time) over ``steps`` calls of
    ``step`` after one warm-up, with their share: where a training step's time goes."""
    from torch.profiler import ProfilerActivity, profile

    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, key, 0) > 0]
    total = sum(getattr(e, key) for e in events) or 1.0
    events.sort(key=lambda e: getattr(e, key), reverse=True)
    return [{"name": e.key[:90], "share": round(getattr(e, key) / total, 4),
             "ms_per_step": round(getattr(e, key) / 1000 / steps, 3), "calls_per_step": e.count // steps}
            for e in events[:top]]


NVIDIA_SMI_QUERY = ("nvidia-smi", "--query-gpu=index,memory.used,memory.total,utilization.gpu,temperature.gpu,power.draw",
                    "--format=csv,noheader,nounits")


def read_nvidia_smi(text: str, index: int = 0) -> dict:
    """One GPU's line of ``NVIDIA_SMI_QUERY``'s output, in bytes, %, °C and W."""
    for line in text.strip().splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) == 6 and fields[0] == str(index):
            number = lambda f: float(f) if f not in ("[N/A]", "N/A", "") else None  # noqa: E731
            used, total = number(fields[1]), number(fields[2])
            return {"memory_used": used * 2**20 if used is not None else None,
                    "memory_total": total * 2**20 if total is not None else None,
                    "utilization": number(fields[3]), "temperature_c": number(fields[4]),
                    "power_w": number(fields[5])}
    raise ValueError(f"no line for GPU {index} in nvidia-smi's output: {text[:200]!r}")


def nvml_cross_check(device) -> dict:
    """The Machine pane's readings (gemma_core.telemetry) beside nvidia-smi's, taken together
    while this process holds memory on the GPU: they should agree within a sample's drift."""
    import subprocess

    from gemma_core.telemetry import TelemetrySampler

    held = torch.empty(2 * 2**30, dtype=torch.uint8, device=device)  # something to see
    sampler = TelemetrySampler()
    sampler.sample()
    ours = sampler.sample()
    smi = read_nvidia_smi(subprocess.run(NVIDIA_SMI_QUERY, capture_output=True, text=True, check=True).stdout,
                          torch.cuda.current_device())
    gpu = ours.gpu
    del held
    if gpu is None:
        return {"error": ours.gpu_unavailable}
    mib = 2**20
    return {"ours": {"memory_used_mib": round(gpu.memory_used / mib), "memory_total_mib": round(gpu.memory_total / mib),
                     "utilization": gpu.utilization, "temperature_c": gpu.temperature_c, "power_w": gpu.power_w,
                     "process_memory_mib": round(gpu.process_memory / mib) if gpu.process_memory else None,
                     "torch_allocated_mib": round(ours.torch_memory.allocated / mib) if ours.torch_memory else None},
            "nvidia_smi": {"memory_used_mib": round(smi["memory_used"] / mib), "memory_total_mib":
                           round(smi["memory_total"] / mib), "utilization": smi["utilization"],
                           "temperature_c": smi["temperature_c"], "power_w": smi["power_w"]},
            "memory_total_agrees": abs(gpu.memory_total - smi["memory_total"]) <= 2 * mib,
            "memory_used_within_256_mib": abs(gpu.memory_used - smi["memory_used"]) <= 256 * mib}


def seed_run(steps: int) -> dict:
    """``gemma-core train --preset seed-270m`` on this GPU for ``steps`` steps (the bundled
    corpus, tokenised with gpt2): the seed's default run end to end, its outputs and speed."""
    import json
    import subprocess
    import tempfile
    import time
    from pathlib import Path

    folder = Path(tempfile.mkdtemp(prefix="seed-run-"))
    command = [sys.executable, "-m", "gemma_core", "train", "--preset", "seed-270m", "--output_dir", str(folder),
               "--max_steps", str(steps), "--eval_iters", str(max(1, steps // 2)), "--device", "cuda", "--no-serve"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    result = {"command": " ".join(command[1:]), "exit": done.returncode, "seconds": round(time.perf_counter() - started, 1)}
    if done.returncode != 0:
        result["error"] = done.stderr.strip().splitlines()[-1:] if done.stderr.strip() else []
        return result
    outputs = ("config.json", "model.safetensors", "training_log.json", "validation_log.json", "vocab.json",
               "loss_function.png")
    result["outputs_present"] = {name: (folder / name).exists() for name in outputs}
    entries = [json.loads(line) for line in (folder / "training_log.jsonl").read_text().splitlines() if line.strip()]
    last = entries[-1] if entries else {}
    result.update({key: last.get(key) for key in ("step", "train_loss", "tokens_per_s", "mfu")})
    return result


def seed_optimizer_comparison(steps: int, max_length: int = 512) -> dict:
    """The seed preset trained for ``steps`` steps at ``max_length`` on the bundled corpus (gpt2
    tokens) with AdamW alone and with Muon for its decoder's matrices: validation bits per byte
    at every evaluation, and the speed, of each."""
    import json
    import subprocess
    import tempfile
    from pathlib import Path

    out = {}
    for optimizer in ("adamw", "muon"):
        folder = Path(tempfile.mkdtemp(prefix=f"seed-{optimizer}-"))
        command = [sys.executable, "-m", "gemma_core", "train", "--preset", "seed-270m", "--output_dir",
                   str(folder), "--max_steps", str(steps), "--max_length", str(max_length), "--stride",
                   str(max_length), "--eval_iters", str(max(1, steps // 6)), "--warmup_steps",
                   str(max(1, steps // 10)), "--optimizer", optimizer, "--device", "cuda", "--no-serve"]
        done = subprocess.run(command, capture_output=True, text=True)
        result = {"command": " ".join(command[3:]), "exit": done.returncode}
        if done.returncode == 0:
            val = [json.loads(line) for line in (folder / "validation_log.jsonl").read_text().splitlines() if line]
            train = [json.loads(line) for line in (folder / "training_log.jsonl").read_text().splitlines() if line]
            result["bits_per_byte"] = {e["step"]: round(e["bits_per_byte"], 4) for e in val}
            result["seconds"] = round(train[-1]["elapsed_s"], 1)
            result["tokens_per_s"] = round(sorted(e["tokens_per_s"] for e in train)[len(train) // 2])
        else:
            result["error"] = done.stderr.strip().splitlines()[-1:]
        out[optimizer] = result
        print(f"seed {optimizer}:", result, flush=True)
    return out


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
    parser.add_argument("--chunked-batch", type=int, default=16,
                        help="the batch for the plain-against-chunked loss comparison (compiled, best kernel)")
    parser.add_argument("--seed-run", type=int, default=0, metavar="STEPS",
                        help="also train the seed preset end to end for STEPS steps (gemma-core train)")
    parser.add_argument("--seed-optimizers", type=int, default=0, metavar="STEPS",
                        help="also train the seed preset at sequence 512 for STEPS steps with AdamW and with "
                             "Muon, and compare their validation curves")
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
    kernel = kernels[-1]
    losses = []
    for chunk_tokens in (None, 8192):
        try:
            losses.append(training_throughput(device, kernel, args.chunked_batch, 2048, True, repeats, chunk_tokens))
        except Exception as err:
            losses.append({"loss": f"chunked {chunk_tokens}" if chunk_tokens else "plain",
                           "batch": args.chunked_batch, "error": f"{type(err).__name__}: {err}"[:300]})
        print("loss:", losses[-1], flush=True)
        torch.cuda.empty_cache()
    payload["loss_plain_vs_chunked"] = losses
    try:
        step = training_step(device, preset("seed-270m"), kernel, args.batch, 2048, True)
        payload["profile_compiled_step"] = profile_table(step, device)
    except Exception as err:
        payload["profile_compiled_step"] = {"error": f"{type(err).__name__}: {err}"[:300]}
    print("profile:", payload["profile_compiled_step"], flush=True)
    torch.cuda.empty_cache()
    try:
        payload["nvml_vs_nvidia_smi"] = nvml_cross_check(device)
    except Exception as err:
        payload["nvml_vs_nvidia_smi"] = {"error": f"{type(err).__name__}: {err}"[:300]}
    print("nvml:", payload["nvml_vs_nvidia_smi"], flush=True)
    payload["generation_seed"] = generation_vs_transformers(device, repeats)
    print("generate:", payload["generation_seed"], flush=True)
    best = max((r for r in runs if "tokens_per_s" in r), key=lambda r: r["tokens_per_s"], default=None)
    payload["best_mfu"] = best["mfu"] if best else None
    payload["ratio"] = payload["generation_seed"].get("ratio")
    if args.seed_run:
        torch.cuda.empty_cache()
        payload["seed_run"] = seed_run(args.seed_run)
        print("seed run:", payload["seed_run"], flush=True)
    if args.seed_optimizers:
        torch.cuda.empty_cache()
        payload["seed_optimizers"] = seed_optimizer_comparison(args.seed_optimizers)
    report("gpu", payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
