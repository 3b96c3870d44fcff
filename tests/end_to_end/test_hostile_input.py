"""A mistaken or hostile input gets one line on stderr, exit status 2, and touches nothing.

Every case runs the real command line in-process against an output folder that
already holds a finished run (passing --overwrite where the case is not about
the folder itself), and checks that not one byte of that run changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
from safetensors.torch import load_file, save_file

from gemma_core.cli import main
from gemma_core.data import documents as data_module
from gemma_core.data.corpus import bundled_works
from gemma_core.folder_lock import LOCK_FILE
from gemma_core.train.step import TrainStep


def snapshot(folder: Path) -> dict[str, str]:
    """Every file of a run folder by content (the lock file only says who last tried to write)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != LOCK_FILE}


def run(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def assert_one_line_refusal(code: int, err: str, expected: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert expected in lines[0], lines[0]


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "train.txt"
    path.write_text(bundled_works()[0].text[:30_000], encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, text_file) -> Path:
    """A complete three-step nano run: config, weights, logs, vocab, plot, checkpoint."""
    out = tmp_path_factory.mktemp("finished") / "run"
    code = main(["train", "--preset", "nano", "--output_dir", str(out), "--train_dataset_path",
                 str(text_file), "--max_steps", "3", "--warmup_steps", "1", "--eval_iters", "3", "--device", "cpu",
                 "--dtype", "fp32", "--cache_dir", str(out.parent / "cache")])
    assert code == 0
    return out


@pytest.fixture
def previous_run(tmp_path, finished_run) -> Path:
    copy = tmp_path / "previous"
    shutil.copytree(finished_run, copy)
    return copy


# ------------------------------------------------------------------ train
@dataclass(frozen=True)
class Case:
    name: str
    args: Callable[[Path, Path], list[str]]  # (scratch folder, good text file) -> extra flags
    expected: str  # a fragment of the one-line message
    overwrite: bool = True  # the case is about the inputs, so --overwrite must not erase anything


def write(folder: Path, name: str, content: str | bytes) -> str:
    path = folder / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return str(path)


def jsonl(folder: Path, lines: list[str]) -> list[str]:
    return ["--train_dataset_path", write(folder, "data.jsonl", "\n".join(lines) + "\n")]


GOOD_LINE = json.dumps({"text": "To be, or not to be, that is the question. " * 20})

TRAIN_CASES = [
    # ---------------------------------------------------------------- data
    Case("training path missing", lambda d, t: ["--train_dataset_path", str(d / "nope.jsonl")],
         "nope.jsonl: no such file or directory"),
    Case("validation path missing",
         lambda d, t: ["--train_dataset_path", str(t), "--val_dataset_path", str(d / "val.jsonl")],
         "val.jsonl: no such file or directory"),
    Case("directory with no usable files",
         lambda d, t: (write(d, "notes.md", "# notes"), ["--train_dataset_path", str(d)])[1],
         "directory holds no .jsonl or .txt files"),
    Case("empty file", lambda d, t: ["--train_dataset_path", write(d, "empty.txt", "")],
         "no text found"),
    Case("whitespace-only file",
         lambda d, t: ["--train_dataset_path", write(d, "blank.txt", " \n\t\n   \n")], "no text found"),
    Case("malformed JSONL line", lambda d, t: jsonl(d, [GOOD_LINE, '{"text": "unclosed', GOOD_LINE]),
         "data.jsonl:2: not valid JSON"),
    Case("line without the text field", lambda d, t: jsonl(d, [GOOD_LINE, '{"body": "x"}']),
         "data.jsonl:2: no 'text' field (keys: body)"),
    Case("text field that is not a string", lambda d, t: jsonl(d, [GOOD_LINE, GOOD_LINE, '{"text": 7}']),
         "data.jsonl:3: field 'text' is int, expected a string"),
    Case("invalid UTF-8",
         lambda d, t: ["--train_dataset_path", write(d, "latin1.jsonl", GOOD_LINE.encode() + b"\n"
                                                     + b'{"text": "caf\xe9"}\n')],
         "latin1.jsonl:2: not valid UTF-8 (byte 0xe9)"),
    Case("binary file given as text",
         lambda d, t: ["--train_dataset_path", write(d, "image.txt", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR")],
         "image.txt:3: looks like a binary file"),
    Case("UTF-16 text given as UTF-8",
         lambda d, t: ["--train_dataset_path", write(d, "wide.jsonl", GOOD_LINE.encode("utf-16-le"))],
         "wide.jsonl:1: looks like a binary file"),
    Case("corpus too small for one window",
         lambda d, t: ["--train_dataset_path", write(d, "tiny.txt", "Alas, poor Yorick!"),
                       "--val_dataset_path", str(t)],
         "has only"),
    # -------------------------------------------------------------- config
    Case("unknown preset", lambda d, t: ["--preset", "gemma-9000"], "unknown preset 'gemma-9000'"),
    Case("unknown key in a TOML config",
         lambda d, t: ["--config", write(d, "run.toml", "learning_rat = 0.001\n")],
         "run.toml: unknown key 'learning_rat'"),
    Case("wrong type in a TOML config",
         lambda d, t: ["--config", write(d, "run.toml", 'learning_rate = "fast"\n')],
         "'learning_rate' must be a number"),
    Case("TOML that does not parse", lambda d, t: ["--config", write(d, "run.toml", "max_steps = [\n")],
         "run.toml: cannot parse"),
    Case("zero size", lambda d, t: ["--train_batch_size", "0"], "--train_batch_size must be positive"),
    Case("negative size", lambda d, t: ["--max_steps", "-5"], "--max_steps must be positive"),
    Case("zero model size in TOML",
         lambda d, t: ["--config", write(d, "run.toml", "[model]\nemb_dim = 0\n")], "emb_dim"),
    Case("min_lr above learning_rate", lambda d, t: ["--learning_rate", "1e-4", "--min_lr", "1e-3"],
         "--min_lr 0.001 is above --learning_rate 0.0001"),
    Case("warmup longer than the run", lambda d, t: ["--max_steps", "10", "--warmup_steps", "20"],
         "--warmup_steps 20 is above --max_steps 10"),
    Case("layer_types of the wrong length",
         lambda d, t: ["--config", write(d, "run.toml", '[model]\nlayer_types = ["sliding_attention"]\n')],
         "layer_types"),
    Case("unknown layer type",
         lambda d, t: ["--config", write(d, "run.toml", '[model]\nn_layers = 2\nlayer_types = '
                                                        '["sliding_attention", "dense"]\n')],
         "'dense'"),
    Case("n_heads not divisible by n_kv_groups",
         lambda d, t: ["--config", write(d, "run.toml", "[model]\nn_heads = 4\nn_kv_groups = 3\n")],
         "not divisible by n_kv_groups=3"),
    Case("max_length above context_length", lambda d, t: ["--max_length", "100000", "--stride", "100000"],
         "--max_length 100000 is above the model's context_length"),
    Case("a batch that cannot fit in memory",
         lambda d, t: ["--train_batch_size", "100000000", "--train_dataset_path", str(t)],
         "lower --train_batch_size or --max_length"),
    Case("a tokenizer file that is not a ranks file",
         lambda d, t: ["--tiktoken_encoder_name", write(d, "bad.tiktoken", "hello world\n")],
         "bad.tiktoken:1"),
    Case("a tokenizer larger than the model's vocabulary",
         lambda d, t: ["--tiktoken_encoder_name", "gpt2"],
         "has 50257 tokens but the model's vocab_size is"),
    Case("an --init_from directory that is missing", lambda d, t: ["--init_from", str(d / "nowhere")],
         "checkpoint directory not found"),
    Case("an unknown attention kernel", lambda d, t: ["--attention", "foo"],
         "--attention 'foo' is not a kernel"),
    Case("a seed too large for the random generators", lambda d, t: ["--seed", str(10**20)],
         "--seed must be at most 4294967295"),
    Case("100,000 layers", lambda d, t: ["--config", write(d, "run.toml", "[model]\nn_layers = 100000\n")],
         "'n_layers' is 100,000, beyond any Gemma 3"),
    Case("a vocabulary of 10^9",
         lambda d, t: ["--config", write(d, "run.toml", "[model]\nvocab_size = 1000000000\n")],
         "'vocab_size' is 1,000,000,000, beyond any Gemma 3"),
    Case("a model too big for this machine's memory",
         lambda d, t: ["--config", write(d, "run.toml", "[model]\nvocab_size = 16000000\nemb_dim = 8192\n")],
         "needs at least"),
    Case("a non-finite RoPE base",
         lambda d, t: ["--config", write(d, "run.toml", "[model]\nrope_base = nan\n")], "rope_base"),
    Case("a tokenizer file missing some bytes",
         lambda d, t: ["--tiktoken_encoder_name", write(d, "few.tiktoken", "YQ== 0\nYg== 1\n")],
         "few.tiktoken: byte 0x00 has no token"),
    Case("a named pipe given as data",
         lambda d, t: (os.mkfifo(d / "pipe.txt"), ["--train_dataset_path", str(d / "pipe.txt")])[1],
         "pipe.txt: not a regular file"),
    # --------------------------------------------------------- output folder
    Case("output folder holding another run", lambda d, t: [], "holds another run", overwrite=False),
    Case("the output folder given as the data folder",
         lambda d, t: ["--train_dataset_path", str(d.parent / "previous")], "is inside the data folder"),
    Case("data inside the output folder",
         lambda d, t: ["--train_dataset_path", str(d.parent / "previous" / "training_log.jsonl")],
         "is inside --output_dir"),
]


@pytest.mark.parametrize("case", TRAIN_CASES, ids=[c.name for c in TRAIN_CASES])
def test_train_refuses_in_one_line_and_leaves_the_previous_run_intact(case, tmp_path, previous_run,
                                                                      text_file, capsys):
    before = snapshot(previous_run)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    argv = ["train", "--preset", "nano", "--output_dir", str(previous_run), "--cache_dir",
            str(tmp_path / "cache"), "--device", "cpu", *case.args(scratch, text_file)]
    if case.overwrite:
        argv.append("--overwrite")
    code, err = run(argv, capsys)
    assert_one_line_refusal(code, err, case.expected)
    assert snapshot(previous_run) == before


def test_skip_bad_lines_trains_past_them_and_says_how_many(tmp_path, capsys):
    lines = [GOOD_LINE] * 40 + ['{"text": ', '{"body": 1}'] + [GOOD_LINE] * 40
    out = tmp_path / "run"
    code = main(["train", "--preset", "nano", "--output_dir", str(out), "--max_steps", "2", "--warmup_steps", "1",
                 "--cache_dir", str(tmp_path / "cache"), "--device", "cpu", "--skip_bad_lines",
                 *jsonl(tmp_path, lines)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "skipped 2 bad JSONL lines" in printed


def test_an_enormous_line_is_refused_without_reading_it_whole(tmp_path, previous_run, capsys, monkeypatch):
    monkeypatch.setattr(data_module, "MAX_LINE_BYTES", 4096)
    before = snapshot(previous_run)
    path = write(tmp_path, "huge.jsonl", GOOD_LINE + "\n" + json.dumps({"text": "x" * 10_000}) + "\n")
    code, err = run(["train", "--preset", "nano", "--output_dir", str(previous_run), "--overwrite",
                     "--train_dataset_path", path, "--cache_dir", str(tmp_path / "cache")], capsys)
    assert_one_line_refusal(code, err, "huge.jsonl:2: line is longer than 4,096 bytes")
    assert snapshot(previous_run) == before


def test_an_output_folder_that_cannot_be_created_is_refused(tmp_path, text_file, capsys):
    blocker = Path(write(tmp_path, "a-file", "not a folder"))
    code, err = run(["train", "--preset", "nano", "--output_dir", str(blocker / "run"),
                     "--train_dataset_path", str(text_file)], capsys)
    assert_one_line_refusal(code, err, "output directory cannot be created")
    assert blocker.read_text() == "not a folder"


def test_resume_with_no_checkpoint_is_refused(tmp_path, capsys):
    code, err = run(["train", "--resume", "--output_dir", str(tmp_path / "empty")], capsys)
    assert_one_line_refusal(code, err, "no checkpoint to resume from")
    assert not (tmp_path / "empty").exists()


def test_out_of_memory_names_the_batch_and_what_to_lower(tmp_path, text_file, previous_run, capsys,
                                                         monkeypatch):
    def out_of_memory(self, step):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(TrainStep, "__call__", out_of_memory)
    code, err = run(["train", "--preset", "nano", "--output_dir", str(tmp_path / "run"),
                     "--train_dataset_path", str(text_file), "--train_batch_size", "6",
                     "--cache_dir", str(tmp_path / "cache")], capsys)
    assert_one_line_refusal(code, err, "out of memory at batch 6 x length 64: lower --train_batch_size "
                                       "or --max_length")


def test_debug_shows_the_traceback(tmp_path, capsys):
    code, err = run(["--debug", "train", "--train_dataset_path", str(tmp_path / "missing.txt"),
                     "--output_dir", str(tmp_path / "run")], capsys)
    assert code == 2
    assert "Traceback" in err
    assert err.strip().splitlines()[-1].startswith("error: ")


# ------------------------------------------------------------ checkpoints
def damage_config(run: Path) -> None:
    (run / "config.json").write_text('{"vocab_size": 4096,', encoding="utf-8")


def truncate_weights(run: Path) -> None:
    weights = run / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])


def corrupt_weights(run: Path) -> None:
    weights = run / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[8:40] = b"\xff" * 32  # the JSON header
    weights.write_bytes(bytes(raw))


def reshape_a_tensor(run: Path) -> None:
    state = load_file(str(run / "model.safetensors"))
    state["final_norm.weight"] = torch.zeros(3)
    save_file(state, str(run / "model.safetensors"))


def integer_tensor(run: Path) -> None:
    state = load_file(str(run / "model.safetensors"))
    state["final_norm.weight"] = state["final_norm.weight"].to(torch.int32)
    save_file(state, str(run / "model.safetensors"))


def mismatched_tokenizer(run: Path) -> None:
    config = json.loads((run / "config.json").read_text())
    config["tokenizer"] = {"kind": "builtin", "name": "gpt2"}
    (run / "config.json").write_text(json.dumps(config))


def remove_folder(run: Path) -> None:
    shutil.rmtree(run)


CHECKPOINT_CASES = [
    ("directory missing", remove_folder, "checkpoint directory not found"),
    ("config.json malformed", damage_config, "config.json: not valid JSON"),
    ("model.safetensors truncated", truncate_weights, "model.safetensors: unreadable safetensors file"),
    ("model.safetensors corrupted", corrupt_weights, "model.safetensors: unreadable safetensors file"),
    ("a tensor of the wrong shape", reshape_a_tensor, "'final_norm.weight' has shape (3,)"),
    ("a tensor of the wrong dtype", integer_tensor, "'final_norm.weight' has dtype torch.int32"),
    ("a tokenizer that does not match the model", mismatched_tokenizer, "tokenizer has 50257 tokens"),
]
COMMANDS = {
    "generate": lambda ckpt, text: ["generate", "--checkpoint", ckpt, "--prompt", "Hi", "--device", "cpu"],
    "eval": lambda ckpt, text: ["eval", "--checkpoint", ckpt, "--dataset", text, "--device", "cpu"],
    "export-hf": lambda ckpt, text: ["export-hf", "--checkpoint", ckpt, "--output", ckpt + "-hf"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("name,damage,expected", CHECKPOINT_CASES, ids=[c[0] for c in CHECKPOINT_CASES])
def test_a_damaged_checkpoint_is_refused_in_one_line(name, damage, expected, command, previous_run,
                                                     text_file, capsys):
    damage(previous_run)
    before = snapshot(previous_run)
    code, err = run(COMMANDS[command](str(previous_run), str(text_file)), capsys)
    assert_one_line_refusal(code, err, expected)
    assert snapshot(previous_run) == before
    assert not Path(str(previous_run) + "-hf").exists()


@pytest.mark.parametrize("flag", [[], ["--resume"]], ids=["again", "resume"])
def test_a_run_killed_before_its_first_checkpoint_says_to_start_it_again(flag, tmp_path, finished_run,
                                                                         capsys):
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(finished_run / "config.json", out / "config.json")
    shutil.copy(finished_run / "training_log.jsonl", out / "training_log.jsonl")
    before = snapshot(out)
    code, err = run(["train", "--preset", "nano", "--output_dir", str(out), *flag], capsys)
    assert_one_line_refusal(code, err, "stopped before its first checkpoint, so there is nothing to "
                                       "resume; pass --overwrite to start it again")
    assert snapshot(out) == before
