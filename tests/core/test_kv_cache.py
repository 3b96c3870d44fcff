"""Decoding with the KV cache gives the logits a full forward pass gives."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

from gemma_core.model.attention import available_kernels
from gemma_core.model.model import Gemma3Model


def randomised(model):
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.3)
    return model.eval()


@pytest.mark.parametrize("kernel", available_kernels("cpu"))
@pytest.mark.parametrize("n_kv_groups", [1, 2])
def test_token_by_token_decode_equals_full_forward_far_past_the_window(kernel, n_kv_groups):
    model = randomised(Gemma3Model(tiny_config(n_kv_groups=n_kv_groups)))
    model.set_attention_kernel(kernel)
    window = model.cfg.sliding_window
    ids = torch.randint(0, model.cfg.vocab_size, (2, 4 * window + 3))  # >= 3x the window
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache(capacity=4)  # small on purpose: the full-layer buffer must grow
        prompt = 5
        steps = [model(ids[:, :prompt], cache)]
        steps += [model(ids[:, t:t + 1], cache) for t in range(prompt, ids.shape[1])]
    decoded = torch.cat(steps, dim=1)
    assert (decoded - full).abs().max().item() <= 1e-4


def test_chunked_prefill_after_the_window_has_filled():
    model = randomised(Gemma3Model(tiny_config()))
    window = model.cfg.sliding_window
    ids = torch.randint(0, model.cfg.vocab_size, (1, 5 * window))
    cuts = [0, window - 3, window + 1, 2 * window + 7, 2 * window + 8, 5 * window]
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache()
        chunks = [model(ids[:, a:b], cache) for a, b in zip(cuts, cuts[1:])]
    assert (torch.cat(chunks, dim=1) - full).abs().max().item() <= 1e-4


def test_sliding_layers_keep_only_the_window():
    model = randomised(Gemma3Model(tiny_config()))
    window = model.cfg.sliding_window
    ids = torch.randint(0, model.cfg.vocab_size, (1, 3 * window))
    with torch.no_grad():
        cache = model.new_cache()
        model(ids[:, :1], cache)
        for t in range(1, ids.shape[1]):
            model(ids[:, t:t + 1], cache)
    sliding, full = cache.layers[0], cache.layers[1]
    assert sliding.keys.shape[2] == window
    assert full.length == 3 * window
    assert cache.position == 3 * window


@pytest.mark.parametrize("n_kv_groups", [1, 2])
def test_static_cache_decode_equals_full_forward_far_past_the_window(n_kv_groups):
    """The fixed-shape cache of compiled decoding: position is a tensor, slots are masked."""
    model = randomised(Gemma3Model(tiny_config(n_kv_groups=n_kv_groups)))
    window = model.cfg.sliding_window
    ids = torch.randint(0, model.cfg.vocab_size, (2, 4 * window + 3))
    with torch.no_grad():
        full = model(ids)
        cache = model.new_static_cache(capacity=ids.shape[1] + 5, batch=2)
        prompt = 5
        steps = [model(ids[:, :prompt], cache)]
        steps += [model(ids[:, t:t + 1], cache) for t in range(prompt, ids.shape[1])]
    assert int(cache.position) == ids.shape[1]
    assert (torch.cat(steps, dim=1) - full).abs().max().item() <= 1e-4


def test_a_reset_static_cache_forgets_the_previous_text():
    model = randomised(Gemma3Model(tiny_config()))
    first, second = (torch.randint(0, model.cfg.vocab_size, (1, 40)) for _ in range(2))
    with torch.no_grad():
        cache = model.new_static_cache(capacity=64)
        model(first, cache)
        cache.reset()
        reused = model(second[:, :30], cache)
    assert (reused - model(second[:, :30])).abs().max().item() <= 1e-4
