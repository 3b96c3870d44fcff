"""The shipped presets: one record each, a model with its tokenizer and its training defaults.

``TrainSettings.for_preset(name)`` starts from a preset's ``training`` record;
``TrainSettings()`` alone is the default preset's settings. ``summary``,
``train`` and the studio all take ``--preset NAME``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from gemma_core.errors import UserError
from gemma_core.model.config import FULL, SLIDING, GemmaConfig, default_layer_types

DEFAULT_PRESET = "demo"


@dataclass(frozen=True)
class PresetTraining:
    """The training settings in which presets differ; every other setting is shared."""

    tokenizer: str  # tiktoken_encoder_name
    learning_rate: float
    max_steps: int
    warmup_steps: int
    eval_iters: int  # evaluate every this many steps
    save_steps: int  # checkpoint every this many steps
    gradient_accumulation_steps: int
    train_batch_size: int
    val_batch_size: int
    max_length: int
    stride: int
    eval_batches: int | None
    sample_tokens: int
    compile: bool
    optimizer: str = "adamw"
    muon_learning_rate: float = 0.02
    schedule: str = "cosine"
    decay_fraction: float = 0.2

    def as_settings(self) -> dict:
        """These defaults under TrainSettings' field names."""
        values = dataclasses.asdict(self)
        values["tiktoken_encoder_name"] = values.pop("tokenizer")
        return values


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    config: GemmaConfig
    training: PresetTraining

    def model_config(self) -> GemmaConfig:
        """A fresh copy of the architecture, safe to change."""
        return GemmaConfig.from_dict(self.config.to_dict())


# The seed's own arguments, its bugs fixed (see README "Training").
_SEED_TRAINING = PresetTraining(
    tokenizer="gpt2", learning_rate=1e-4, max_steps=10_000, warmup_steps=100, eval_iters=200,
    save_steps=500, gradient_accumulation_steps=4, train_batch_size=1, val_batch_size=1,
    max_length=2048, stride=2048, eval_batches=50, sample_tokens=64, compile=False)

PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset(
        "seed-270m", "the original learning repository's model: Gemma 3 270M's shape, GPT-2 vocabulary",
        GemmaConfig(
            vocab_size=50_257, context_length=32_768, emb_dim=640, n_heads=4, n_layers=18,
            hidden_dim=2048, head_dim=256, qk_norm=True, n_kv_groups=1,
            rope_local_base=10_000.0, rope_base=1_000_000.0, sliding_window=512,
            layer_types=default_layer_types(18), dtype="bfloat16",
            query_pre_attn_scalar=256, tie_embeddings=False),
        _SEED_TRAINING),
    Preset(
        "gemma-3-270m", "google/gemma-3-270m's architecture: Gemma's 262,144-token vocabulary, tied head",
        GemmaConfig(
            vocab_size=262_144, context_length=32_768, emb_dim=640, n_heads=4, n_layers=18,
            hidden_dim=2048, head_dim=256, qk_norm=True, n_kv_groups=1,
            rope_local_base=10_000.0, rope_base=1_000_000.0, sliding_window=512,
            layer_types=default_layer_types(18), dtype="bfloat16",
            query_pre_attn_scalar=256, tie_embeddings=True),
        # Gemma's own tokenizer is not shipped (import-hf brings it with the weights):
        # from scratch this preset trains on GPT-2 ids, which fit its vocabulary.
        _SEED_TRAINING),
    Preset(
        # A CPU-sized Gemma 3: same shape rules (MQA, QK-norm, 5 sliding : 1 full, two
        # RoPE bases, GeGLU, sandwich norms), small enough to learn in minutes. 256 wide
        # rather than 384: it steps faster on two CPU cores, which buys more than the
        # wider model learns per token within ten minutes (the figures: BENCHMARKS.md).
        "demo", "Gemma 3's shape at a size that learns within minutes on two CPU cores",
        GemmaConfig(
            vocab_size=4096, context_length=1024, emb_dim=256, n_heads=4, n_layers=6,
            hidden_dim=768, head_dim=64, qk_norm=True, n_kv_groups=1,
            rope_local_base=10_000.0, rope_base=1_000_000.0, sliding_window=128,
            layer_types=default_layer_types(6), dtype="bfloat16",
            query_pre_attn_scalar=64, tie_embeddings=True),
        # Tuned for learning per token and per second on two CPU cores. Muon for the
        # decoder's matrices ends below AdamW alone on the same tokens; torch.compile's
        # faster steps pay for its compile time many times over; evaluations and
        # checkpoints every 200 and 400 steps cost little (the figures: BENCHMARKS.md).
        PresetTraining(
            tokenizer="shakespeare-4k", learning_rate=4.5e-3, max_steps=1400, warmup_steps=50,
            eval_iters=200, save_steps=400, gradient_accumulation_steps=1, train_batch_size=8,
            val_batch_size=16, max_length=256, stride=256, eval_batches=10, sample_tokens=48,
            compile=True, optimizer="muon", muon_learning_rate=0.01)),
    Preset(
        "nano", "a sub-1M-parameter model for tests: one sliding and one full layer",
        GemmaConfig(
            vocab_size=4096, context_length=256, emb_dim=64, n_heads=4, n_layers=2,
            hidden_dim=192, head_dim=16, qk_norm=True, n_kv_groups=1,
            rope_local_base=10_000.0, rope_base=1_000_000.0, sliding_window=16,
            layer_types=[SLIDING, FULL], dtype="float32",
            query_pre_attn_scalar=16, tie_embeddings=True),
        PresetTraining(
            tokenizer="shakespeare-4k", learning_rate=3e-3, max_steps=200, warmup_steps=10,
            eval_iters=50, save_steps=100, gradient_accumulation_steps=1, train_batch_size=8,
            val_batch_size=8, max_length=64, stride=64, eval_batches=4, sample_tokens=24,
            compile=False)),
)}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]


def preset(name: str) -> GemmaConfig:
    """A fresh copy of the named preset's model config."""
    return get_preset(name).model_config()
