"""Training-step time of demo-model variants, timed turn about in one process.

``python -m bench variants [NAME ...] [--repeats N]``

Each variant is the ``demo`` preset with a few fields changed, trained as
``gemma-core train`` trains it: compiled region by region, bf16 autocast, fused
AdamW (or Muon beside it: the ``muon`` variant), gradient clipping, batch 8 x
256. The machine's speed drifts by 10-50% within minutes, so separate runs
cannot be compared; here every variant takes
one step in turn, and the report gives each one's median step and its speed
against the first variant named. Used to choose the demo preset's shape
(BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from bench.common import report
from bench.train import make_step as training_step
from gemma_core.model.config import GemmaConfig, default_layer_types
from gemma_core.model.model import Gemma3Model
from gemma_core.model.presets import preset

VARIANTS: dict[str, dict] = {
    "demo": {},  # 256 wide, 4 query heads, MLP 768
    "eager-attention": {"attention": "eager"},  # explicit scores instead of SDPA
    "width-320": {"emb_dim": 320, "n_heads": 5, "hidden_dim": 896},
    "width-384": {"emb_dim": 384, "n_heads": 6, "hidden_dim": 1024},  # the demo's former shape
    "depth-4": {"n_layers": 4},  # four sliding layers under the 5 : 1 rule
    "muon": {"optimizer": "muon"},  # the demo with Muon for its decoder's matrices
    "adamw": {"optimizer": "adamw"},  # the demo with AdamW alone
}
BATCH, LENGTH = 8, 256


def variant_config(name: str) -> tuple[GemmaConfig, str]:
    fields = dict(VARIANTS[name])
    attention = fields.pop("attention", "auto")
    fields.pop("optimizer", None)
    data = preset("demo").to_dict() | fields
    if "n_layers" in fields:
        data["layer_types"] = default_layer_types(fields["n_layers"])
    return GemmaConfig.from_dict(data), attention


def make_step(name: str):
    """The variant's training step exactly as ``bench train`` times the shipped one."""
    cfg, attention = variant_config(name)
    torch.manual_seed(0)
    model = Gemma3Model(cfg)
    model.set_attention_kernel(attention)
    ids = torch.randint(0, cfg.vocab_size, (BATCH, LENGTH + 1))
    optimizer = VARIANTS[name].get("optimizer", "adamw")
    return (training_step(model, ids, True, torch.bfloat16, shipped=True, optimizer_name=optimizer),
            model.num_parameters())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench variants", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", default=["width-384", "demo"],
                        help=f"variants to compare, the first is the baseline: {', '.join(VARIANTS)}")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
    torch.set_num_threads(args.threads)

    steps, parameters, compile_s = {}, {}, {}
    for name in args.names:
        steps[name], parameters[name] = make_step(name)
        start = time.perf_counter()
        steps[name]()  # compiles (from the on-disk cache when warm)
        compile_s[name] = round(time.perf_counter() - start, 1)
    times: dict[str, list[float]] = {name: [] for name in args.names}
    for _ in range(args.repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)

    baseline = statistics.median(times[args.names[0]])
    results = []
    for name in args.names:
        median = statistics.median(times[name])
        results.append({"variant": name, "parameters": parameters[name], "first_step_s": compile_s[name],
                        "median_step_s": round(median, 4), "tokens_per_s": round(BATCH * LENGTH / median, 1),
                        "speed_vs_first": round(baseline / median, 3)})
        print(results[-1], flush=True)
    report("variants", {"batch": BATCH, "length": LENGTH, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
