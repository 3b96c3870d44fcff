"""Model configuration: the seed's field names, validation, config.json.

A ``GemmaConfig`` describes the architecture only. Training options live with
the trainer; the tokenizer is recorded beside the config in a checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gemma_core.errors import UserError

# The attention kernels behind model/attention.py's one interface, same results.
ATTENTION_KERNELS = ("eager", "sdpa", "flex")

SLIDING = "sliding_attention"
FULL = "full_attention"
LAYER_TYPES = (SLIDING, FULL)

# The dtype names config.json may carry. The seed wrote torch dtypes as text.
_DTYPE_ALIASES = {
    "bfloat16": "bfloat16", "bf16": "bfloat16", "torch.bfloat16": "bfloat16",
    "float32": "float32", "fp32": "float32", "torch.float32": "float32",
}


# Far beyond any Gemma 3 (the largest has 62 layers and a 262,144-token vocabulary),
# so a typo (100,000 layers, a 10^9 vocabulary) is refused at once, not allocated.
SIZE_LIMITS = {"vocab_size": 1 << 24, "context_length": 1 << 24, "emb_dim": 1 << 16, "n_heads": 1024,
               "n_layers": 1024, "hidden_dim": 1 << 20, "head_dim": 4096, "n_kv_groups": 1024,
               "sliding_window": 1 << 24}


def default_layer_types(n_layers: int, pattern: int = 6) -> list[str]:
    """Gemma 3's rule: every sixth layer (1-based) attends globally, the rest slide."""
    return [FULL if (i + 1) % pattern == 0 else SLIDING for i in range(n_layers)]


@dataclass
class GemmaConfig:
    vocab_size: int
    context_length: int
    emb_dim: int
    n_heads: int
    n_layers: int
    hidden_dim: int
    head_dim: int
    qk_norm: bool = True
    n_kv_groups: int = 1  # number of key/value heads (1 = multi-query attention)
    rope_local_base: float = 10_000.0  # RoPE base of the sliding-window layers
    rope_base: float = 1_000_000.0  # RoPE base of the full-attention layers
    sliding_window: int = 512
    layer_types: list[str] = field(default_factory=list)
    dtype: str = "bfloat16"  # the precision the model is meant to train in
    query_pre_attn_scalar: float = 256
    tie_embeddings: bool = False

    def __post_init__(self) -> None:
        if not self.layer_types and isinstance(self.n_layers, int) and self.n_layers > 0:
            self.layer_types = default_layer_types(self.n_layers)
        if isinstance(self.dtype, str) and self.dtype in _DTYPE_ALIASES:
            self.dtype = _DTYPE_ALIASES[self.dtype]
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first field that is wrong."""
        for name in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers",
                     "hidden_dim", "head_dim", "n_kv_groups", "sliding_window"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(name, f"must be a whole number, got {value!r}")
            if value <= 0:
                raise ConfigError(name, f"must be positive, got {value}")
            if value > SIZE_LIMITS.get(name, value):
                raise ConfigError(name, f"is {value:,}, beyond any Gemma 3 this program builds (at most "
                                  f"{SIZE_LIMITS[name]:,}); check the config")
        for name in ("rope_local_base", "rope_base", "query_pre_attn_scalar"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(name, f"must be a number, got {value!r}")
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(name, f"must be positive (and finite), got {value}")
        for name in ("qk_norm", "tie_embeddings"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(name, f"must be true or false, got {getattr(self, name)!r}")
        if self.n_heads % self.n_kv_groups != 0:
            raise ConfigError(
                "n_heads", f"{self.n_heads} is not divisible by n_kv_groups={self.n_kv_groups}; "
                "each key/value head must serve a whole number of query heads")
        if not isinstance(self.layer_types, list):
            raise ConfigError("layer_types", "must be a list of layer type names")
        if len(self.layer_types) != self.n_layers:
            raise ConfigError(
                "layer_types", f"has {len(self.layer_types)} entries but n_layers is {self.n_layers}")
        for i, kind in enumerate(self.layer_types):
            if kind not in LAYER_TYPES:
                raise ConfigError(
                    "layer_types", f"entry {i} is {kind!r}; use {SLIDING!r} or {FULL!r}")
        if self.dtype not in ("bfloat16", "float32"):
            raise ConfigError(
                "dtype", f"{self.dtype!r} is not supported; use 'bfloat16' or 'float32' "
                "(Gemma 3 overflows in float16)")

    # ---------------------------------------------------------- derived facts
    def num_parameters(self) -> int:
        """Unique parameters (a tied head counted once), from the shape alone: known before
        anything is allocated, so an oversized model is refused at once."""
        attention = (2 * self.n_heads + 2 * self.n_kv_heads) * self.head_dim * self.emb_dim
        norms = 4 * self.emb_dim + (2 * self.head_dim if self.qk_norm else 0)
        layer = attention + 3 * self.emb_dim * self.hidden_dim + norms
        embedding = self.vocab_size * self.emb_dim
        head = 0 if self.tie_embeddings else embedding
        return embedding + head + self.n_layers * layer + self.emb_dim

    @property
    def n_kv_heads(self) -> int:
        return self.n_kv_groups

    def rope_base_for(self, layer_type: str) -> float:
        return self.rope_local_base if layer_type == SLIDING else self.rope_base

    def window_for(self, layer_type: str) -> int | None:
        return self.sliding_window if layer_type == SLIDING else None

    # ----------------------------------------------------------- persistence
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "GemmaConfig":
        """Build from a mapping holding the model keys (extra keys are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.name in _REQUIRED and f.name not in data]
        if missing:
            raise UserError(f"{source}: missing model field {missing[0]!r}")
        kwargs = {k: v for k, v in data.items() if k in names}
        if "layer_types" in kwargs and kwargs["layer_types"] is None:
            kwargs["layer_types"] = []
        for key in ("rope_local_base", "rope_base", "query_pre_attn_scalar"):
            if isinstance(kwargs.get(key), int) and not isinstance(kwargs.get(key), bool):
                kwargs[key] = float(kwargs[key])
        try:
            return cls(**kwargs)
        except ConfigError as err:
            raise ConfigError(err.field, err.reason, source=source) from None

    @classmethod
    def from_json(cls, path: str | Path) -> "GemmaConfig":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"{path}: file not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UserError(f"{path}: not valid JSON ({err}); restore or re-export it") from None
        if not isinstance(data, dict):
            raise UserError(f"{path}: expected a JSON object of model fields")
        return cls.from_dict(data, source=str(path))


_REQUIRED = ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers",
             "hidden_dim", "head_dim")


class ConfigError(UserError):
    """A model config field is invalid. ``field`` names it."""

    def __init__(self, field_name: str, reason: str, source: str = "config") -> None:
        self.field = field_name
        self.reason = reason
        super().__init__(f"{source}: field {field_name!r} {reason}")
