"""Cross-entropy of a linear head that never holds every logit at once.

The plain loss builds a (tokens x vocabulary) float32 logit tensor: for the seed config at
16 x 2,048 tokens and a 50,257-word vocabulary that is 6.6 GB, kept for the backward pass.
Here the tokens go through the head a chunk at a time; each chunk's logits become its loss
and, at once, its gradients (softmax minus the one-hot target), and are dropped. What is kept
for the backward pass is the gradients themselves, the size of the hidden states and of the
head's weight. The arithmetic is the plain loss's: the head's matrix product in the dtype
autocast gives it (else the inputs'), the softmax and the loss in float32.
"""

from __future__ import annotations

import torch

DEFAULT_CHUNK_TOKENS = 4096


def _compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    device = tensor.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return tensor.dtype


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                ignore_index: int, chunk_tokens: int) -> torch.Tensor:
        dtype = _compute_dtype(hidden)
        with torch.autocast(hidden.device.type, enabled=False):
            flat = hidden.reshape(-1, hidden.shape[-1])
            labels = targets.reshape(-1)
            w = weight.to(dtype)
            counted = (labels != ignore_index)
            n_counted = counted.sum().clamp(min=1).to(torch.float32)
            loss_sum = torch.zeros((), dtype=torch.float32, device=hidden.device)
            grad_hidden = torch.empty_like(flat)
            grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
            for start in range(0, flat.shape[0], chunk_tokens):
                rows = flat[start:start + chunk_tokens].to(dtype)
                chunk_labels = labels[start:start + chunk_tokens]
                keep = counted[start:start + chunk_tokens]
                logits = (rows @ w.t()).float()
                log_norm = torch.logsumexp(logits, dim=-1)
                safe_labels = torch.where(keep, chunk_labels, torch.zeros_like(chunk_labels))
                target_logit = logits.gather(1, safe_labels[:, None]).squeeze(1)
                loss_sum += ((log_norm - target_logit) * keep).sum()
                # d(mean loss)/d(logits) = (softmax - one_hot) / n, zero for ignored tokens
                grad_logits = torch.softmax(logits, dim=-1)
                grad_logits[torch.arange(len(rows), device=rows.device), safe_labels] -= 1.0
                grad_logits *= (keep.to(torch.float32) / n_counted)[:, None]
                grad_logits = grad_logits.to(dtype)
                grad_hidden[start:start + chunk_tokens] = (grad_logits @ w).to(flat.dtype)
                grad_weight += (grad_logits.t() @ rows).float()
        ctx.save_for_backward(grad_hidden.view_as(hidden), grad_weight.to(weight.dtype))
        return loss_sum / n_counted

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad_output.to(grad_hidden.dtype), grad_weight * grad_output.to(grad_weight.dtype), \
            None, None, None


def chunked_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                                 ignore_index: int = -100, chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> torch.Tensor:
    """Mean cross-entropy of ``hidden @ weight.T`` against ``targets`` (ignoring
    ``ignore_index``), ``chunk_tokens`` rows of logits at a time."""
    if chunk_tokens < 1:
        raise ValueError("chunk_tokens must be 1 or more")
    return _ChunkedLinearCrossEntropy.apply(hidden, weight, targets, ignore_index, chunk_tokens)
