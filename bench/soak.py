"""Soak: resident memory over a long run with the studio open.

Trains the nano preset for many steps with the studio rendering every frame
(Textual's headless driver), sampling the process's resident set size as it
goes. Held histories are bounded (downsampled), so memory should rise while
things warm up and then stay flat: the report gives the RSS after warm-up and
at the end, and ``ratio`` = warm-up RSS / final RSS (1.0 is flat; higher is
better, as in the other benchmarks).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.common import report
from gemma_core.api import TrainingEngine  # serves, as gemma-core train's does
from gemma_core.train.settings import TrainSettings


def rss_mib() -> float:
    with open("/proc/self/statm", encoding="ascii") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def main(argv=None) -> int:
    from gemma_tui.app import create_app

    parser = argparse.ArgumentParser(prog="python -m bench soak", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="3,000 steps instead of 20,000")
    parser.add_argument("--steps", type=int, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    steps = args.steps or (3_000 if args.quick else 20_000)
    samples: list[tuple[int, float, float]] = []  # (step, seconds, RSS MiB)
    with tempfile.TemporaryDirectory() as root:
        engine = TrainingEngine(TrainSettings.for_preset(
            "nano", output_dir=str(Path(root) / "run"), max_steps=steps, device="cpu",
            eval_iters=max(50, steps // 100), save_steps=max(500, steps // 10), warmup_steps=10))
        app = create_app(engine)
        started = time.perf_counter()

        async def drive():
            async with app.run_test(size=(160, 48)) as pilot:
                next_sample = 0
                while engine.is_alive() and engine.snapshot().error is None:
                    step = engine.snapshot().step
                    if step >= next_sample:
                        samples.append((step, round(time.perf_counter() - started, 1), round(rss_mib(), 1)))
                        next_sample = step + max(1, steps // 40)
                    await pilot.pause(0.5)
                samples.append((engine.snapshot().step, round(time.perf_counter() - started, 1),
                                round(rss_mib(), 1)))

        engine.start()
        asyncio.run(drive())
        engine.join()
        error = engine.snapshot().error
    for step, seconds, rss in samples:
        print(json.dumps({"step": step, "seconds": seconds, "rss_mib": rss}))
    warm = next(rss for step, _, rss in samples if step >= steps // 10)
    final = samples[-1][2]
    report("soak", {"steps": steps, "error": error, "rss_after_warmup_mib": warm, "rss_final_mib": final,
                    "rss_peak_mib": max(rss for _, _, rss in samples),
                    "ratio": round(warm / final, 3)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
