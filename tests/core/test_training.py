"""Training: the engine learns, writes the seed's outputs, resumes exactly, and fails clearly."""

from __future__ import annotations

import json
import threading

import pytest
from safetensors.torch import load_file

from gemma_core.errors import UserError
from gemma_core.run import layout, logs
from gemma_core.train import checkpoints
from gemma_core.train.engine import TrainingEngine
from gemma_core.run.events import EvalResult, RunState, StepMetrics
from gemma_core.train.optim import Schedule
from gemma_core.train.settings import TrainSettings
from tests.end_to_end.cli_in_process import run_cli

SEED_OUTPUTS = ("config.json", "model.safetensors", "training_log.json", "validation_log.json",
                "vocab.json", "loss_function.png")


def nano_settings(tmp_path, corpus, **overrides):
    train, val = corpus
    values = dict(preset="nano", output_dir=str(tmp_path / "run"), train_dataset_path=str(train),
                  val_dataset_path=str(val), cache_dir=str(tmp_path / "cache"), device="cpu",
                  dtype="fp32", max_steps=50, eval_iters=25, save_steps=25, seed=3)
    values.update(overrides)
    return TrainSettings.for_preset(**values)


def run_engine(settings, stop_at: int | None = None) -> TrainingEngine:
    engine = TrainingEngine(settings)
    if stop_at is not None:
        def stop_when_reached(event):
            if isinstance(event, StepMetrics) and event.step == stop_at:
                engine.stop(save=True)
        engine.subscribe(stop_when_reached)
    engine.start()
    assert engine.join(timeout=240)
    return engine


