"""The chunked linear cross-entropy is the plain loss, computed a chunk of tokens at a time:
the same value and the same gradients (for the hidden states and the head's weight, tied or
not), ignored targets included, in float32 and under bfloat16 autocast."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gemma_core.model.chunked_loss import chunked_linear_cross_entropy
from gemma_core.model.model import Gemma3Model
from tests.conftest import tiny_config


def plain(hidden, weight, targets, ignore_index=-100):
    logits = (hidden @ weight.t()).float()
    return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=ignore_index)


def inputs(seed=0, batch=3, length=37, dim=24, vocab=101):
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(batch, length, dim, generator=generator, requires_grad=True)
    weight = (0.3 * torch.randn(vocab, dim, generator=generator)).requires_grad_()
    targets = torch.randint(0, vocab, (batch, length), generator=generator)
    return hidden, weight, targets


@pytest.mark.parametrize("chunk_tokens", [1, 16, 111, 4096])
def test_value_and_gradients_equal_the_plain_loss(chunk_tokens):
    hidden, weight, targets = inputs()
    targets[0, :5] = -100  # ignored positions (padding) count for nothing
    expected = plain(hidden, weight, targets)
    expected.backward()
    want_h, want_w = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    got = chunked_linear_cross_entropy(hidden, weight, targets, chunk_tokens=chunk_tokens)
    (2.5 * got).backward()  # the upstream gradient scales both
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(hidden.grad, 2.5 * want_h, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weight.grad, 2.5 * want_w, rtol=1e-5, atol=1e-6)


def test_under_bfloat16_autocast_it_matches_the_plain_loss_within_bfloat16_noise():
    hidden, weight, targets = inputs(seed=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = F.cross_entropy(F.linear(hidden, weight).float().view(-1, 101), targets.reshape(-1))
        got = chunked_linear_cross_entropy(hidden, weight, targets, chunk_tokens=20)
    assert abs(got.item() - expected.item()) < 1e-2
    got.backward()
    assert hidden.grad.dtype == torch.float32 and weight.grad.dtype == torch.float32


@pytest.mark.parametrize("tied", [True, False])
def test_the_model_trains_the_same_with_either_loss(tied):
    torch.manual_seed(0)
    model = Gemma3Model(tiny_config(tie_embeddings=tied))
    ids = torch.randint(0, 320, (2, 40))
    targets = torch.roll(ids, -1, dims=1)
    grads = []
    for chunk in (None, 7):
        model.zero_grad()
        loss = model.loss(ids, targets, chunk_tokens=chunk)
        loss.backward()
        grads.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (plain_loss, plain_grads), (chunked_loss, chunked_grads) = grads
    torch.testing.assert_close(chunked_loss, plain_loss, rtol=1e-6, atol=1e-6)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(chunked_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_a_chunk_must_hold_a_token():
    hidden, weight, targets = inputs()
    with pytest.raises(ValueError, match="chunk_tokens must be 1 or more"):
        chunked_linear_cross_entropy(hidden, weight, targets, chunk_tokens=0)
