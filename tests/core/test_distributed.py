"""Data-parallel training under torchrun: two CPU processes (gloo) train like one process.

Two ranks with 4 windows each see, step by step, the global batch of 8 that a
single process with --train_batch_size 8 sees, so their losses agree to fp32
rounding. Rank 0 alone writes the run's files, and its checkpoint resumes in a
single process exactly where the single-process run's own checkpoint does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gemma_core.data.corpus import bundled_works

COMMON = ["--preset", "nano", "--device", "cpu", "--dtype", "fp32", "--gradient_accumulation_steps", "2",
          "--eval_iters", "3", "--save_steps", "3", "--warmup_steps", "2", "--seed", "5"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("ddp-corpus") / "train.txt"
    path.write_text("\n\n".join(w.text[:8_000] for w in bundled_works()[:6]), encoding="utf-8")
    return path


def train(args: list[str], env_cache, ranks: int = 1, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, GEMMA_STUDIO_CACHE=str(env_cache), OMP_NUM_THREADS="1")
    if ranks == 1:
        launcher = [sys.executable, "-m", "gemma_core"]
    else:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc_per_node={ranks}", "-m", "gemma_core"]
    done = subprocess.run(launcher + ["train", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def losses(folder) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    train_log = json.loads((folder / "training_log.json").read_text())
    val_log = json.loads((folder / "validation_log.json").read_text())
    return ([(e["step"], e["train_loss"]) for e in train_log],
            [(e["step"], e["val_loss"]) for e in val_log])


def assert_same_losses(ours, reference) -> None:
    assert [step for step, _ in ours] == [step for step, _ in reference]
    for (step, a), (_, b) in zip(ours, reference):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6), f"step {step}: {a} != {b}"


@pytest.fixture(scope="module")
def single_run(tmp_path_factory, corpus):
    out = tmp_path_factory.mktemp("single") / "run"
    train([*COMMON, "--output_dir", str(out), "--train_dataset_path", str(corpus),
           "--train_batch_size", "8", "--max_steps", "6"], out.parent / "cache")
    return out


@pytest.mark.parametrize("sharding", ["ddp", "fsdp"])
def test_two_ranks_train_like_one_process_with_the_same_global_batch(sharding, tmp_path, corpus,
                                                                    single_run):
    out = tmp_path / "run"
    done = train([*COMMON, "--output_dir", str(out), "--train_dataset_path", str(corpus),
                  "--train_batch_size", "4", "--max_steps", "6",
                  *(["--fsdp"] if sharding == "fsdp" else [])], tmp_path / "cache", ranks=2)
    ours, reference = losses(out), losses(single_run)
    assert_same_losses(ours[0], reference[0])  # training loss, steps 1..6, once each
    assert_same_losses(ours[1], reference[1])  # validation loss at steps 3 and 6
    assert f"2 ranks ({'FSDP2' if sharding == 'fsdp' else 'DDP'})" in done.stdout
    tokens = [e["tokens_seen"] for e in json.loads((out / "training_log.json").read_text())]
    assert tokens == [8 * 2 * 64 * step for step in range(1, 7)]  # global tokens


def test_muon_under_ddp_trains_like_one_process(tmp_path, corpus):
    # Every rank holds whole matrices under DDP, so each orthogonalises the same averaged momentum.
    muon = ["--optimizer", "muon", "--muon_learning_rate", "0.02"]
    one, two = tmp_path / "one", tmp_path / "two"
    train([*COMMON, *muon, "--output_dir", str(one), "--train_dataset_path", str(corpus),
           "--train_batch_size", "8", "--max_steps", "4"], tmp_path / "cache")
    done = train([*COMMON, *muon, "--output_dir", str(two), "--train_dataset_path", str(corpus),
                  "--train_batch_size", "4", "--max_steps", "4"], tmp_path / "cache", ranks=2)
    assert "optimizer: Muon at 0.02" in done.stdout
    assert_same_losses(losses(two)[0], losses(one)[0])
    assert_same_losses(losses(two)[1], losses(one)[1])


def test_muon_under_fsdp_is_refused_in_one_line(tmp_path, corpus):
    env = dict(os.environ, GEMMA_STUDIO_CACHE=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-m", "gemma_core", "train", *COMMON, "--optimizer", "muon",
                           "--fsdp", "--output_dir", str(tmp_path / "run"), "--train_dataset_path", str(corpus)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: --optimizer muon does not run under --fsdp: FSDP2 shards each weight matrix across ranks "
        "and Muon orthogonalises whole matrices; drop --fsdp (DDP keeps whole matrices on every rank) or "
        "use --optimizer adamw"]
    assert not (tmp_path / "run").exists()


def test_a_two_rank_checkpoint_resumes_in_one_process(tmp_path, corpus, single_run):
    two = tmp_path / "two"
    train([*COMMON, "--output_dir", str(two), "--train_dataset_path", str(corpus),
           "--train_batch_size", "4", "--max_steps", "6"], tmp_path / "cache", ranks=2)
    one = tmp_path / "one"
    subprocess.run(["cp", "-r", str(single_run), str(one)], check=True)
    for folder in (one, two):  # both continue to step 9 as a single process with batch 8
        train(["--resume", "--output_dir", str(folder), "--max_steps", "9", "--train_batch_size", "8"],
              tmp_path / "cache")
    assert_same_losses(losses(two)[0], losses(one)[0])
    assert [step for step, _ in losses(two)[0]] == list(range(1, 10))
