"""A lower bound on a training step's memory, so a batch that cannot fit is refused up front.

On a CPU an oversized batch does not raise an error: the kernel's out-of-memory
killer ends the process, or the machine swaps to a halt. So before the first
step the trainer compares this estimate with the memory actually available and
refuses a batch that cannot fit, naming what to lower.

The estimate counts only what must exist: fp32 weights, gradients and AdamW's
two moments (16 bytes per parameter), and the activations autograd keeps for the
backward pass, per token and layer (the residual stream and norms in fp32, the
projections and the GeGLU in the compute dtype), plus the float32 logits and
their gradient. Real peaks are higher, never lower.
"""

from __future__ import annotations

import torch

from gemma_core.model.config import GemmaConfig


def training_bytes(cfg: GemmaConfig, n_parameters: int, batch: int, length: int,
                   dtype: torch.dtype) -> int:
    width = 2 if dtype == torch.bfloat16 else 4
    attention = (2 * cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim  # q, k, v, output
    per_token_layer = 4 * 4 * cfg.emb_dim + width * (attention + 3 * cfg.hidden_dim)
    per_token = cfg.n_layers * per_token_layer + 2 * 4 * cfg.vocab_size
    return 16 * n_parameters + batch * length * per_token


def evaluation_bytes(cfg: GemmaConfig, n_parameters: int, batch: int, length: int,
                     dtype: torch.dtype, logits_chunk_rows: int) -> int:
    """A lower bound on evaluating a batch beside a training run's state.

    The weights, gradients' space and AdamW's moments stay allocated; without a
    backward pass activations exist for about one layer at a time, and the
    float32 logits (and their log-softmax) for one chunk of positions.
    """
    width = 2 if dtype == torch.bfloat16 else 4
    attention = (2 * cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim
    per_token = 4 * 4 * cfg.emb_dim + width * (attention + 3 * cfg.hidden_dim)
    logits = min(batch * length, logits_chunk_rows) * cfg.vocab_size * 4 * 2
    return 16 * n_parameters + batch * length * per_token + logits
