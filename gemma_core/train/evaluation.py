"""Held-out loss, perplexity and bits per byte: one loop for the trainer and ``gemma-core eval``.

The loss is summed over the logits a chunk of positions at a time, so the
float32 logits never exist for a whole batch at once: at 2,048 tokens and
Gemma's 262,144-token vocabulary they would take 2 GiB per window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F

from gemma_core.data.windows import TokenWindows
from gemma_core.device import autocast
from gemma_core.model.model import Gemma3Model

# Float32 logits held at once. The demo's evaluation batches (16 x 256 x 4,096)
# fit in one chunk; the seed's (2,048 x 50,257) take two.
LOGITS_CHUNK_BYTES = 256 << 20


@dataclass(frozen=True)
class HeldOutScore:
    loss: float  # mean nats per target token
    perplexity: float
    bits_per_byte: float  # exact: summed bits over the UTF-8 bytes the targets stand for
    tokens: int


def logits_chunk_rows(vocab_size: int) -> int:
    return max(1, LOGITS_CHUNK_BYTES // (4 * vocab_size))


def summed_loss(model: Gemma3Model, input_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy summed over every target, the head applied chunk by chunk."""
    normed = model.final_norm(model.hidden_states(input_ids)).flatten(0, 1)
    targets = targets.reshape(-1)
    rows = logits_chunk_rows(model.cfg.vocab_size)
    total = torch.zeros((), dtype=torch.float32, device=normed.device)
    for start in range(0, normed.shape[0], rows):
        logits = model.lm_head(normed[start:start + rows]).float()
        total = total + F.cross_entropy(logits, targets[start:start + rows], reduction="sum")
    return total


@torch.no_grad()
def score_windows(model: Gemma3Model, windows: TokenWindows, batches: Iterable[Sequence[int]],
                  byte_lengths: torch.Tensor, device: torch.device, dtype: torch.dtype) -> HeldOutScore:
    was_training = model.training
    model.eval()
    nats, tokens, n_bytes = 0.0, 0, 0
    for indices in batches:
        inputs, targets = windows.batch(indices)
        with autocast(device, dtype):
            nats += float(summed_loss(model, inputs.to(device), targets.to(device)))
        tokens += targets.numel()
        n_bytes += int(byte_lengths[targets.reshape(-1)].sum())
    model.train(was_training)
    loss = nats / max(tokens, 1)
    return HeldOutScore(loss, math.exp(min(loss, 50.0)), nats / math.log(2) / max(n_bytes, 1), tokens)