def test_nano_learns_and_writes_the_seed_outputs(tmp_path, corpus):
    engine = run_engine(nano_settings(tmp_path, corpus, max_steps=60))
    snapshot = engine.snapshot()
    assert snapshot.state is RunState.FINISHED, snapshot.error
    out = tmp_path / "run"
    for name in SEED_OUTPUTS:
        assert (out / name).is_file(), name
    train_log = json.loads((out / "training_log.json").read_text())
    val_log = json.loads((out / "validation_log.json").read_text())
    assert [e["step"] for e in train_log] == list(range(1, 61))
    first, last = train_log[0]["train_loss"], sum(e["train_loss"] for e in train_log[-5:]) / 5
    assert last < first - 1.0  # ln(4096) = 8.3 at start; it must clearly learn
    for key in ("step", "train_loss", "learning_rate", "gradient_accumulation_steps",
                "grad_norm", "tokens_seen", "tokens_per_s", "elapsed_s"):
        assert key in train_log[-1]
    assert [e["step"] for e in val_log] == [25, 50, 60]
    assert {"val_loss", "perplexity", "bits_per_byte"} <= set(val_log[0])
    config = json.loads((out / "config.json").read_text())
    assert config["vocab_size"] == 4096 and config["n_layers"] == 2  # seed's flat keys
    assert config["training"]["max_steps"] == 60 and config["tokenizer"]["name"] == "shakespeare-4k"
    weights = load_file(str(out / "model.safetensors"))
    assert "embed_tokens.weight" in weights
    vocab = json.loads((out / "vocab.json").read_text(encoding="utf-8"))
    assert len(vocab) == 4096 and sorted(vocab.values()) == list(range(4096))

    result = run_cli("generate", "--checkpoint", str(out), "--prompt", "KING", "--max_new_tokens", "10", "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("KING") and len(result.stdout) > len("KING\n")


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_resume_reproduces_an_uninterrupted_run_exactly(tmp_path, corpus, optimizer):
    # Muon's momentum is still warming up at step 12, so its schedule must resume exactly too.
    whole = run_engine(nano_settings(tmp_path / "a", corpus, max_steps=30, eval_iters=10, optimizer=optimizer))
    assert whole.snapshot().state is RunState.FINISHED
    stopped = run_engine(nano_settings(tmp_path / "b", corpus, max_steps=30, eval_iters=10,
                                       optimizer=optimizer), stop_at=12)
    assert stopped.exit_reason == "stopped"
    resumed = run_engine(TrainSettings.for_resume(tmp_path / "b" / "run", cache_dir=str(tmp_path / "cache"),
                                                  device="cpu", dtype="fp32"))
    assert resumed.snapshot().state is RunState.FINISHED, resumed.snapshot().error

    def losses(folder):
        return [(e["step"], e["train_loss"]) for e in
                json.loads((folder / "run" / "training_log.json").read_text())]

    assert losses(tmp_path / "b") == losses(tmp_path / "a")  # bit for bit, no step missing or doubled
    val_a = json.loads((tmp_path / "a" / "run" / "validation_log.json").read_text())
    val_b = json.loads((tmp_path / "b" / "run" / "validation_log.json").read_text())
    assert [e["val_loss"] for e in val_b] == [e["val_loss"] for e in val_a]
    other = "muon" if optimizer == "adamw" else "adamw"  # the checkpoint holds one optimiser's state
    with pytest.raises(UserError, match=rf"--optimizer {other} differs from the run's own \({optimizer}\)"):
        TrainSettings.for_resume(tmp_path / "b" / "run", optimizer=other)


def test_a_crash_while_saving_leaves_the_previous_checkpoint_loadable(tmp_path, corpus, monkeypatch):
    engine = run_engine(nano_settings(tmp_path, corpus, max_steps=10))
    out = tmp_path / "run"
    before = json.loads((out / "checkpoint" / "state.json").read_text())

    real_save = checkpoints.save_file

    def crash_half_way(tensors, path, *args, **kwargs):
        real_save(dict(list(tensors.items())[:2]), path)  # a partial file, then the "crash"
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(checkpoints, "save_file", crash_half_way)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save_checkpoint(out, engine.model.state_dict(), {}, {"step": 999})
    monkeypatch.undo()
    model_state, _, state = checkpoints.load_checkpoint(out)
    assert state["step"] == before["step"] == 10
    assert set(model_state) == set(load_file(str(out / "checkpoint" / "model.safetensors")))


def test_pause_and_resume_commands_hold_the_step_counter(tmp_path, corpus):
    settings = nano_settings(tmp_path, corpus, max_steps=100_000, eval_iters=10_000, save_steps=10_000)
    engine = TrainingEngine(settings)
    reached = threading.Event()
    engine.subscribe(lambda e: reached.set() if isinstance(e, StepMetrics) and e.step >= 3 else None)
    engine.start()
    assert reached.wait(120)
    engine.pause()
    for _ in range(100):
        if engine.snapshot().state is RunState.PAUSED:
            break
        threading.Event().wait(0.05)
    held = engine.snapshot().step
    threading.Event().wait(0.5)
    assert engine.snapshot().step == held
    engine.unpause()
    engine.eval_now()
    for _ in range(200):
        if engine.snapshot().step > held + 2 and engine.snapshot().eval_history:
            break
        threading.Event().wait(0.05)
    assert engine.snapshot().step > held
    assert isinstance(engine.snapshot().eval_history[-1], EvalResult)
    engine.stop(save=True)
    assert engine.join(timeout=60)
    assert layout.has_checkpoint(tmp_path / "run")


def test_learning_rate_schedule():
    schedule = Schedule(max_steps=1100, warmup_steps=100, kind="cosine", min_ratio=0.1)

    def lr_at(step):  # a peak of 1e-3 decaying to 1e-4
        return 1e-3 * schedule.factor(step)

    assert lr_at(0) == pytest.approx(1e-5)
    assert lr_at(99) == pytest.approx(1e-3)  # warmup ends at the peak
    assert lr_at(100) == pytest.approx(1e-3)
    assert lr_at(600) == pytest.approx(5.5e-4)  # half way: the mean of peak and floor
    assert lr_at(1100) == pytest.approx(1e-4)
    values = [lr_at(s) for s in range(100, 1101)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # it decays, never rises


def test_min_lr_above_learning_rate_is_rejected():
    with pytest.raises(UserError, match="--min_lr 0.0005 is above --learning_rate 0.0001"):
        TrainSettings.for_preset("seed-270m", learning_rate=1e-4, min_lr=5e-4)


def test_seed_preset_keeps_the_seed_defaults_with_its_bugs_fixed():
    s = TrainSettings.for_preset("seed-270m")
    assert (s.learning_rate, s.max_steps, s.warmup_steps, s.eval_iters) == (1e-4, 10_000, 100, 200)
    assert (s.gradient_accumulation_steps, s.train_batch_size, s.max_length, s.stride) == (4, 1, 2048, 2048)
    assert s.betas == (0.9, 0.95) and s.seed == 42 and s.tiktoken_encoder_name == "gpt2"
    assert s.resolved_min_lr == pytest.approx(1e-5)  # a tenth of the learning rate
    assert s.add_eos_between_documents is True


def test_cli_parses_the_seed_flags(tmp_path):
    from gemma_core.cli import build_parser
    from gemma_core.cli.train import settings_from_args

    args = build_parser().parse_args([
        "train", "--preset", "seed-270m", "--betas", "0.8", "0.99", "--no-add_eos_between_documents",
        "--learning_rate", "3e-4", "--output_dir", str(tmp_path)])
    s = settings_from_args(args)
    assert s.betas == (0.8, 0.99) and s.add_eos_between_documents is False
    assert s.learning_rate == 3e-4 and s.max_steps == 10_000


def test_toml_config_sits_between_preset_and_flags(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('preset = "nano"\nmax_steps = 77\nlearning_rate = 0.01\n[model]\nemb_dim = 32\n')
    s = TrainSettings.for_preset(config_file=str(config), learning_rate=0.02)
    assert (s.preset, s.max_steps, s.learning_rate) == ("nano", 77, 0.02)
    assert s.model_overrides == {"emb_dim": 32}
    config.write_text("max_stepz = 3\n")
    with pytest.raises(UserError, match="unknown key 'max_stepz'"):
        TrainSettings.for_preset(config_file=str(config))


def test_tokenizer_train_command_round_trips(tmp_path, corpus):
    train, _ = corpus
    out = tmp_path / "mine.tiktoken"
    result = run_cli("tokenizer", "train", "--input", str(train), "--vocab_size", "600", "--output", str(out))
    assert result.returncode == 0, result.stderr
    from gemma_core.tokenizers.tokenizer import load_tokenizer
    tok = load_tokenizer(str(out))
    assert tok.n_vocab == 600
    text = "O Romeo, Romeo! wherefore art thou Romeo?"
    assert tok.decode(tok.encode(text)) == text
    assert out.read_text().splitlines()[0].split()[1] == "0"  # text ranks, not a pickle


def test_vocab_json_has_no_collisions_for_gpt2(tmp_path):
    from gemma_core.tokenizers.tokenizer import load_tokenizer

    tok = load_tokenizer("gpt2")
    vocab = logs.vocab_mapping(tok)
    assert len(vocab) == 50_257
    assert vocab["<|endoftext|>"] == 50_256
    assert vocab["Ġthe"] == 262  # GPT-2's own vocab.json spelling


def test_disk_full_while_saving_stops_the_run_with_the_space_needed(tmp_path, corpus, monkeypatch):
    real_save = checkpoints.save_file
    saves = []

    def fill_the_disk_from_the_second_save(tensors, path, *args, **kwargs):
        saves.append(path)
        if len(saves) <= 2:  # the first checkpoint: weights and optimizer state
            return real_save(tensors, path, *args, **kwargs)
        with open(path, "wb") as f:
            f.write(b"\0" * 1000)  # part of the file, then the device is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoints, "save_file", fill_the_disk_from_the_second_save)
    engine = run_engine(nano_settings(tmp_path, corpus, max_steps=50, save_steps=5, eval_iters=100,
                                      warmup_steps=2))
    error = engine.snapshot().error
    assert engine.exit_reason == "failed"
    assert "disk full while saving a checkpoint" in error and "MiB free" in error
    assert "previous checkpoint is intact" in error
    monkeypatch.undo()
    out = tmp_path / "run"
    _, _, state = checkpoints.load_checkpoint(out)
    assert state["step"] == 5
    assert not list(out.glob(".checkpoint.building*"))
    resumed = run_engine(nano_settings(tmp_path, corpus, max_steps=7, warmup_steps=2, resume=True))
    assert resumed.exit_reason == "completed"
    assert [e["step"] for e in json.loads((out / "training_log.json").read_text())] == list(range(1, 8))
