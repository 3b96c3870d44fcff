"""Generation: prefill a 32-token prompt, then 128 greedy tokens; ours against transformers' generate.

Same weights and dtype (fp32 on the CPU) and thread count; both must produce
the same tokens. Ours runs twice: eager (what the studio's chat uses) and with
the compiled decoding step (``gemma-core generate --compile``), whose one-off
compile happens in the warm-up and is reported on its own.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from bench.common import alternating_medians, report
from bench.reference import transformers_twin
from gemma_core.model.generation import SamplingParams, generate_tokens
from gemma_core.model.model import Gemma3Model
from gemma_core.model.presets import preset

PROMPT, NEW = 32, 128


def measure(case: str, repeats: int) -> dict:
    torch.manual_seed(0)
    ours = Gemma3Model(preset(case)).eval()
    reference = transformers_twin(ours).eval()
    prompt = torch.randint(0, ours.cfg.vocab_size, (PROMPT,)).tolist()
    params = SamplingParams(max_new_tokens=NEW, temperature=0, stop_at_eos=False)
    tokens = {"eager": [], "compiled": [], "reference": []}

    def run_ours(compiled: bool):
        tokens["compiled" if compiled else "eager"][:] = list(
            generate_tokens(ours, prompt, params, compiled=compiled))

    def run_reference():
        with torch.inference_mode():
            out = reference.generate(torch.tensor([prompt]), max_new_tokens=NEW, min_new_tokens=NEW,
                                     do_sample=False, pad_token_id=0)
        tokens["reference"][:] = out[0, PROMPT:].tolist()

    start = time.perf_counter()
    run_ours(compiled=True)
    first_compiled_s = time.perf_counter() - start
    eager_s, ref_s = alternating_medians(lambda: run_ours(False), run_reference, repeats)
    compiled_s, ref2_s = alternating_medians(lambda: run_ours(True), run_reference, repeats)
    return {"case": case, "prompt_tokens": PROMPT, "new_tokens": NEW,
            "eager_tokens_per_s": round(NEW / eager_s, 1),
            "compiled_tokens_per_s": round(NEW / compiled_s, 1),
            "reference_tokens_per_s": round(NEW / ref_s, 1),
            "eager_ratio": round(ref_s / eager_s, 3),
            "ratio": round(ref2_s / compiled_s, 3),
            "first_compiled_call_s": round(first_compiled_s, 1),
            "same_tokens": tokens["eager"] == tokens["compiled"] == tokens["reference"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench generate", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="demo config only, fewer repetitions")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = []
    for case in (["demo"] if args.quick else ["demo", "seed-270m"]):
        results.append(measure(case, 3 if args.quick else 5))
        print(json.dumps(results[-1]), flush=True)
    report("generate", {"results": results, "ratio": min(r["ratio"] for r in results),
                        "same_tokens": all(r["same_tokens"] for r in results)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
