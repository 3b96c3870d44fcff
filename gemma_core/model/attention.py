"""Scaled dot-product attention behind one interface, with several kernels.

Every kernel computes the same thing. Query ``i`` sits at key index
``q_offset + i``; key ``j`` is visible to it when

    j <= q_offset + i                       (causal)
    q_offset + i - j < window               (sliding layers: W keys, the query's own included)

Kernels:

* ``eager``: the reference: explicit scores, float32 softmax. K/V are broadcast
  over query-head groups, never copied.
* ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention``; ``is_causal``
  on full layers, a boolean mask (built once per shape and cached) on sliding ones.
* ``flex``: FlexAttention with a sliding-window block mask (CUDA only).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from gemma_core.errors import UserError
from gemma_core.model.config import ATTENTION_KERNELS

KERNELS = ATTENTION_KERNELS

# SDPA broadcasts K/V over query-head groups itself from torch 2.5 on.
_SDPA_HAS_GQA = "enable_gqa" in (F.scaled_dot_product_attention.__doc__ or "")


def flex_available(device: torch.device | str) -> bool:
    if torch.device(device).type != "cuda":
        return False
    try:
        from torch.nn.attention.flex_attention import flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


def available_kernels(device: torch.device | str) -> list[str]:
    kernels = ["eager", "sdpa"]
    if flex_available(device):
        kernels.append("flex")
    return kernels


def resolve_kernel(name: str, device: torch.device | str) -> str:
    """``auto`` picks FlexAttention on CUDA when present, else SDPA."""
    if name == "auto":
        return "flex" if flex_available(device) else "sdpa"
    if name not in KERNELS:
        raise UserError(f"--attention {name!r} is not a kernel; choose auto, {', '.join(KERNELS)}")
    if name == "flex" and not flex_available(device):
        raise UserError("--attention flex needs a CUDA device and torch with FlexAttention; use auto")
    return name


def visibility_mask(q_len: int, k_len: int, q_offset: int | torch.Tensor, window: int | None,
                    device: torch.device) -> torch.Tensor:
    """Boolean (q_len, k_len) mask, True where a key is visible. Cached per shape.

    Under torch.compile the mask is built inside the graph instead: it becomes a
    constant of the compiled code, and the compiler does not trace Python caches.
    A static cache's offset is a tensor (its value changes every step), so its
    mask is built every time too.
    """
    if torch.compiler.is_compiling() or isinstance(q_offset, torch.Tensor):
        return _build_mask(q_len, k_len, q_offset, window, device)
    return _cached_mask(q_len, k_len, q_offset, window, device)


def _build_mask(q_len: int, k_len: int, q_offset: int | torch.Tensor, window: int | None,
                device: torch.device) -> torch.Tensor:
    q_pos = (q_offset + torch.arange(q_len, device=device))[:, None]
    k_pos = torch.arange(k_len, device=device)[None, :]
    visible = k_pos <= q_pos
    if window is not None:
        visible &= (q_pos - k_pos) < window
    return visible


_cached_mask = functools.lru_cache(maxsize=64)(_build_mask)


def _needs_mask(q_len: int, k_len: int, q_offset: int | torch.Tensor, window: int | None) -> bool:
    """False when every key is visible to every query (single-token decode in the window)."""
    if isinstance(q_offset, torch.Tensor):  # a static cache: slots past the position are unwritten
        return True
    if q_len != 1 or q_offset < k_len - 1:
        return True
    return window is not None and q_offset >= window  # key 0 has left the window


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float,
           window: int | None, q_offset: int | torch.Tensor, kernel: str) -> torch.Tensor:
    """q: (B, H, T, D); k, v: (B, H_kv, S, D) -> (B, H, T, D).

    ``q_offset`` is a tensor for a static cache, whose keys sit at their positions
    in a buffer of fixed size ``S``.
    """
    if kernel == "sdpa":
        return _sdpa(q, k, v, scale, window, q_offset)
    if kernel == "flex":
        return _flex(q, k, v, scale, window, q_offset)
    return _eager(q, k, v, scale, window, q_offset)


def _eager(q, k, v, scale, window, q_offset):
    batch, n_heads, q_len, head_dim = q.shape
    n_kv, k_len = k.shape[1], k.shape[2]
    # Group query heads under their key/value head: (B, H_kv, G, T, D).
    q = q.view(batch, n_kv, n_heads // n_kv, q_len, head_dim)
    scores = (q @ k.unsqueeze(2).transpose(-2, -1)) * scale
    if _needs_mask(q_len, k_len, q_offset, window):
        mask = visibility_mask(q_len, k_len, q_offset, window, q.device)
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    out = probs @ v.unsqueeze(2)
    return out.view(batch, n_heads, q_len, head_dim)


def _sdpa(q, k, v, scale, window, q_offset):
    q_len, k_len = q.shape[2], k.shape[2]
    kwargs = {"scale": scale}
    if q.shape[1] != k.shape[1]:
        if _SDPA_HAS_GQA:
            kwargs["enable_gqa"] = True
        else:  # torch < 2.5 has no GQA in SDPA: fall back to a copy
            repeat = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
    if not _needs_mask(q_len, k_len, q_offset, window):
        return F.scaled_dot_product_attention(q, k, v, **kwargs)
    if window is None and isinstance(q_offset, int) and q_offset == 0 and q_len == k_len:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, **kwargs)
    mask = visibility_mask(q_len, k_len, q_offset, window, q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **kwargs)


# ------------------------------------------------------------- FlexAttention
@functools.lru_cache(maxsize=1)
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention
    return torch.compile(flex_attention, dynamic=False)


@functools.lru_cache(maxsize=64)
def _block_mask(q_len: int, k_len: int, q_offset: int, window: int | None, device: str):
    from torch.nn.attention.flex_attention import create_block_mask

    def visible(b, h, q_idx, kv_idx):
        q_pos = q_idx + q_offset
        causal = kv_idx <= q_pos
        if window is None:
            return causal
        return causal & (q_pos - kv_idx < window)

    return create_block_mask(visible, B=None, H=None, Q_LEN=q_len, KV_LEN=k_len, device=device)


def _flex(q, k, v, scale, window, q_offset):
    if q.shape[2] == 1:  # decode: one query, nothing for a block mask to skip
        return _sdpa(q, k, v, scale, window, q_offset)
    block_mask = _block_mask(q.shape[2], k.shape[2], q_offset, window, str(q.device))
    return _compiled_flex()(q, k, v, block_mask=block_mask, scale=scale,
                            enable_gqa=q.shape[1] != k.shape[1])
