"""The exit-code contract, for every command: 0 success, 1 a bug (said so, with --debug offered),
2 the user's input or environment, 130 interrupted; always one line, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gemma_core.cli import main
from gemma_core.data.corpus import bundled_works
from gemma_core.train.step import TrainStep
from tests.end_to_end.cli_in_process import run_cli


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished three-step nano run to point commands at."""
    root = tmp_path_factory.mktemp("trained")
    text = root / "train.txt"
    text.write_text(bundled_works()[0].text[:30_000], encoding="utf-8")
    out = root / "run"
    assert main(["train", "--preset", "nano", "--output_dir", str(out), "--train_dataset_path", str(text),
                 "--max_steps", "3", "--device", "cpu", "--dtype", "fp32",
                 "--cache_dir", str(root / "cache")]) == 0
    return out


def command(program: str, *args: str):
    """The command line, run in this process as a subprocess would see it (see cli_in_process)."""
    return run_cli(*args, tool=program)


def command_apart(program: str, *args: str, env: dict | None = None, timeout: float = 120):
    """The command line in a process of its own (for what a process takes from its environment
    as it starts, such as its streams' encoding)."""
    return subprocess.run([sys.executable, "-m", program, *args], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, **(env or {})))


def one_line(stderr: str) -> str:
    """The error line: the only line, apart from notes."""
    lines = [line for line in stderr.strip().splitlines() if not line.startswith("note:")]
    assert "Traceback" not in stderr and len(lines) == 1, stderr
    return lines[0]


