"""The model's tensors as files store them: by name, with a tied head stored once.

Gemma ties its LM head to the token embedding (one matrix, used twice). In a
state dict the tied head appears under both names; files keep only the
embedding, as transformers does, and loading puts the head back.
"""

from __future__ import annotations

import torch

from gemma_core.model.config import GemmaConfig

EMBEDDING = "embed_tokens.weight"
HEAD = "lm_head.weight"


def stored_tensors(state: dict[str, torch.Tensor], cfg: GemmaConfig) -> dict[str, torch.Tensor]:
    """``state`` as a file holds it: a tied head left out."""
    if not cfg.tie_embeddings:
        return dict(state)
    return {name: tensor for name, tensor in state.items() if name != HEAD}


def full_state(stored: dict[str, torch.Tensor], cfg: GemmaConfig) -> dict[str, torch.Tensor]:
    """A file's tensors as the model's state dict: a tied (or missing) head is the embedding."""
    state = dict(stored)
    if (cfg.tie_embeddings or HEAD not in state) and EMBEDDING in state:
        state[HEAD] = state[EMBEDDING]
    return state
