"""Training settings: the seed's arguments by the seed's names, plus ours.

Precedence, lowest first: common defaults, the preset's defaults, the
``--config`` TOML file, explicit command-line flags.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gemma_core.errors import UserError
from gemma_core.model.presets import PRESETS
from gemma_core.train.config_file import read_settings_file


@dataclass(frozen=True)
class TrainSettings:
    # --- the seed's arguments
    output_dir: str = "output"
    learning_rate: float = 1e-4
    max_steps: int = 10_000
    warmup_steps: int = 100
    min_lr: float | None = None  # default: learning_rate / 10
    eval_iters: int = 200  # evaluate every this many optimizer steps
    gradient_accumulation_steps: int = 4
    train_batch_size: int = 1
    val_batch_size: int = 1
    max_length: int = 2048
    stride: int = 2048
    add_eos_between_documents: bool = True
    eos_token: str = "<|endoftext|>"
    logging_steps: int = 1
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    seed: int = 42
    tiktoken_encoder_name: str = "gpt2"
    train_dataset_path: str | None = None  # None: the bundled Shakespeare corpus
    val_dataset_path: str | None = None
    # --- ours
    preset: str = "demo"
    test_dataset_path: str | None = None
    val_fraction: float = 0.05  # held out of the training data when no validation path is given
    text_field: str = "text"
    split_on_blank_lines: bool = False
    skip_bad_lines: bool = False
    save_steps: int = 500
    eval_batches: int | None = 50  # None: the whole validation set
    grad_clip: float = 1.0
    device: str = "auto"
    dtype: str = "auto"
    compile: bool = False
    fsdp: bool = False  # under torchrun: shard with FSDP2 instead of replicating with DDP
    attention: str = "auto"
    resume: bool = False
    overwrite: bool = False
    init_from: str | None = None
    cache_dir: str | None = None
    sample_prompt: tuple[str, ...] = ()
    sample_every: int = 0  # 0: never
    sample_tokens: int = 64
    max_bad_steps: int = 5  # consecutive non-finite steps before the run stops
    model_overrides: dict[str, Any] = field(default_factory=dict)  # model fields from --config

    @property
    def resolved_min_lr(self) -> float:
        return self.learning_rate / 10 if self.min_lr is None else self.min_lr

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["betas"] = list(self.betas)
        data["sample_prompt"] = list(self.sample_prompt)
        data["min_lr"] = self.resolved_min_lr
        return data

    def validate(self) -> None:
        """Reject settings that cannot train, naming the option."""
        positive = ("max_steps", "eval_iters", "gradient_accumulation_steps", "train_batch_size",
                    "val_batch_size", "max_length", "stride", "logging_steps", "save_steps",
                    "sample_tokens", "max_bad_steps")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise UserError(f"--{name} must be a whole number, got {value!r}")
            if value <= 0:
                raise UserError(f"--{name} must be positive, got {value}")
        for name in ("warmup_steps", "sample_every", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise UserError(f"--{name} must be a whole number >= 0, got {value!r}")
        if self.eval_batches is not None and (not isinstance(self.eval_batches, int) or self.eval_batches <= 0):
            raise UserError(f"--eval_batches must be positive, got {self.eval_batches!r}")
        for name in ("learning_rate", "weight_decay", "grad_clip", "val_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UserError(f"--{name} must be a number, got {value!r}")
        if self.learning_rate <= 0:
            raise UserError(f"--learning_rate must be positive, got {self.learning_rate}")
        if self.resolved_min_lr < 0:
            raise UserError(f"--min_lr must be >= 0, got {self.resolved_min_lr}")
        if self.resolved_min_lr > self.learning_rate:
            raise UserError(
                f"--min_lr {self.resolved_min_lr:g} is above --learning_rate {self.learning_rate:g}; "
                "the cosine schedule decays from learning_rate down to min_lr")
        if self.warmup_steps > self.max_steps:
            raise UserError(f"--warmup_steps {self.warmup_steps} is above --max_steps {self.max_steps}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise UserError(f"--betas takes two numbers in [0, 1), got {' '.join(map(str, self.betas))}")
        if self.preset not in PRESETS:
            raise UserError(f"unknown preset {self.preset!r}; choose one of: {', '.join(PRESETS)}")
        if self.resume and self.overwrite:
            raise UserError("--resume and --overwrite contradict each other; choose one")


# Each preset's own training defaults, on top of TrainSettings' (the seed's) defaults.
PRESET_TRAIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "seed-270m": {},  # the seed's defaults, exactly
    "gemma-3-270m": {},
    # Tuned for learning speed on two CPU cores (see BENCHMARKS.md). torch.compile
    # doubles its CPU throughput, which pays for the compile time (about 45 s) many
    # times over; evaluations and checkpoints every 200 and 400 steps cost about 5%.
    "demo": dict(learning_rate=4.5e-3, max_steps=1400, warmup_steps=50, eval_iters=200,
                 gradient_accumulation_steps=1, train_batch_size=8, val_batch_size=16,
                 max_length=256, stride=256, weight_decay=0.1, eval_batches=10, save_steps=400,
                 sample_tokens=48, compile=True),
    "nano": dict(learning_rate=3e-3, max_steps=200, warmup_steps=10, eval_iters=50,
                 gradient_accumulation_steps=1, train_batch_size=8, val_batch_size=8,
                 max_length=64, stride=64, eval_batches=4, save_steps=100, sample_tokens=24),
}


def preset_tokenizer(preset: str) -> str | None:
    return PRESETS[preset].training.tokenizer if preset in PRESETS else None


def _field_names() -> set[str]:
    return {f.name for f in dataclasses.fields(TrainSettings)}


def read_train_config(path: Path) -> dict[str, Any]:
    """Settings from a TOML (or JSON) file with the same keys as the flags."""
    from gemma_core.model.config import GemmaConfig

    data = read_settings_file(path)
    model_fields = {f.name for f in dataclasses.fields(GemmaConfig)}
    known = _field_names() - {"model_overrides"}
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key == "model":
            if not isinstance(value, dict):
                raise UserError(f"{path}: [model] must be a table of model fields")
            for model_key in value:
                if model_key not in model_fields:
                    raise UserError(f"{path}: unknown model field {model_key!r} in [model]")
            out["model_overrides"] = dict(value)
        elif key in known:
            out[key] = value
        else:
            raise UserError(f"{path}: unknown key {key!r}; keys are the flags of 'gemma-core train' "
                            "without dashes, plus a [model] table")
    return out


def resolve_settings(explicit: dict[str, Any] | None = None, config_file: str | None = None,
                     base: dict[str, Any] | None = None) -> TrainSettings:
    """Merge defaults, preset defaults (or a resumed run's settings), a config file and flags."""
    explicit = dict(explicit or {})
    from_file = read_train_config(Path(config_file)) if config_file else {}
    base = {k: v for k, v in (base or {}).items()
            if k in _field_names() and k not in ("resume", "overwrite")}
    preset = explicit.get("preset") or from_file.get("preset") or base.get("preset") or "demo"
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    merged: dict[str, Any] = dict(PRESET_TRAIN_DEFAULTS.get(preset, {}))
    tokenizer = preset_tokenizer(preset)
    if tokenizer is not None:
        merged["tiktoken_encoder_name"] = tokenizer
    merged.update(base)
    merged.update(from_file)
    merged.update(explicit)
    merged["preset"] = preset
    for key in ("betas", "sample_prompt"):
        if key in merged and isinstance(merged[key], list):
            merged[key] = tuple(merged[key])
    try:
        settings = TrainSettings(**merged)
    except TypeError as err:
        raise UserError(f"invalid training settings: {err}") from None
    _check_types(settings, config_file)
    settings.validate()
    return settings


def _check_types(settings: TrainSettings, source: str | None) -> None:
    """Wrong types from a TOML file, named by key."""
    where = f"{source}: " if source else ""
    for f in dataclasses.fields(TrainSettings):
        value = getattr(settings, f.name)
        default = f.default if f.default is not dataclasses.MISSING else None
        if value is None or default is None:
            continue
        if isinstance(default, bool) and not isinstance(value, bool):
            raise UserError(f"{where}{f.name!r} must be true or false, got {value!r}")
        if isinstance(default, str) and not isinstance(value, str):
            raise UserError(f"{where}{f.name!r} must be text, got {value!r}")
        if isinstance(default, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise UserError(f"{where}{f.name!r} must be a number, got {value!r}")
        if isinstance(default, int) and not isinstance(default, bool) and (
                isinstance(value, bool) or not isinstance(value, int)):
            raise UserError(f"{where}{f.name!r} must be a whole number, got {value!r}")
