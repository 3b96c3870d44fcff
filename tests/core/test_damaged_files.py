"""Damaged files are named as damaged: a token cache is checked and built again, every number of a
checkpoint's state is checked, and a damaged log line is reported with its file and line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gemma_core.data.corpus import bundled_works
from gemma_core.data.token_cache import InMemoryDocuments, TokenShards, build_token_cache
from gemma_core.errors import UserError
from gemma_core.run import layout
from gemma_core.run.history import read_run_history
from gemma_core.run.logs import read_jsonl
from gemma_core.tokenizers.tokenizer import load_tokenizer
from gemma_core.train.engine import TrainingEngine
from gemma_core.run.events import RunState
from gemma_core.train.settings import TrainSettings


def cache_of(tmp_path):
    documents = InMemoryDocuments("test", [w.text[:20_000] for w in bundled_works()[:3]])
    return documents, build_token_cache(documents, load_tokenizer("shakespeare-4k"), cache_dir=tmp_path)


@pytest.mark.parametrize("damage", ["garbage", "out of range"])
def test_a_damaged_token_cache_is_detected_and_built_again(tmp_path, damage):
    documents, shards = cache_of(tmp_path)
    good = np.array(shards.tokens)
    path = shards.tokens_path
    if damage == "garbage":
        path.write_bytes(np.random.default_rng(0).integers(0, 4096, len(good), dtype=np.uint16).tobytes())
    else:
        broken = good.copy()
        broken[len(broken) // 3] = 60_000
        path.write_bytes(broken.tobytes())
    found, why = TokenShards.inspect(shards.directory)
    assert found is None and why
    again = build_token_cache(documents, load_tokenizer("shakespeare-4k"), cache_dir=tmp_path)
    assert again.repaired == why and not again.from_cache
    assert np.array_equal(np.array(again.tokens), good)


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("damaged")
    texts = [w.text[:4000] for w in bundled_works()[:6]]
    settings = TrainSettings.for_preset("nano", output_dir=str(root / "run"), train_texts=texts,
                                        cache_dir=str(root / "cache"), device="cpu", dtype="fp32",
                                        max_steps=6, save_steps=3, eval_iters=3)
    TrainingEngine(settings).run()
    return root / "run", texts


def copy_run(run_folder, tmp_path):
    import shutil

    source, texts = run_folder
    target = tmp_path / "run"
    shutil.copytree(source, target)
    return target, texts


@pytest.mark.parametrize("field, value, message", [
    ("step", -5, "'step' is -5, expected a whole number from 0 to"),
    ("step", 10**30, f"'step' is {10**30}, expected a whole number from 0 to"),
    ("tokens_seen", "many", "'tokens_seen' is 'many'"),
    ("best_val_loss", float("nan"), "'best_val_loss' is nan, expected a finite number"),
    ("data", {"epoch": 0, "position": -1}, "'data.position' is -1"),
    ("rng", {"torch": [999], "python": []}, "'rng.torch' is not a list of bytes"),
])
def test_every_number_of_a_checkpoint_state_is_checked_before_it_is_used(run_folder, tmp_path, field, value,
                                                                          message):
    out, texts = copy_run(run_folder, tmp_path)
    state_path = out / layout.CHECKPOINT / layout.STATE
    state = json.loads(state_path.read_text())
    state[field] = value
    state_path.write_text(json.dumps(state))
    logs_before = (out / layout.TRAIN_STREAM).read_text()
    with pytest.raises(UserError) as caught:
        TrainingEngine.resume(out, max_steps=9, train_texts=texts).run()
    assert f"{state_path}: damaged checkpoint state: {message}" in str(caught.value)
    assert (out / layout.TRAIN_STREAM).read_text() == logs_before  # nothing rewritten


def test_a_damaged_log_line_is_named_by_file_and_line(run_folder, tmp_path):
    out, texts = copy_run(run_folder, tmp_path)
    log = out / layout.TRAIN_STREAM
    lines = log.read_text().splitlines()
    lines[2] = '{"train_loss": 3.1, "learning_rate": 0.001}'
    log.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"training_log.jsonl:3: damaged log line: 'step' is None"):
        read_run_history(out, 6)
    engine = TrainingEngine.resume(out, max_steps=9, train_texts=texts)
    engine.start()
    assert engine.join(timeout=120)
    assert engine.snapshot().state is RunState.FAILED
    assert "training_log.jsonl:3: damaged log line" in engine.snapshot().error


def test_a_torn_last_line_is_a_crash_not_damage(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1}\n{"step": 2}\n{"ste')
    assert read_jsonl(log) == [{"step": 1}, {"step": 2}]
    log.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(UserError, match="log.jsonl:2: damaged log line"):
        read_jsonl(log)


@pytest.mark.parametrize("data, message", [
    ({"epoch": 0, "position": 10**12, "global_batch_size": 4}, "position 1,000,000,000,000 is past the end"),
    ({"epoch": 0, "position": 1, "global_batch_size": 0}, "global_batch_size 0 is not a whole number >= 1"),
])
def test_a_data_position_that_cannot_be_the_runs_is_damage(run_folder, tmp_path, data, message):
    out, texts = copy_run(run_folder, tmp_path)
    state_path = out / layout.CHECKPOINT / layout.STATE
    state = json.loads(state_path.read_text())
    state["data"] = data
    state_path.write_text(json.dumps(state))
    engine = TrainingEngine.resume(out, max_steps=9, train_texts=texts)
    engine.start()
    assert engine.join(timeout=120)
    assert engine.snapshot().state is RunState.FAILED
    assert message in engine.snapshot().error and "the checkpoint is damaged" in engine.snapshot().error


def test_a_log_line_lost_at_the_checkpoints_step_is_put_back_on_resume(run_folder, tmp_path):
    out, texts = copy_run(run_folder, tmp_path)
    log = out / layout.TRAIN_STREAM
    entries = read_jsonl(log)
    assert [e["step"] for e in entries] == [1, 2, 3, 4, 5, 6]
    # The run's last checkpoint is of step 6; tear its line, as a crash mid-write would.
    raw = log.read_bytes()
    log.write_bytes(raw[:raw.rindex(b"{") + 10])
    assert [e["step"] for e in read_jsonl(log)] == [1, 2, 3, 4, 5]
    TrainingEngine.resume(out, max_steps=8, train_texts=texts).run()
    resumed = read_jsonl(log)
    assert [e["step"] for e in resumed] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert resumed[5] == entries[5]  # the very entry, from the checkpoint


def test_weights_that_are_not_finite_are_refused_by_name(run_folder, tmp_path, capsys):
    import torch
    from safetensors.torch import load_file, save_file

    from gemma_core.cli import main

    out, _ = copy_run(run_folder, tmp_path)
    weights = load_file(str(out / layout.WEIGHTS))
    name = sorted(weights)[0]
    weights[name] = torch.full_like(weights[name], float("nan"))
    save_file(weights, str(out / layout.WEIGHTS))
    for argv in (["generate", "--checkpoint", str(out), "--prompt", "KING"],
                 ["eval", "--checkpoint", str(out), "--dataset", str(out / layout.TRAIN_STREAM)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"tensor {name!r} holds NaN or infinite values; the weights are damaged" in err


@pytest.mark.parametrize("name", [layout.CONFIG, layout.TRAIN_LOG, layout.VOCAB, layout.CHECKPOINT])
def test_a_run_file_of_the_wrong_kind_stops_the_run_before_it_trains(run_folder, tmp_path, name):
    out, texts = copy_run(run_folder, tmp_path)
    entry = out / name
    if entry.is_dir():
        import shutil

        shutil.rmtree(entry)
        entry.write_text("a file where the checkpoint folder goes")
    else:
        entry.unlink()
        entry.mkdir()
    logs_before = (out / layout.TRAIN_STREAM).read_text()
    for settings in (lambda: TrainSettings.for_preset("nano", output_dir=str(out), train_texts=texts,
                                                      max_steps=3, overwrite=True, device="cpu"),):
        with pytest.raises(UserError, match="is not a (regular file|folder), but the run"):
            TrainingEngine(settings()).run()
    assert (out / layout.TRAIN_STREAM).read_text() == logs_before
