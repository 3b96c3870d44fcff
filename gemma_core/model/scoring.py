"""How likely a model finds each token of a text: what evaluation harnesses ask a served model.

``score_sequences`` runs token sequences through the model, several at a time, and returns
each token's log-probability given the tokens before it, the most likely alternatives at
every position, and the logits after the last token (from which one more token can be drawn
without a second pass).

Sequences of different lengths share a batch padded on the right: attention is causal, so a
position never sees the padding after it and its logits are those of the sequence alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from gemma_core.device import autocast
from gemma_core.model.model import Gemma3Model

# Logits held at once while scoring (positions x vocabulary), about 256 MiB in float32:
# a batch is cut so that it never asks for more, however long or many its sequences.
LOGITS_BUDGET = 64 * 1024 * 1024


@dataclass
class SequenceScores:
    """One sequence's scores; position ``i`` of each list is about token ``i + 1``."""

    token_logprobs: list[float]  # log p(token i+1 | tokens up to i), natural log
    top: list[list[tuple[int, float]]]  # the ``top_n`` likeliest tokens there, likeliest first
    next_logits: torch.Tensor  # (vocab,) float32: the model's logits after the last token

    def next_top(self, top_n: int) -> list[tuple[int, float]]:
        return _top(torch.log_softmax(self.next_logits, dim=-1), top_n)


def score_sequences(model: Gemma3Model, sequences: list[list[int]], top_n: int = 0,
                    dtype: torch.dtype = torch.float32) -> Iterator[SequenceScores]:
    """Scores of each sequence, in order, computed a batch at a time (a generator: a caller
    can take turns with other work between batches)."""
    for batch in _batches(sequences, model.cfg.vocab_size):
        yield from _score_batch(model, batch, top_n, dtype)


def _batches(sequences: list[list[int]], vocab_size: int) -> Iterator[list[list[int]]]:
    """Consecutive sequences whose padded logits fit ``LOGITS_BUDGET``."""
    batch: list[list[int]] = []
    longest = 0
    for ids in sequences:
        wider = max(longest, len(ids))
        if batch and (len(batch) + 1) * wider * vocab_size > LOGITS_BUDGET:
            yield batch
            batch, wider = [], len(ids)
        batch.append(ids)
        longest = wider
    if batch:
        yield batch


def _score_batch(model: Gemma3Model, batch: list[list[int]], top_n: int,
                 dtype: torch.dtype) -> list[SequenceScores]:
    device = model.embed_tokens.weight.device
    width = max(len(ids) for ids in batch)
    padded = torch.zeros(len(batch), width, dtype=torch.long, device=device)
    for row, ids in enumerate(batch):
        padded[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), autocast(device, dtype):
            logits = model(padded).float()
    finally:
        model.train(was_training)
    logprobs = torch.log_softmax(logits, dim=-1)
    scores = []
    for row, ids in enumerate(batch):
        length = len(ids)
        targets = padded[row, 1:length]
        chosen = logprobs[row, :length - 1].gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        top = [_top(logprobs[row, i], top_n) for i in range(length - 1)] if top_n else [[] for _ in range(length - 1)]
        scores.append(SequenceScores(chosen.tolist(), top, logits[row, length - 1].clone()))
    return scores


def _top(logprobs: torch.Tensor, n: int) -> list[tuple[int, float]]:
    if n <= 0:
        return []
    values, ids = torch.topk(logprobs, min(n, logprobs.shape[-1]))
    return list(zip(ids.tolist(), values.tolist()))
