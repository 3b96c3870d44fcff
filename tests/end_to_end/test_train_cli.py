"""The headless command line: Ctrl-C saves and says how to resume; eval; clear refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from gemma_core.data.corpus import bundled_works
from gemma_core.run import layout
from tests.end_to_end.cli_in_process import run_cli


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli-corpus")
    text = bundled_works()[0].text[:40_000]
    train = folder / "train.txt"
    train.write_text(text, encoding="utf-8")
    test = folder / "test.jsonl"
    test.write_text(json.dumps({"text": bundled_works()[5].text[:8_000]}) + "\n", encoding="utf-8")
    return train, test


def gemma(*args, env_cache, **kwargs):
    env = dict(os.environ, GEMMA_STUDIO_CACHE=str(env_cache), PYTHONUNBUFFERED="1")
    # A job started in the background inherits SIGINT ignored; give the child Ctrl-C back
    # so the interrupt test means the same however the tests are launched.
    return subprocess.Popen([sys.executable, "-m", "gemma_core", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kwargs)


def gemma_here(*args, env_cache, monkeypatch):
    """The command line run in this process (see cli_in_process), with the same cache folder."""
    monkeypatch.setenv("GEMMA_STUDIO_CACHE", str(env_cache))
    return run_cli(*args)


def nano_train_args(out, train):
    return ["train", "--preset", "nano", "--output_dir", str(out), "--train_dataset_path", str(train),
            "--device", "cpu", "--dtype", "fp32", "--max_steps", "100000", "--eval_iters", "1000",
            "--save_steps", "1000", "--warmup_steps", "2"]


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_saves_a_checkpoint_and_prints_the_resume_command(tmp_path, corpus, how, monkeypatch):
    train, _ = corpus
    out = tmp_path / "run"
    process = gemma(*nano_train_args(out, train), env_cache=tmp_path / "cache")
    try:
        deadline = time.time() + 120
        log = out / "training_log.jsonl"
        while time.time() < deadline and not (log.exists() and log.read_text().count("\n") >= 3):
            time.sleep(0.1)
        process.send_signal(how)
        stdout, stderr = process.communicate(timeout=120)
    finally:  # a run that ignored the signal must not outlive the test
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr  # interrupted (after a clean stop with a checkpoint)
    assert f"gemma-core train --resume --output_dir {out}" in stdout
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["step"] >= 3
    entries = json.loads((out / "training_log.json").read_text())
    assert [e["step"] for e in entries] == list(range(1, len(entries) + 1))

    # The folder now holds a run: a new run there is refused, --resume continues it.
    again = gemma_here("train", "--preset", "nano", "--output_dir", str(out), "--train_dataset_path",
                       str(train), "--max_steps", "20", env_cache=tmp_path / "cache", monkeypatch=monkeypatch)
    err = again.stderr
    assert again.returncode == 2 and "holds another run" in err and "Traceback" not in err
    resumed = gemma_here("train", "--resume", "--output_dir", str(out), "--max_steps", str(state["step"] + 2),
                         env_cache=tmp_path / "cache", monkeypatch=monkeypatch)
    assert resumed.returncode == 0, resumed.stderr
    steps = [e["step"] for e in json.loads((out / "training_log.json").read_text())]
    assert steps == list(range(1, state["step"] + 3))


def test_a_second_interrupt_exits_at_once(tmp_path, corpus):
    train, _ = corpus
    out = tmp_path / "run"
    # The seed's model, so that the stop the first Ctrl-C asks for (finish the step, save
    # 2 GB of checkpoint) takes seconds.
    process = gemma("train", "--preset", "seed-270m", "--output_dir", str(out), "--train_dataset_path",
                    str(train), "--device", "cpu", "--max_length", "32", "--stride", "32",
                    "--gradient_accumulation_steps", "1", "--max_steps", "1000", "--save_steps", "1000",
                    "--eval_iters", "1000", env_cache=tmp_path / "cache")
    try:
        log = out / "training_log.jsonl"
        deadline = time.time() + 240
        while time.time() < deadline and not (log.exists() and log.read_text().count("\n") >= 1):
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        asked = time.monotonic()
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130 and time.monotonic() - asked < 3
    assert stderr.splitlines()[-1].startswith("error: interrupted again: exiting without waiting")
    assert layout.has_checkpoint(out) or not (out / layout.CHECKPOINT).exists()  # never half a checkpoint


def test_a_named_pipe_in_a_data_folder_is_passed_over_not_read(tmp_path, corpus, monkeypatch):
    train, _ = corpus
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "book.txt").write_text(train.read_text(), encoding="utf-8")
    os.mkfifo(folder / "stream.txt")  # reading it would wait forever for a writer
    trained = gemma_here("train", "--preset", "nano", "--output_dir", str(tmp_path / "run"), "--train_dataset_path",
                         str(folder), "--max_steps", "2", "--device", "cpu", env_cache=tmp_path / "cache",
                         monkeypatch=monkeypatch)  # a read of the pipe would be cut off by run_cli's deadline
    assert trained.returncode == 0, trained.stderr


def test_resume_without_a_checkpoint_is_refused_in_one_line(tmp_path, monkeypatch):
    process = gemma_here("train", "--resume", "--output_dir", str(tmp_path / "empty"), env_cache=tmp_path,
                         monkeypatch=monkeypatch)
    err = process.stderr
    assert process.returncode == 2
    assert err.strip().splitlines() == [f"error: {tmp_path / 'empty'}: no checkpoint to resume from; "
                                        "start a new run without --resume"]


def test_eval_reports_loss_perplexity_and_bits_per_byte(tmp_path, corpus, monkeypatch):
    train, test = corpus
    out = tmp_path / "run"
    trained = gemma_here("train", "--preset", "nano", "--output_dir", str(out), "--train_dataset_path",
                         str(train), "--max_steps", "12", "--device", "cpu", env_cache=tmp_path / "cache",
                         monkeypatch=monkeypatch)
    assert trained.returncode == 0, trained.stderr
    evaluated = gemma_here("eval", "--checkpoint", str(out), "--dataset", str(test), env_cache=tmp_path / "cache",
                           monkeypatch=monkeypatch)
    stdout = evaluated.stdout
    assert evaluated.returncode == 0, evaluated.stderr
    assert "loss " in stdout and "perplexity " in stdout and "bits/byte " in stdout


@pytest.mark.parametrize("program", ["gemma-core train", "gemma-tui launch"])
def test_training_help_lists_every_flag_with_a_description_in_groups_and_ends_with_examples(program):
    import argparse

    from gemma_core import cli as core_cli
    from gemma_tui import cli as tui_cli

    top = core_cli.build_parser() if program.startswith("gemma-core") else tui_cli.build_parser()
    subcommands = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    parser = subcommands.choices[program.split()[1]]
    undescribed = [a.option_strings[0] for a in parser._actions if a.option_strings and not a.help]
    assert undescribed == []
    text = parser.format_help()
    headings = ["run:", "model:", "data:", "optimisation:", "schedule:", "evaluation and checkpoints:",
                "devices:"]
    assert [text.index(h) for h in headings] == sorted(text.index(h) for h in headings)
    assert "--split_on_blank_lines" in text.split("data:")[1].split("optimisation:")[0]
    assert text.rstrip().splitlines()[-3] == "examples:" and "--resume --output_dir" in text.splitlines()[-1]
