"""SIGKILL at any moment loses nothing: --resume continues from the last complete checkpoint.

A real training process is killed 20 times at varied moments (during steps,
evaluations and checkpoint writes; the first kill lands while the token cache
is being built). After every kill the logs are valid JSON, and the final run's
loss for every step equals that of a run that was never interrupted.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

from gemma_core.data.corpus import bundled_works
from gemma_core.run import layout
from gemma_core.train import checkpoints

KILLS = 20
MAX_STEPS = 60


def train_command(out, corpus, resume: bool) -> list[str]:
    command = [sys.executable, "-m", "gemma_core", "train", "--output_dir", str(out)]
    if resume:
        return command + ["--resume"]
    # Killed before its first checkpoint, a run is started again over its own remains.
    return command + ["--overwrite", "--preset", "nano", "--train_dataset_path", str(corpus), "--device", "cpu",
                      "--dtype", "fp32", "--max_steps", str(MAX_STEPS), "--eval_iters", "4",
                      "--save_steps", "3", "--warmup_steps", "5", "--seed", "11"]


def run(command, env, timeout=300):
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def test_twenty_sigkills_then_resume_gives_the_uninterrupted_losses(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(w.text[:6_000] for w in bundled_works()[:8]), encoding="utf-8")
    env = dict(os.environ, GEMMA_STUDIO_CACHE=str(tmp_path / "cache"), PYTHONUNBUFFERED="1")

    reference = tmp_path / "reference"
    done = run(train_command(reference, corpus, resume=False), env)
    assert done.returncode == 0, done.stderr
    expected = [(e["step"], e["train_loss"]) for e in json.loads((reference / "training_log.json").read_text())]

    out = tmp_path / "killed"
    kill_env = dict(env, GEMMA_STUDIO_CACHE=str(tmp_path / "fresh-cache"))  # first kill hits cache building
    rng = random.Random(7)
    kills = 0
    while kills < KILLS:
        resume = layout.has_checkpoint(out)
        process = subprocess.Popen(train_command(out, corpus, resume), env=kill_env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.3, 4.0) if kills else 1.2)
        if process.poll() is not None:  # finished before the kill: start over in a new folder
            assert process.returncode == 0, process.stderr.read()
            break
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
        for name in ("training_log.json", "validation_log.json", "config.json"):
            if (out / name).exists():
                json.loads((out / name).read_text())  # never half-written
        if layout.has_checkpoint(out):
            _, _, state = checkpoints.load_checkpoint(out)
            assert 0 < state["step"] <= MAX_STEPS
    assert kills >= 10, "the run finished too fast to be interrupted often; slow it down"

    final = run(train_command(out, corpus, resume=layout.has_checkpoint(out)), env)
    assert final.returncode == 0, final.stderr
    got = [(e["step"], e["train_loss"]) for e in json.loads((out / "training_log.json").read_text())]
    assert got == expected  # no step missing, none doubled, every loss identical
