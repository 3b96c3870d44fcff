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


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """A sharded (FSDP2) tensor gathered whole; any other tensor as it is."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def local_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a sharded tensor; any other tensor as it is."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def shard_like(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``full`` sharded the way ``like`` is (loading a checkpoint under FSDP2); else ``full``."""
    if not hasattr(like, "device_mesh"):
        return full
    from torch.distributed.tensor import distribute_tensor
    return distribute_tensor(full.to(like.device), like.device_mesh, like.placements)
