"""Chat while training: a reply's speed while the engine trains against while it is paused,
and training's speed with and without a reply streaming.

One process, one engine per preset (nano and demo by default, bundled corpus, CPU): after a
warm-up, each of ``--repeats`` rounds measures side by side, so the machine's drift hits
every figure alike,

* replies of ``--tokens`` tokens back to back while training, until training has taken
  ``--min-steps`` steps and ``--min-seconds`` beside them (tokens/s, time to first token, and training's
  tokens/s during them),
* training alone for as long (its tokens/s from step events),
* the same reply with the engine paused.

Medians of the rounds are reported: ``reply_ratio`` is a reply's tokens/s while training
over paused (the design gives replies about ``CHAT_SHARE_WHILE_TRAINING`` of the time),
``train_ratio`` training's tokens/s while a reply streams over without.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from bench.common import report
from gemma_core.model.generation import SamplingParams
from gemma_core.api import TrainingEngine  # serves, as gemma-core train's does
from gemma_core.run.events import StepMetrics
from gemma_core.train.settings import TrainSettings

PROMPT = "ROMEO:"


class StepClock:
    """When each optimizer step ended and the tokens seen by then, from the engine's events."""

    def __init__(self, engine: TrainingEngine) -> None:
        self.marks: list[tuple[float, int]] = []
        self._lock = threading.Lock()
        engine.subscribe(self._on_event)

    def _on_event(self, event) -> None:
        if isinstance(event, StepMetrics):
            with self._lock:
                self.marks.append((time.perf_counter(), event.tokens_seen))

    def steps(self) -> int:
        return len(self.marks)

    def tokens_per_s(self, start: float, end: float) -> float | None:
        """Training tokens/s between the first and last step that ended within [start, end]."""
        with self._lock:
            inside = [m for m in self.marks if start <= m[0] <= end]
        if len(inside) < 2:
            return None
        (t0, n0), (t1, n1) = inside[0], inside[-1]
        return (n1 - n0) / (t1 - t0)

    def wait_for_steps(self, count: int, timeout: float = 600) -> None:
        target, deadline = self.steps() + count, time.monotonic() + timeout
        while self.steps() < target and time.monotonic() < deadline:
            time.sleep(0.05)


def one_reply(engine: TrainingEngine, tokens: int, seed: int) -> dict:
    params = SamplingParams(max_new_tokens=tokens, temperature=0.8, top_k=50, seed=seed, stop_at_eos=False)
    start = time.perf_counter()
    job = engine.chat(PROMPT, params)
    first = None
    for _ in job:
        if first is None:
            first = time.perf_counter()
    end = time.perf_counter()
    if job.error:
        raise RuntimeError(job.error)
    n = job.stats.completion_tokens
    return {"start": start, "end": end, "tokens": n, "seconds": end - start,
            "tokens_per_s": n / (end - start), "first_token_s": (first or end) - start}


def replies_while_training(engine: TrainingEngine, clock: StepClock, tokens: int, seed: int,
                           min_steps: int, min_seconds: float) -> dict:
    """Replies back to back until training has taken ``min_steps`` steps and ``min_seconds``
    beside them: one short reply leaves too few steps to time training by on a busy machine."""
    first_step, replies, start = clock.steps(), [], time.perf_counter()
    while (not replies or clock.steps() - first_step < min_steps
           or time.perf_counter() - start < min_seconds):
        replies.append(one_reply(engine, tokens, seed + len(replies)))
    seconds = sum(r["seconds"] for r in replies)
    return {"start": replies[0]["start"], "end": replies[-1]["end"], "replies": len(replies),
            "seconds": seconds, "tokens_per_s": sum(r["tokens"] for r in replies) / seconds,
            "first_token_s": statistics.median(r["first_token_s"] for r in replies)}


def measure(preset: str, folder: Path, tokens: int, repeats: int, compile: bool, min_steps: int,
            min_seconds: float) -> dict:
    settings = TrainSettings.for_preset(preset, output_dir=str(folder), max_steps=1_000_000, device="cpu",
                                        eval_iters=10**9, save_steps=10**9, sample_every=0,
                                        warmup_steps=1, compile=compile)
    engine = TrainingEngine(settings)
    clock = StepClock(engine)
    engine.start()
    engine.ready.wait()
    clock.wait_for_steps(5)
    one_reply(engine, 8, seed=99)  # warm-up: the inference copy exists, the decode paths have run
    rounds = []
    try:
        for turn in range(repeats):
            training = replies_while_training(engine, clock, tokens, turn * 100, min_steps, min_seconds)
            alone_from = time.perf_counter()
            # Training alone for as long as the replies took.
            while time.perf_counter() - alone_from < training["end"] - training["start"]:
                time.sleep(0.05)
            alone = clock.tokens_per_s(alone_from, time.perf_counter())
            during = clock.tokens_per_s(training["start"], training["end"])
            engine.pause().result(timeout=600)
            paused = one_reply(engine, tokens, seed=turn)
            engine.unpause().result(timeout=600)
            clock.wait_for_steps(2)
            rounds.append({
                "paused_tokens_per_s": paused["tokens_per_s"], "paused_first_token_s": paused["first_token_s"],
                "training_tokens_per_s": training["tokens_per_s"],
                "training_first_token_s": training["first_token_s"],
                "reply_seconds_while_training": training["seconds"] / training["replies"],
                "replies_while_training": training["replies"],
                "reply_ratio": training["tokens_per_s"] / paused["tokens_per_s"],
                "train_tokens_per_s_alone": alone, "train_tokens_per_s_during_reply": during,
                "train_ratio": (during / alone) if during and alone else None,
            })
            print(json.dumps({"preset": preset, "round": turn, **{k: _round(v) for k, v in rounds[-1].items()}}),
                  flush=True)
    finally:
        engine.stop(save=False).result(timeout=600)
        engine.join(60)
    return {key: _round(_median([r[key] for r in rounds])) for key in rounds[0]}


def _median(values: list) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _round(value):
    return round(value, 3) if isinstance(value, float) else value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench chat", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="nano only, one round, a shorter reply")
    parser.add_argument("--presets", default="nano,demo", help="comma-separated presets to train")
    parser.add_argument("--tokens", type=int, default=96, help="tokens per reply")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per preset; medians are reported")
    parser.add_argument("--min-steps", type=int, default=10,
                        help="training steps timed beside replies per round (replies repeat until then)")
    parser.add_argument("--min-seconds", type=float, default=20.0,
                        help="seconds of replies back to back per round (and of training alone)")
    parser.add_argument("--compile", action="store_true", help="train with torch.compile (off: starts at once)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the studio's 2-core machine)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    presets = ["nano"] if args.quick else [p.strip() for p in args.presets.split(",") if p.strip()]
    tokens, repeats = (24, 1) if args.quick else (args.tokens, args.repeats)
    results = {}
    with tempfile.TemporaryDirectory() as root:
        for preset in presets:
            results[preset] = measure(preset, Path(root) / preset, tokens, repeats, args.compile,
                                      3 if args.quick else args.min_steps, 2.0 if args.quick else args.min_seconds)
    payload = {"tokens": tokens, "repeats": repeats, "threads": args.threads, "compile": args.compile,
               "presets": results}
    print(json.dumps(payload), flush=True)
    report("chat", payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