# (name, program, arguments given (run folder, scratch folder), code, fragment of the line)
BAD_INPUTS = [
    ("summary of a missing config", "gemma_core", lambda r, d: ["summary", "--config", str(d / "no.toml")],
     2, "file not found"),
    ("summary of 100,000 layers", "gemma_core",
     lambda r, d: ["summary", "--config", write(d / "big.toml", 'preset = "nano"\n[model]\nn_layers = 100000\n')],
     2, "beyond any Gemma 3"),
    ("generate at a NaN temperature", "gemma_core",
     lambda r, d: ["generate", "--checkpoint", str(r), "--prompt", "KING", "--temperature", "nan"],
     2, "--temperature must be a number"),
    ("generate with a huge seed", "gemma_core",
     lambda r, d: ["generate", "--checkpoint", str(r), "--prompt", "KING", "--seed", str(10**20)],
     2, "--seed must be a whole number from 0"),
    ("generate with an unknown kernel", "gemma_core",
     lambda r, d: ["generate", "--checkpoint", str(r), "--prompt", "KING", "--attention", "foo"],
     2, "--attention 'foo' is not a kernel"),
    ("generate a prompt longer than the context", "gemma_core",
     lambda r, d: ["generate", "--checkpoint", str(r), "--prompt", "O Romeo, Romeo! " * 200],
     2, "the prompt is"),
    ("eval with a negative batch", "gemma_core",
     lambda r, d: ["eval", "--checkpoint", str(r), "--dataset", write(d / "t.txt", "text " * 500),
                   "--batch_size", "-1"], 2, "--batch_size must be 1 or more"),
    ("eval past the context", "gemma_core",
     lambda r, d: ["eval", "--checkpoint", str(r), "--dataset", write(d / "t.txt", "text " * 500),
                   "--max_length", "100000"], 2, "is above the model's context_length"),
    ("tokenizer train on a missing file", "gemma_core",
     lambda r, d: ["tokenizer", "train", "--input", str(d / "none.txt"), "--vocab_size", "300",
                   "--output", str(d / "x.tiktoken")], 2, "no such file"),
    ("export a missing checkpoint", "gemma_core",
     lambda r, d: ["export-hf", "--checkpoint", str(d / "none"), "--output", str(d / "hf")], 2, "not found"),
    ("import a missing folder", "gemma_core",
     lambda r, d: ["import-hf", str(d / "none"), "--output", str(d / "ours")], 2, "not found"),
    ("wikipedia with a negative count", "gemma_core",
     lambda r, d: ["data", "wikipedia", "--output_dir", str(d / "wiki"), "--train", "-1"],
     2, "--train -1 must be a whole number of at least 1"),
    ("no command at all", "gemma_core", lambda r, d: [], 2, "required: COMMAND"),
    ("train with a bad flag value", "gemma_core",
     lambda r, d: ["train", "--output_dir", str(d / "new"), "--max_steps", "-1"], 2, "--max_steps must be positive"),
    ("status of a folder with no run", "gemma_core", lambda r, d: ["status", str(d)], 2, "holds no run"),
    ("control of a missing folder", "gemma_core", lambda r, d: ["control", str(d / "none"), "pause"], 2,
     "not found"),
    ("control of a run that is not running", "gemma_core", lambda r, d: ["control", str(r), "save"], 2,
     "the run is not running"),
    ("serve on an impossible port", "gemma_core",
     lambda r, d: ["serve", "--checkpoint", str(r), "--port", "99999"], 2, "--port must be a port number"),
    ("serve a missing checkpoint", "gemma_core",
     lambda r, d: ["serve", "--checkpoint", str(d / "none")], 2, "not found"),
    ("attach to a run that is not running", "gemma_tui", lambda r, d: ["attach", str(r)], 2,
     "the run is not running"),
    ("the studio on a bad flag value", "gemma_tui",
     lambda r, d: ["launch", "--output_dir", str(d / "new"), "--seed", "-3"], 2, "--seed must be a whole number"),
    ("the studio on a missing run", "gemma_tui", lambda r, d: ["open", str(d / "none")], 2, "not found"),
    ("the studio without a terminal", "gemma_tui", lambda r, d: ["open", str(r)], 2, "needs a terminal"),
    # argparse's own mistakes, in one line that names the command
    ("a flag value that is not a number", "gemma_core",
     lambda r, d: ["generate", "--checkpoint", str(r), "--prompt", "KING", "--max_new_tokens", "abc"],
     2, "gemma-core generate: argument --max_new_tokens: invalid int value"),
    ("an unknown command", "gemma_core", lambda r, d: ["frobnicate"], 2, "invalid choice: 'frobnicate'"),
    # numbers that cannot train
    ("a NaN learning rate", "gemma_core",
     lambda r, d: ["train", "--output_dir", str(d / "new"), "--learning_rate", "nan"], 2,
     "--learning_rate must be a finite number"),
    ("a NaN min_lr", "gemma_core", lambda r, d: ["train", "--output_dir", str(d / "new"), "--min_lr", "nan"],
     2, "--min_lr must be a finite number"),
    ("a negative grad_clip", "gemma_core",
     lambda r, d: ["train", "--output_dir", str(d / "new"), "--grad_clip", "-1"], 2, "--grad_clip must be >= 0"),
    ("a negative weight decay", "gemma_core",
     lambda r, d: ["train", "--output_dir", str(d / "new"), "--weight_decay", "-5"], 2,
     "--weight_decay must be >= 0"),
    ("a val_fraction of 1", "gemma_core",
     lambda r, d: ["train", "--output_dir", str(d / "new"), "--val_fraction", "1"], 2,
     "--val_fraction must be above 0 and at most 0.5"),
    # resume keeps the run's own model
    ("resume and overwrite at once", "gemma_core",
     lambda r, d: ["train", "--resume", "--overwrite", "--output_dir", str(r)], 2, "contradict each other"),
    ("resume with another preset", "gemma_core",
     lambda r, d: ["train", "--resume", "--preset", "demo", "--output_dir", str(r)], 2,
     "--preset given differs from the run's own"),
    ("resume with another tokenizer", "gemma_core",
     lambda r, d: ["train", "--resume", "--tiktoken_encoder_name", "gpt2", "--output_dir", str(r)], 2,
     "--tiktoken_encoder_name given differs"),
    ("resume with another model", "gemma_core",
     lambda r, d: ["train", "--resume", "--output_dir", str(r), "--config",
                   write(d / "l4.toml", "[model]\nn_layers = 4\n")], 2, "the [model] table"),
    # files where folders go and the reverse
    ("a checkpoint that is a file", "gemma_core",
     lambda r, d: ["generate", "--checkpoint", write(d / "f.txt", "x"), "--prompt", "KING"], 2,
     "is a file, not a checkpoint folder"),
    ("a tokenizer that is a string", "gemma_core",
     lambda r, d: ["generate", "--checkpoint", retokenized(r, d, "gpt2"), "--prompt", "KING"], 2,
     "'tokenizer' must be an object"),
    ("a prompt that is not UTF-8", "gemma_core",
     lambda r, d: ["generate", "--checkpoint", str(r), "--prompt", "hi\udcff\udcfe"], 2,
     "--prompt is not valid UTF-8 text (byte 0xff"),
    # tokenizer train's output
    ("a tokenizer into a missing folder", "gemma_core",
     lambda r, d: ["tokenizer", "train", "--input", write(d / "t.txt", "text " * 50), "--vocab_size", "300",
                   "--output", str(d / "no" / "such" / "t.tiktoken")], 2, "does not exist; create it first"),
    ("a tokenizer onto a folder", "gemma_core",
     lambda r, d: ["tokenizer", "train", "--input", write(d / "t.txt", "text " * 50), "--vocab_size", "300",
                   "--output", str(d), "--overwrite"], 2, "is a folder; give a file path"),
    ("a tokenizer onto a device", "gemma_core",
     lambda r, d: ["tokenizer", "train", "--input", write(d / "t.txt", "text " * 50), "--vocab_size", "300",
                   "--output", "/dev/null", "--overwrite"], 2, "is not a regular file"),
    ("a tokenizer of ten billion tokens", "gemma_core",
     lambda r, d: ["tokenizer", "train", "--input", write(d / "t.txt", "text " * 50), "--vocab_size",
                   "10000000000", "--output", str(d / "t.tiktoken")], 2, "--vocab_size must be from 258"),
]


