"""Held-out loss, perplexity and bits per byte: one loop for the trainer and ``gemma-core eval``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch

from gemma_core.data import TokenWindows
from gemma_core.device import autocast
from gemma_core.model.model import Gemma3Model


@dataclass(frozen=True)
class HeldOutScore:
    loss: float  # mean nats per target token
    perplexity: float
    bits_per_byte: float  # exact: summed bits over the UTF-8 bytes the targets stand for
    tokens: int


@torch.no_grad()
def score_windows(model: Gemma3Model, windows: TokenWindows, batches: Iterable[Sequence[int]],
                  byte_lengths: torch.Tensor, device: torch.device, dtype: torch.dtype) -> HeldOutScore:
    was_training = model.training
    model.eval()
    nats, tokens, n_bytes = 0.0, 0, 0
    for indices in batches:
        inputs, targets = windows.batch(indices)
        with autocast(device, dtype):
            logits = model(inputs.to(device)).float()
        nats += float(torch.nn.functional.cross_entropy(
            logits.view(-1, logits.shape[-1]), targets.to(device).reshape(-1), reduction="sum"))
        tokens += targets.numel()
        n_bytes += int(byte_lengths[targets.reshape(-1)].sum())
    model.train(was_training)
    loss = nats / max(tokens, 1)
    return HeldOutScore(loss, math.exp(min(loss, 50.0)), nats / math.log(2) / max(n_bytes, 1), tokens)
