"""Gemma 3, the text model, in one page.

Read top to bottom, this is the architecture diagram:

    token ids
      -> embedding, scaled by sqrt(emb_dim)
      -> n_layers decoder layers, each
             x = x + post_attention_norm(attention(input_norm(x)))
             x = x + post_feedforward_norm(mlp(pre_feedforward_norm(x)))
         where attention is local (a sliding window, RoPE base 10k) on five
         layers out of six and global (full causal, RoPE base 1M) on the sixth
      -> final norm -> LM head -> logits

Where Gemma 3 differs from GPT-2 the code says so in a comment.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from gemma_core.model.attention import attend, resolve_kernel
from gemma_core.model.chunked_loss import chunked_linear_cross_entropy
from gemma_core.model.config import GemmaConfig
from gemma_core.model.kv_cache import KVCache, StaticKVCache


class RMSNorm(nn.Module):
    """RMSNorm computed in float32 that scales by (1 + weight); the weight starts at zero."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * (1.0 + self.weight.float())).type_as(x)


class RotaryEmbedding(nn.Module):
    """Rotate-half RoPE over the whole head. Tables cover only the lengths used so far."""

    def __init__(self, head_dim: int, base: float) -> None:
        super().__init__()
        exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim
        self.register_buffer("inv_freq", 1.0 / (base ** exponents), persistent=False)
        self._cos: torch.Tensor | None = None
        self._sin: torch.Tensor | None = None

    def reserve(self, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin tables covering at least ``length`` positions on ``device``."""
        if self._cos is None or self._cos.shape[0] < length or self._cos.device != device:
            # Grow in powers of two, so token-by-token decoding rebuilds the table rarely.
            size = 1 << max(length - 1, 1).bit_length()
            # Angles in float32 whatever the autocast context, as the reference does. The
            # tables outlive the call that builds them: built during generation they must
            # still be ordinary tensors, which training may later save for its backward.
            with torch.autocast(device_type=device.type, enabled=False), torch.inference_mode(False):
                positions = torch.arange(size, device=device, dtype=torch.float32)
                angles = torch.outer(positions, self.inv_freq.to(device).float())
                angles = torch.cat([angles, angles], dim=-1)
                self._cos, self._sin = angles.cos(), angles.sin()
        return self._cos, self._sin

    def forward(self, x: torch.Tensor, start: int | torch.Tensor) -> torch.Tensor:
        """Rotate x of shape (B, heads, T, head_dim) for positions start .. start+T-1."""
        length = x.shape[2]
        if isinstance(start, torch.Tensor):
            # A static cache's position: the tables were reserved for its capacity, and
            # the rows are gathered, so a compiled step does not depend on the value.
            rows = start + torch.arange(length, device=x.device)
            cos, sin = self._cos[rows], self._sin[rows]
        else:
            cos, sin = self.reserve(start + length, x.device)
            cos, sin = cos[start:start + length], sin[start:start + length]
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        first, second = x.chunk(2, dim=-1)
        rotated = torch.cat([-second, first], dim=-1)
        return x * cos + rotated * sin


class Attention(nn.Module):
    """Multi-query attention with QK-norm; local (sliding) or global (full)."""

    def __init__(self, cfg: GemmaConfig, layer_type: str) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.emb_dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.emb_dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.emb_dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.emb_dim, bias=False)
        # Gemma 3: queries and keys are RMS-normalised per head, before RoPE.
        self.q_norm = RMSNorm(cfg.head_dim) if cfg.qk_norm else nn.Identity()
        self.k_norm = RMSNorm(cfg.head_dim) if cfg.qk_norm else nn.Identity()
        # Gemma 3: two RoPE bases, 10k on local layers and 1M on global ones.
        self.rope = RotaryEmbedding(cfg.head_dim, cfg.rope_base_for(layer_type))
        self.window = cfg.window_for(layer_type)
        # Gemma scales scores by query_pre_attn_scalar ** -0.5, not head_dim ** -0.5.
        self.scale = cfg.query_pre_attn_scalar ** -0.5
        self.kernel = "sdpa"

    def forward(self, x: torch.Tensor, start: int, cache=None) -> torch.Tensor:
        batch, length, _ = x.shape
        q = self.q_proj(x).view(batch, length, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, length, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, length, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = self.rope(self.q_norm(q), start), self.rope(self.k_norm(k), start)
        q_offset, kernel = 0, self.kernel
        if cache is not None:
            k, v, q_offset = cache.update(k, v)
            # FlexAttention compiles per shape: right for training's fixed length, wrong
            # for prompts of every length, so cached decoding always uses SDPA.
            kernel = "sdpa" if kernel == "flex" else kernel
        out = attend(q, k, v, scale=self.scale, window=self.window, q_offset=q_offset,
                     kernel=kernel)
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, -1))


class MLP(nn.Module):
    """GeGLU: down(gelu_tanh(gate(x)) * up(x))."""

    def __init__(self, cfg: GemmaConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.emb_dim, cfg.hidden_dim, bias=False)
        self.up_proj = nn.Linear(cfg.emb_dim, cfg.hidden_dim, bias=False)
        self.down_proj = nn.Linear(cfg.hidden_dim, cfg.emb_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x))


class DecoderLayer(nn.Module):
    """Gemma 3's "sandwich": every sub-block is normalised both before and after."""

    def __init__(self, cfg: GemmaConfig, layer_type: str) -> None:
        super().__init__()
        self.layer_type = layer_type
        self.input_norm = RMSNorm(cfg.emb_dim)
        self.attn = Attention(cfg, layer_type)
        self.post_attention_norm = RMSNorm(cfg.emb_dim)
        self.pre_feedforward_norm = RMSNorm(cfg.emb_dim)
        self.mlp = MLP(cfg)
        self.post_feedforward_norm = RMSNorm(cfg.emb_dim)

    def forward(self, x: torch.Tensor, start: int, cache=None) -> torch.Tensor:
        x = x + self.post_attention_norm(self.attn(self.input_norm(x), start, cache))
        x = x + self.post_feedforward_norm(self.mlp(self.pre_feedforward_norm(x)))
        return x


class Gemma3Model(nn.Module):
    def __init__(self, cfg: GemmaConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.layers = nn.ModuleList(DecoderLayer(cfg, kind) for kind in cfg.layer_types)
        self.final_norm = RMSNorm(cfg.emb_dim)
        self.lm_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.reset_parameters()

    # ------------------------------------------------------------------ setup
    def reset_parameters(self) -> None:
        """Initialise for training from scratch: N(0, 0.02), residual outputs scaled down."""
        residual_std = 0.02 / math.sqrt(2 * self.cfg.n_layers)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                std = residual_std if name.endswith(("o_proj", "down_proj")) else 0.02
                nn.init.normal_(module.weight, mean=0.0, std=std)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            elif isinstance(module, RMSNorm):
                nn.init.zeros_(module.weight)

    def set_attention_kernel(self, name: str) -> str:
        """Choose the attention kernel (auto, eager, sdpa, flex); return the one in use."""
        device = self.embed_tokens.weight.device
        kernel = resolve_kernel(name, device if device.type != "meta" else "cpu")
        for layer in self.layers:
            layer.attn.kernel = kernel
        return kernel

    def new_cache(self, capacity: int = 256) -> KVCache:
        return KVCache([layer.attn.window for layer in self.layers], capacity)

    def new_static_cache(self, capacity: int, batch: int = 1,
                         dtype: torch.dtype | None = None) -> StaticKVCache:
        """A cache of fixed shapes for compiled decoding, with RoPE tables covering ``capacity``."""
        weight = self.embed_tokens.weight
        for layer in self.layers:
            layer.attn.rope.reserve(capacity, weight.device)
        return StaticKVCache(len(self.layers), capacity, batch, self.cfg.n_kv_heads,
                             self.cfg.head_dim, dtype or weight.dtype, weight.device)

    # ---------------------------------------------------------------- forward
    def hidden_states(self, input_ids: torch.Tensor, cache: KVCache | None = None,
                      layers=None) -> torch.Tensor:
        """The last decoder layer's output, before the final norm.

        ``layers`` runs other callables in place of ``self.layers``: the trainer
        passes torch.compile'd copies, so that only its fixed-shape training calls
        are compiled and generation's ever-changing shapes are not.
        """
        start = cache.position if cache is not None else 0
        x = self.embed_tokens(input_ids)
        # Gemma scales embeddings by sqrt(emb_dim), rounded to the weight's dtype first.
        x = x * torch.tensor(self.cfg.emb_dim ** 0.5, dtype=self.embed_tokens.weight.dtype)
        for i, layer in enumerate(self.layers if layers is None else layers):
            x = layer(x, start, cache.layers[i] if cache is not None else None)
        if cache is not None:
            cache.position += input_ids.shape[1]
        return x

    def forward(self, input_ids: torch.Tensor, cache: KVCache | None = None,
                last_position_only: bool = False) -> torch.Tensor:
        """Logits of shape (B, T, vocab_size), or (B, 1, vocab_size) for the last position only
        (all that decoding needs: the head is the largest matrix of a small model)."""
        hidden = self.hidden_states(input_ids, cache)
        if last_position_only:
            hidden = hidden[:, -1:]
        return self.lm_head(self.final_norm(hidden))

    def head_loss(self, hidden: torch.Tensor, targets: torch.Tensor,
                  ignore_index: int = -100, chunk_tokens: int | None = None) -> torch.Tensor:
        """Mean next-token cross-entropy of the final norm and LM head, on float32 logits.

        ``chunk_tokens``: the same loss, that many tokens' logits at a time, never all of
        them (a large vocabulary times a long batch does not fit; see chunked_loss.py)."""
        if chunk_tokens is not None:
            return chunked_linear_cross_entropy(self.final_norm(hidden), self.lm_head.weight, targets,
                                                ignore_index, chunk_tokens)
        logits = self.lm_head(self.final_norm(hidden)).float()
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1),
                               ignore_index=ignore_index)

    def loss(self, input_ids: torch.Tensor, targets: torch.Tensor,
             ignore_index: int = -100, chunk_tokens: int | None = None) -> torch.Tensor:
        return self.head_loss(self.hidden_states(input_ids), targets, ignore_index, chunk_tokens)

    # --------------------------------------------------------------- counting
    def num_parameters(self) -> int:
        """Unique parameters (a tied head is counted once)."""
        return sum(p.numel() for p in self.parameters())
