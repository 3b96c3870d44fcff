"""The compiled training loss (the demo preset's default) computes what the plain model does."""

from __future__ import annotations

import torch
from conftest import tiny_config

from gemma_core.model.model import Gemma3Model
from gemma_core.train.compiled_loss import CompiledLoss


def test_compiled_loss_and_gradients_match_eager_mode_and_leave_the_model_plain():
    torch.manual_seed(0)
    model = Gemma3Model(tiny_config())
    ids = torch.randint(0, model.cfg.vocab_size, (2, 41))
    inputs, targets = ids[:, :-1], ids[:, 1:]

    eager = model.loss(inputs, targets)
    eager.backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)

    compiled = CompiledLoss(model)(inputs, targets)
    compiled.backward()
    assert torch.allclose(compiled, eager, atol=1e-5)
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad, expected[name], atol=1e-5, rtol=1e-4), name

    # The model's own modules are untouched: generation and evaluation run them as written.
    assert all(type(layer).__name__ == "DecoderLayer" for layer in model.layers)
    with torch.no_grad():
        logits = model(inputs)
        plain = torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1))
    assert torch.allclose(plain, eager, atol=1e-6)
