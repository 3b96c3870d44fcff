"""Training-step throughput and peak memory: ours against transformers' Gemma3ForCausalLM (sdpa).

One step = forward, backward, gradient clipping, AdamW. Same config, same
weights, same batch, same dtype and thread count; the two alternate so any
drift in the machine hits both. Ours runs twice: as ``gemma-core train`` runs it
(``torch.compile`` region by region, fused AdamW) and in eager mode with the
same optimizer as the reference; transformers runs as its users run it, eager.
Peak memory is the resident-set high-water mark of a process that builds one
model and takes a few steps, one process per model so neither sees the other's
pages.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import torch

from bench.common import alternating_medians, report
from bench.reference import transformers_twin
from gemma_core.model.model import Gemma3Model
from gemma_core.model.presets import preset
from gemma_core.train.compiled_loss import CompiledLoss
from gemma_core.train.optim import build_optimizer

CASES = {"demo": (8, 256), "seed-270m": (1, 512)}


def make_step(model: torch.nn.Module, ids: torch.Tensor, ours: bool, dtype: torch.dtype,
              shipped: bool = False, optimizer_name: str = "adamw"):
    """One training step; ``shipped``: ours as the trainer runs it (compiled, fused AdamW, or
    Muon for the decoder's matrices beside it)."""
    if optimizer_name == "muon":
        optimizer = build_optimizer(model, 1e-4, 0.1, (0.9, 0.95), torch.device("cpu"), optimizer="muon")
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=shipped or None)
    inputs, targets = ids[:, :-1], ids[:, 1:]
    loss_fn = CompiledLoss(model) if shipped else getattr(model, "loss", None)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            if ours:
                loss = loss_fn(inputs, targets)
            else:
                loss = model(input_ids=inputs, labels=None).logits.float()
                loss = torch.nn.functional.cross_entropy(loss.view(-1, loss.shape[-1]), targets.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def peak_rss_mib(case: str, which: str, dtype: str) -> float:
    """Run one model's steps in a fresh process; return its peak resident memory."""
    # VmHWM, not ru_maxrss: ru_maxrss carries the parent's resident size over fork and exec.
    code = ("import torch;from bench.train import _child;"
            f"torch.set_num_threads({torch.get_num_threads()});_child({case!r},{which!r},{dtype!r});"
            "print(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM'))/1024)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=os.getcwd()))
    return float(out.stdout.strip().splitlines()[-1])


def _child(case: str, which: str, dtype: str) -> None:
    torch.manual_seed(0)
    model = Gemma3Model(preset(case))
    if which == "transformers":
        model = transformers_twin(model)
    batch, length = CASES[case]
    ids = torch.randint(0, preset(case).vocab_size, (batch, length + 1))
    step = make_step(model, ids, which != "transformers", torch.bfloat16 if dtype == "bf16" else torch.float32,
                     shipped=which == "ours-compiled")
    for _ in range(3):
        step()


def measure(case: str, dtype: torch.dtype, repeats: int, shipped: bool) -> dict:
    torch.manual_seed(0)
    ours = Gemma3Model(preset(case))
    reference = transformers_twin(ours)
    batch, length = CASES[case]
    ids = torch.randint(0, ours.cfg.vocab_size, (batch, length + 1))
    ours_step = make_step(ours, ids, True, dtype, shipped=shipped)
    ref_step = make_step(reference, ids, False, dtype)
    if shipped:
        ours_step()  # compile outside the timing (the trainer's first step pays it once)
    ours_s, ref_s = alternating_medians(ours_step, ref_step, repeats)
    return {"case": case, "batch": batch, "length": length,
            "dtype": "bf16" if dtype == torch.bfloat16 else "fp32",
            "ours": "compiled (gemma-core train --compile)" if shipped else "eager",
            "ours_tokens_per_s": round(batch * length / ours_s, 1),
            "reference_tokens_per_s": round(batch * length / ref_s, 1),
            "ratio": round(ref_s / ours_s, 3)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench train", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="demo config only, bf16 only for the compiled run, fewer repetitions")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cases = ["demo"] if args.quick else ["demo", "seed-270m"]
    repeats = 3 if args.quick else 7
    results = []
    for case in cases:
        for dtype in (torch.float32, torch.bfloat16):
            for shipped in (True, False):
                if args.quick and shipped and dtype == torch.float32:
                    continue
                result = measure(case, dtype, repeats, shipped)
                if not args.quick:
                    which = "ours-compiled" if shipped else "ours"
                    result["ours_peak_rss_mib"] = peak_rss_mib(case, which, result["dtype"])
                    result["reference_peak_rss_mib"] = peak_rss_mib(case, "transformers", result["dtype"])
                    result["memory_ratio"] = round(result["ours_peak_rss_mib"] / result["reference_peak_rss_mib"], 3)
                print(json.dumps(result), flush=True)
                results.append(result)
    shipped_ratios = [r["ratio"] for r in results if r["ours"].startswith("compiled")]
    report("train", {"results": results, "ratio": min(shipped_ratios),
                     "eager_ratio": min(r["ratio"] for r in results if r["ours"] == "eager")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
