"""Evaluation and decoding hold float32 logits only where needed; MFU and memory checks are honest."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_config
from gemma_core.errors import UserError
from gemma_core.model.generation import SamplingParams, generate_tokens
from gemma_core.model.model import Gemma3Model
from gemma_core.train import evaluation, flops, setup
from gemma_core.train.settings import TrainSettings


def head_inputs(model: Gemma3Model) -> list[tuple[int, ...]]:
    """Record the shape of every input the LM head sees."""
    seen: list[tuple[int, ...]] = []
    model.lm_head.register_forward_hook(lambda module, args, out: seen.append(tuple(args[0].shape)))
    return seen


def test_the_held_out_loss_is_summed_a_chunk_of_positions_at_a_time(monkeypatch):
    torch.manual_seed(0)
    cfg = tiny_config()
    model = Gemma3Model(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (3, 40))
    targets = torch.randint(0, cfg.vocab_size, (3, 40))
    with torch.no_grad():
        reference = F.cross_entropy(model(ids).float().flatten(0, 1), targets.flatten(), reduction="sum")
    monkeypatch.setattr(evaluation, "LOGITS_CHUNK_BYTES", 4 * cfg.vocab_size * 16)  # 16 positions
    seen = head_inputs(model)
    with torch.no_grad():
        chunked = evaluation.summed_loss(model, ids, targets)
    assert torch.allclose(chunked, reference, rtol=1e-5)
    assert max(shape[0] for shape in seen) == 16 and len(seen) == 8  # 120 positions, 16 at a time


def test_decoding_applies_the_head_to_the_last_position_only():
    torch.manual_seed(0)
    model = Gemma3Model(tiny_config()).eval()
    seen = head_inputs(model)
    params = SamplingParams(max_new_tokens=3, temperature=0, stop_at_eos=False)
    list(generate_tokens(model, list(range(1, 30)), params))
    assert seen and all(shape[:2] == (1, 1) for shape in seen)  # prefill included


def test_mfu_counts_every_device_and_the_training_precision(monkeypatch):
    assert flops.model_flops_utilisation(1000.0, 6e9, 1e15, devices=1) == pytest.approx(0.006)
    assert flops.model_flops_utilisation(1000.0, 6e9, 1e15, devices=8) == pytest.approx(0.00075)
    assert flops.model_flops_utilisation(1000.0, 6e9, None) is None
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    cuda = torch.device("cuda", 0)
    assert flops.device_peak_flops(cuda, torch.bfloat16) == 989e12
    assert flops.device_peak_flops(cuda, torch.float32) == 67e12
    assert flops.device_peak_flops(torch.device("cpu"), torch.float32) is None


def test_a_validation_batch_that_cannot_fit_is_refused_before_training(monkeypatch):
    settings = TrainSettings.for_preset("seed-270m", val_batch_size=64)
    cfg = setup.preset("seed-270m")
    n_parameters = 164_654_976
    train_need = setup.training_bytes(cfg, n_parameters, 1, 2048, torch.bfloat16)
    monkeypatch.setattr(setup, "available_bytes", lambda device: train_need + 2**30)
    with pytest.raises(UserError, match="--val_batch_size 64 x --max_length 2048 needs at least"):
        setup._check_memory(settings, cfg, n_parameters, torch.bfloat16, torch.device("cpu"), "cpu")
    setup._check_memory(TrainSettings.for_preset("seed-270m"), cfg, n_parameters, torch.bfloat16,
                        torch.device("cpu"), "cpu")  # the seed's own batch fits
