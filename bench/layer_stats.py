"""What the per-layer probe (attention entropy and residual RMS at each evaluation) costs a run.

In one process, on the preset's model (demo by default, CPU, 2 threads): the probe pass
(``layer_probe.probe_layers`` on the probe prompt, exactly what the engine runs at each
evaluation), one evaluation (the preset's ``eval_batches`` validation batches through the
trainer's ``summed_loss``) and one training step (forward, backward, AdamW) are timed turn
about, ``--repeats`` times, and the medians taken, so the busy machine's drift hits all
three alike. The probe's share of a run is then

    probe / (eval_iters x step + evaluation)

at the preset's evaluation interval: the time a run spends between two evaluations, the
evaluation included. The step here is not compiled; the demo preset compiles, which about
doubles its CPU speed, so the share is also given against steps twice as fast
(``share_if_compiled``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from bench.common import report
from gemma_core.model.model import Gemma3Model
from gemma_core.model.presets import get_preset
from gemma_core.tokenizers.tokenizer import load_tokenizer
from gemma_core.train.evaluation import summed_loss
from gemma_core.run.layer_probe import probe_layers, probe_token_ids


def timed(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench layer_stats", description=__doc__)
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--repeats", type=int, default=7, help="turns of probe, evaluation and step")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    torch.manual_seed(0)
    chosen = get_preset(args.preset)
    cfg, training = chosen.model_config(), chosen.training
    model = Gemma3Model(cfg).float()
    tokenizer = load_tokenizer(training.tokenizer)
    ids = probe_token_ids(tokenizer, cfg.context_length)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    length = training.max_length

    def batch(size: int) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = torch.randint(0, cfg.vocab_size, (size, length + 1))
        return tokens[:, :-1], tokens[:, 1:]

    def probe() -> None:
        probe_layers(model, ids)

    def evaluation() -> None:
        model.eval()
        with torch.no_grad():
            for _ in range(training.eval_batches):
                summed_loss(model, *batch(training.val_batch_size))
        model.train()

    def step() -> None:
        inputs, targets = batch(training.train_batch_size)
        loss = summed_loss(model, inputs, targets) / targets.numel()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    probe(), evaluation(), step()  # warm-up
    times = {"probe": [], "evaluation": [], "step": []}
    for _ in range(args.repeats):
        for name, work in (("probe", probe), ("evaluation", evaluation), ("step", step)):
            times[name].append(timed(work))
    medians = {name: statistics.median(values) for name, values in times.items()}
    interval = medians["step"] * training.eval_iters + medians["evaluation"]
    compiled = medians["step"] / 2 * training.eval_iters + medians["evaluation"]
    result = {"preset": args.preset, "repeats": args.repeats, "probe_tokens": len(ids),
              "eval_iters": training.eval_iters, "eval_batches": training.eval_batches,
              "median_s": {name: round(value, 4) for name, value in medians.items()},
              "all_s": {name: [round(v, 4) for v in values] for name, values in times.items()},
              "probe_vs_evaluation": round(medians["probe"] / medians["evaluation"], 4),
              "share_of_run": round(medians["probe"] / interval, 5),
              "share_if_compiled": round(medians["probe"] / compiled, 5)}
    print(json.dumps(result), flush=True)
    report("layer_stats", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
