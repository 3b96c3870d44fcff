"""The optimisers and schedules: Muon for the decoder's matrices, AdamW for the rest, and the
learning rates both follow; their state survives a checkpoint, and bad choices are refused."""

from __future__ import annotations


import pytest
import torch

from gemma_core.errors import UserError
from gemma_core.model.model import Gemma3Model
from gemma_core.model.presets import preset
from gemma_core.train.checkpoints import optimizer_state_tensors, restore_optimizer_state
from gemma_core.train.optim import Schedule, build_optimizer, describe_optimizer
from gemma_core.train.settings import TrainSettings
from tests.end_to_end.cli_in_process import run_cli

CPU = torch.device("cpu")


def nano_model(seed: int = 0) -> Gemma3Model:
    torch.manual_seed(seed)
    return Gemma3Model(preset("nano"))


def muon_optimizer(model: Gemma3Model):
    return build_optimizer(model, 3e-3, 0.1, (0.9, 0.95), CPU, optimizer="muon", muon_learning_rate=0.02)


def take_steps(model: Gemma3Model, optimizer, steps: int, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        ids = torch.randint(0, preset("nano").vocab_size, (2, 17), generator=generator)
        model.loss(ids[:, :-1], ids[:, 1:]).backward()
        optimizer.step()
        optimizer.zero_grad()


# ------------------------------------------------------------- parameter groups
def test_muon_takes_the_decoder_matrices_and_adamw_everything_else():
    model = nano_model()
    optimizer = muon_optimizer(model)
    owner = {id(p): name for name, part in optimizer.parts.items()
             for group in part.param_groups for p in group["params"]}
    for name, param in model.named_parameters():
        inside_a_layer = name.startswith("layers.")
        expected = "muon" if inside_a_layer and param.dim() == 2 else "adamw"
        assert owner[id(param)] == expected, name
    muon_names = {name for name, p in model.named_parameters() if owner[id(p)] == "muon"}
    assert any(".q_proj." in n or "q_proj" in n for n in muon_names)
    assert not any("norm" in n for n in muon_names)
    assert "embed_tokens.weight" not in muon_names  # the embedding, which is also the tied head
    assert type(optimizer.parts["muon"]).__name__ == "Muon"  # torch's own
    # Every parameter is trained, once: the tied head is the embedding, not a second copy.
    assert sorted(owner) == sorted({id(p) for p in model.parameters()})


def test_adamw_alone_keeps_decay_off_the_norms():
    model = nano_model()
    optimizer = build_optimizer(model, 3e-3, 0.1, (0.9, 0.95), CPU)
    assert list(optimizer.parts) == ["adamw"]
    decay = {id(p): g["weight_decay"] for g in optimizer.parts["adamw"].param_groups for p in g["params"]}
    for name, param in model.named_parameters():
        assert decay[id(param)] == (0.1 if param.dim() >= 2 else 0.0), name


def test_each_optimiser_follows_the_schedule_from_its_own_peak():
    model = nano_model()
    optimizer = muon_optimizer(model)
    schedule = Schedule(max_steps=1000, warmup_steps=10, kind="cosine", min_ratio=0.1)
    rates = optimizer.apply_schedule(schedule, 4, muon_momentum=0.95)
    assert rates == pytest.approx({"adamw": 3e-3 * 0.5, "muon": 0.02 * 0.5})
    rates = optimizer.apply_schedule(schedule, 1000, muon_momentum=0.95)
    assert rates == pytest.approx({"adamw": 3e-4, "muon": 2e-3})  # both end at a tenth
    muon_group = optimizer.parts["muon"].param_groups[0]
    assert muon_group["lr"] == pytest.approx(2e-3) and muon_group["momentum"] == pytest.approx(0.95)


def test_muon_momentum_rises_from_085_over_its_warmup():
    schedule = Schedule(max_steps=3000, warmup_steps=50)
    assert schedule.muon_momentum(0, 0.95) == pytest.approx(0.85)
    assert schedule.muon_momentum(150, 0.95) == pytest.approx(0.90)
    assert schedule.muon_momentum(300, 0.95) == schedule.muon_momentum(1000, 0.95) == pytest.approx(0.95)
    short = Schedule(max_steps=1000, warmup_steps=5)  # a shorter run warms up over its first fifth
    assert short.muon_momentum(100, 0.95) == pytest.approx(0.90)
    assert short.muon_momentum(200, 0.95) == pytest.approx(0.95)


# --------------------------------------------------------------------- schedule
def test_wsd_holds_the_peak_then_decays_linearly_over_its_fraction():
    wsd = Schedule(max_steps=1000, warmup_steps=100, kind="wsd", decay_fraction=0.2, min_ratio=0.1)
    assert wsd.factor(0) == pytest.approx(0.01)
    assert wsd.factor(99) == pytest.approx(1.0)
    assert wsd.factor(500) == wsd.factor(799) == 1.0  # stable until the last fifth
    assert wsd.factor(900) == pytest.approx(0.55)  # half way down the line
    assert wsd.factor(1000) == pytest.approx(0.1)
    factors = [wsd.factor(s) for s in range(800, 1001)]
    assert all(a > b for a, b in zip(factors, factors[1:]))
    longer = Schedule(max_steps=1000, warmup_steps=100, kind="wsd", decay_fraction=0.5, min_ratio=0.1)
    assert longer.factor(499) == 1.0 and longer.factor(600) < 1.0


def test_cosine_is_unchanged_by_the_decay_fraction():
    a = Schedule(max_steps=1000, warmup_steps=100, kind="cosine", decay_fraction=0.2)
    b = Schedule(max_steps=1000, warmup_steps=100, kind="cosine", decay_fraction=0.7)
    assert [a.factor(s) for s in range(0, 1001, 50)] == [b.factor(s) for s in range(0, 1001, 50)]


# ------------------------------------------------------------- state round trip
@pytest.mark.parametrize("kind", ["adamw", "muon"])
def test_optimiser_state_survives_a_checkpoint_and_steps_on_identically(kind):
    model = nano_model()
    optimizer = build_optimizer(model, 3e-3, 0.1, (0.9, 0.95), CPU, optimizer=kind)
    take_steps(model, optimizer, 3)
    names = {id(p): name for name, p in model.named_parameters()}
    # As written to disk and read back: copies, never the live buffers.
    saved = {key: value.clone() for key, value in optimizer_state_tensors(optimizer, names).items()}
    if kind == "muon":
        assert any(key.endswith(".momentum_buffer") for key in saved)
    assert any(key.endswith(".exp_avg_sq") for key in saved)  # AdamW's, in both cases

    copy = nano_model()
    copy.load_state_dict(model.state_dict())
    restored = build_optimizer(copy, 3e-3, 0.1, (0.9, 0.95), CPU, optimizer=kind)
    restore_optimizer_state(restored, saved, {id(p): name for name, p in copy.named_parameters()})
    take_steps(model, optimizer, 2, seed=9)
    take_steps(copy, restored, 2, seed=9)
    for (name, a), b in zip(model.named_parameters(), copy.parameters()):
        assert torch.equal(a, b), name


# -------------------------------------------------------------------- refusals
def test_muon_is_refused_under_fsdp_in_one_line():
    with pytest.raises(UserError, match="--optimizer muon does not run under --fsdp"):
        TrainSettings.for_preset("nano", optimizer="muon", fsdp=True)


@pytest.mark.parametrize("overrides, message", [
    ({"optimizer": "sgd"}, "--optimizer 'sgd' is not an optimizer; choose adamw or muon"),
    ({"schedule": "linear"}, "--schedule 'linear' is not a schedule; choose cosine or wsd"),
    ({"decay_fraction": 0.0}, "--decay_fraction must be above 0"),
    ({"muon_learning_rate": -1.0}, "--muon_learning_rate must be positive"),
    ({"muon_momentum": 1.0}, r"--muon_momentum must be in \[0, 1\)"),
])
def test_bad_optimiser_settings_are_named(overrides, message):
    with pytest.raises(UserError, match=message):
        TrainSettings.for_preset("nano", **overrides)


def test_toml_chooses_the_optimiser_and_schedule(tmp_path):
    config = tmp_path / "muon.toml"
    config.write_text('optimizer = "muon"\nmuon_learning_rate = 0.03\nschedule = "wsd"\n'
                      'decay_fraction = 0.3\n', encoding="utf-8")
    settings = TrainSettings.for_preset("nano", config_file=config)
    assert (settings.optimizer, settings.muon_learning_rate) == ("muon", 0.03)
    assert (settings.lr_schedule.kind, settings.lr_schedule.decay_fraction) == ("wsd", 0.3)
    bad = tmp_path / "bad.toml"
    bad.write_text('muon_learning_rate = "fast"\n', encoding="utf-8")
    with pytest.raises(UserError, match="'muon_learning_rate' must be a number"):
        TrainSettings.for_preset("nano", config_file=bad)


def test_the_run_log_names_the_optimisers_and_their_peaks():
    model = nano_model()
    settings = TrainSettings.for_preset("nano", optimizer="muon", muon_learning_rate=0.02)
    line = describe_optimizer(settings, muon_optimizer(model))
    assert line.startswith("optimizer: Muon at 0.02 for the decoder's weight matrices")
    assert "AdamW at 0.003" in line and "cosine schedule" in line


def test_train_help_lists_the_optimiser_and_schedule_flags():
    done = run_cli("train", "--help")
    assert done.returncode == 0
    for flag in ("--optimizer", "--muon_learning_rate", "--muon_momentum", "--schedule", "--decay_fraction"):
        assert flag in done.stdout, flag