def retokenized(run: Path, scratch: Path, spec) -> str:
    """A copy of ``run`` whose config.json gives ``spec`` as its tokenizer."""
    import shutil

    copy = scratch / "retokenized"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("checkpoint*", ".lock"))
    data = json.loads((copy / "config.json").read_text())
    data["tokenizer"] = spec
    (copy / "config.json").write_text(json.dumps(data))
    return str(copy)


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("name, program, args, code, fragment", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_every_command_exits_with_its_code_and_one_line(name, program, args, code, fragment, trained,
                                                        tmp_path):
    started = time.monotonic()
    result = command(program, *args(trained, tmp_path))
    assert result.returncode == code, result.stderr
    line = one_line(result.stderr)
    assert line.startswith("error: ") and fragment in line, line
    assert time.monotonic() - started < 60


def test_a_damaged_log_makes_the_studio_say_where(trained, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    log = run / "training_log.jsonl"
    lines = log.read_text().splitlines()
    lines[1] = json.dumps({"train_loss": 1.0})  # a line without its step
    log.write_text("\n".join(lines) + "\n")
    result = command("gemma_tui", "open", str(run))
    assert result.returncode == 2
    assert "training_log.jsonl:2: damaged log line: 'step'" in one_line(result.stderr)


def test_more_new_tokens_than_the_context_holds_is_capped_and_said(trained):
    result = command("gemma_core", "generate", "--checkpoint", str(trained), "--prompt", "KING",
                     "--max_new_tokens", "100000", "--temperature", "0", "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert ("note: the prompt takes 1 of the model's 256 context tokens: generating at most 255 tokens, "
            "not 100,000") in result.stderr


def test_an_ascii_only_terminal_gets_escapes_not_a_crash(trained):
    result = command_apart("gemma_core", "generate", "--checkpoint", str(trained), "--prompt", "naïve café —",
                     "--max_new_tokens", "5", env={"PYTHONIOENCODING": "ascii", "LC_ALL": "C"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("na\\xefve caf\\xe9 \\u2014")


class RustPanic(BaseException):
    """What a panic in a Rust extension (tiktoken, tokenizers) raises: not an Exception."""


@pytest.mark.parametrize("bug", [RuntimeError("boom"), RustPanic("no entry found for key")],
                         ids=["python", "rust panic"])
def test_a_bug_in_the_trainer_is_exit_1_and_asks_for_debug(bug, trained, tmp_path, capsys, monkeypatch):
    def broken_step(self, step):
        raise bug

    monkeypatch.setattr(TrainStep, "__call__", broken_step)
    text = trained.parent / "train.txt"
    code = main(["train", "--preset", "nano", "--output_dir", str(tmp_path / "run"), "--device", "cpu",
                 "--train_dataset_path", str(text), "--cache_dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 1
    line = one_line(err)
    assert f"internal error ({type(bug).__name__}" in line and "--debug" in line


def test_a_bug_in_a_command_is_exit_1(capsys, monkeypatch):
    from gemma_core.model import summary

    monkeypatch.setattr(summary, "print_summary", lambda cfg, title: 1 / 0)
    assert main(["summary", "--preset", "nano"]) == 1
    assert "internal error (ZeroDivisionError" in one_line(capsys.readouterr().err)


def test_debug_is_taken_after_the_command_too(tmp_path):
    result = command("gemma_core", "summary", "--config", str(tmp_path / "no.toml"), "--debug")
    assert result.returncode == 2
    assert "Traceback" in result.stderr and result.stderr.strip().splitlines()[-1].startswith("error: ")
