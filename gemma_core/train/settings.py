"""Training settings: the seed's arguments by the seed's names, plus ours.

``TrainSettings()`` is the default preset's settings, ready to train.
``TrainSettings.for_preset(name, **overrides)`` starts from a preset's own
defaults; ``TrainSettings.for_resume(output_dir, **overrides)`` from the
settings a run was saved with. Both take a ``config_file`` (TOML or JSON with
the same keys as the flags, and a ``[model]`` table) and the command line is a
thin client of them. Precedence, lowest first: the preset's (or the saved
run's) settings, the config file, explicit overrides.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gemma_core.errors import UserError
from gemma_core.model.config import ATTENTION_KERNELS, GemmaConfig
from gemma_core.model.presets import DEFAULT_PRESET, PRESETS, get_preset
from gemma_core.run.checkpoint_state import read_checkpoint_state
from gemma_core.run.layout import check_output_dir
from gemma_core.train.config_file import read_settings_file
from gemma_core.train.optim import MUON_NEEDS, OPTIMIZERS, SCHEDULES, Schedule, muon_available
from gemma_core.value_types import field_types, type_mismatch

_DEFAULT = PRESETS[DEFAULT_PRESET].training

MAX_SEED = 2**32 - 1  # numpy's generator takes no more (SamplingParams has the same limit)
FLOAT32_MAX = 3.4028234663852886e38  # rates and factors meet the weights in float32 arithmetic
INT64_MAX = 2**63 - 1  # counts become torch and numpy integers

# What a run's model is built from: fixed for the run's life, so never changed on resume.
FIXED_BY_THE_RUN = {"preset": "--preset", "tiktoken_encoder_name": "--tiktoken_encoder_name",
                    "model_overrides": "the [model] table"}

# Settings that shape one choice of another setting only: (that setting, the value they count
# with; True: any value that is on, or not empty, or above 0). Given with another, they do nothing.
COUNTS_ONLY_WITH = {
    "decay_fraction": ("schedule", "wsd"),
    "muon_learning_rate": ("optimizer", "muon"),
    "muon_momentum": ("optimizer", "muon"),
    "sample_prompt": ("sample_every", True),
    "sample_every": ("sample_prompt", True),
    "sample_tokens": ("sample_prompt", True),
    "serve_host": ("serve", True),
    "serve_port": ("serve", True),
}

# Intervals a preset sets for its own schedule; a shorter run scales them down with it.
SCALED_WITH_RUN_LENGTH = ("warmup_steps", "eval_iters", "save_steps")


@dataclass(frozen=True)
class TrainSettings:
    # --- the seed's arguments (defaults: the default preset's; see model/presets.py)
    output_dir: str = "output"
    learning_rate: float = _DEFAULT.learning_rate
    max_steps: int = _DEFAULT.max_steps
    warmup_steps: int = _DEFAULT.warmup_steps
    min_lr: float | None = None  # default: learning_rate / 10
    eval_iters: int = _DEFAULT.eval_iters  # evaluate every this many optimizer steps
    gradient_accumulation_steps: int = _DEFAULT.gradient_accumulation_steps
    train_batch_size: int = _DEFAULT.train_batch_size
    val_batch_size: int = _DEFAULT.val_batch_size
    max_length: int = _DEFAULT.max_length
    stride: int = _DEFAULT.stride
    add_eos_between_documents: bool = True
    eos_token: str = "<|endoftext|>"
    logging_steps: int = 1
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    seed: int = 42
    tiktoken_encoder_name: str = _DEFAULT.tokenizer
    train_dataset_path: str | None = None  # None: the bundled Shakespeare corpus (or train_texts)
    val_dataset_path: str | None = None
    # --- ours
    preset: str = DEFAULT_PRESET
    optimizer: str = _DEFAULT.optimizer  # adamw, or muon for the decoder's matrices (AdamW for the rest)
    muon_learning_rate: float = _DEFAULT.muon_learning_rate  # Muon's peak learning rate
    muon_momentum: float = 0.95  # reached after Muon's momentum warmup
    schedule: str = _DEFAULT.schedule  # cosine, or wsd (warmup, stable, decay)
    decay_fraction: float = _DEFAULT.decay_fraction  # wsd: the share of the steps spent decaying
    test_dataset_path: str | None = None
    val_fraction: float = 0.05  # held out of the training data when no validation data is given
    text_field: str = "text"
    split_on_blank_lines: bool = False
    skip_bad_lines: bool = False
    save_steps: int = _DEFAULT.save_steps
    eval_batches: int | None = _DEFAULT.eval_batches  # None: the whole validation set
    grad_clip: float = 1.0
    device: str = "auto"
    dtype: str = "auto"
    compile: bool = _DEFAULT.compile
    fsdp: bool = False  # under torchrun: shard with FSDP2 instead of replicating with DDP
    attention: str = "auto"
    resume: bool = False
    overwrite: bool = False
    init_from: str | None = None
    cache_dir: str | None = None
    sample_prompt: tuple[str, ...] = ()
    sample_every: int = 0  # 0: never
    sample_tokens: int = _DEFAULT.sample_tokens
    max_bad_steps: int = 5  # consecutive non-finite steps before the run stops
    # Serve the run's API (attach, status, control, OpenAI) while it trains: read by the callers
    # that add the server (serve.training: gemma-core train, gemma-tui launch, gemma_core.TrainingEngine).
    serve: bool = True
    serve_host: str = "127.0.0.1"  # loopback: only this machine can reach it
    serve_port: int = 0  # 0: any free port (server.json in the run folder says which)
    model_overrides: dict[str, Any] = field(default_factory=dict)  # model fields from --config
    # --- from Python only: documents held in memory, in place of dataset paths
    train_texts: tuple[str, ...] = ()
    val_texts: tuple[str, ...] = ()

    # ------------------------------------------------------------ construction
    @classmethod
    def for_preset(cls, preset: str | None = None, *, config_file: str | Path | None = None,
                   **overrides: Any) -> "TrainSettings":
        """A preset's training defaults, then ``config_file``, then ``overrides``.

        A run shorter than the preset's own (``max_steps`` given) scales the preset's
        warmup, evaluation and checkpoint intervals down with it, so ``max_steps=3``
        trains; an interval given explicitly is kept as given, and checked.
        """
        from_file = read_train_config(Path(config_file)) if config_file is not None else {}
        explicit = {**from_file, **_normalised(overrides)}
        name = preset or explicit.pop("preset", None) or DEFAULT_PRESET
        explicit.pop("preset", None)
        record = get_preset(name)
        values = record.training.as_settings()
        if "max_steps" in explicit and _is_int(explicit["max_steps"]) and explicit["max_steps"] > 0:
            ratio = explicit["max_steps"] / record.training.max_steps
            if ratio < 1:
                for key in SCALED_WITH_RUN_LENGTH:
                    default = values[key]
                    if key not in explicit and default > 0:
                        values[key] = max(1, round(default * ratio))
        values.update(explicit)
        values["preset"] = name
        return cls._checked(values, config_file)

    @classmethod
    def for_resume(cls, output_dir: str | Path, *, config_file: str | Path | None = None,
                   **overrides: Any) -> "TrainSettings":
        """The settings ``output_dir``'s run was saved with, then ``config_file``, then ``overrides``.

        A run trained on ``train_texts``/``val_texts`` needs them passed again (its
        checkpoint keeps only their fingerprint, and checks it).
        """
        output_dir = Path(output_dir)
        check_output_dir(output_dir, resume=True, overwrite=False)  # says why not, if not
        saved = read_checkpoint_state(output_dir).get("settings")
        if not isinstance(saved, dict):
            raise UserError(f"{output_dir}: the checkpoint records no settings; it is damaged")
        from_file = read_train_config(Path(config_file)) if config_file is not None else {}
        explicit = {**from_file, **_normalised(overrides)}
        if explicit.get("overwrite"):
            raise UserError("--resume and --overwrite contradict each other; choose one")
        base = {k: v for k, v in saved.items() if k in _field_names() and k not in ("resume", "overwrite")}
        for key, flag in FIXED_BY_THE_RUN.items():  # the model and its tokenizer are the run's own
            if key in explicit and explicit[key] != base.get(key, {} if key == "model_overrides" else None):
                source = f"{config_file} sets" if key in from_file else "given"
                raise UserError(f"{flag} {source} differs from the run's own ({output_dir}'s model and "
                                "tokenizer are fixed when it starts); resume without it, or start a new "
                                "run in another --output_dir")
        saved_optimizer = base.get("optimizer", "adamw")  # runs from before Muon trained with AdamW
        if explicit.get("optimizer", saved_optimizer) != saved_optimizer:
            raise UserError(f"--optimizer {explicit['optimizer']} differs from the run's own ({saved_optimizer}): "
                            f"{output_dir}'s checkpoint holds {saved_optimizer}'s state; resume without it, "
                            "or start a new run from its weights with --init_from")
        base["optimizer"] = saved_optimizer
        for key in ("train_texts", "val_texts"):
            if base.get(key) is None:
                base.pop(key, None)
            elif isinstance(base.get(key), dict):  # trained on texts from Python: only a summary is kept
                if key not in explicit:
                    raise UserError(f"{output_dir}: this run trained on {key} given from Python; pass "
                                    f"the same {key}= to resume it")
                base[key] = ()
        values = {**base, **explicit, "output_dir": str(output_dir), "resume": True, "overwrite": False}
        values.setdefault("preset", DEFAULT_PRESET)
        return cls._checked(_normalised(values), config_file)

    @classmethod
    def _checked(cls, values: dict[str, Any], source: str | Path | None) -> "TrainSettings":
        unknown = sorted(set(values) - _field_names())
        if unknown:
            raise UserError(f"unknown training setting {unknown[0]!r}; the settings are the flags of "
                            "'gemma-core train' without dashes")
        _check_types(values, None if source is None else str(source))
        try:
            return cls(**values)
        except TypeError as err:
            raise UserError(f"invalid training settings: {err}") from None

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # a pathlib.Path from Python is the path it names
            if isinstance(getattr(self, f.name), os.PathLike):
                object.__setattr__(self, f.name, os.fspath(getattr(self, f.name)))
        # Settings built directly (TrainSettings(max_steps="3")) are checked as soon as made.
        _check_types({f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, None)
        self.validate()

    # ----------------------------------------------------------------- reading
    @property
    def resolved_min_lr(self) -> float:
        return self.learning_rate / 10 if self.min_lr is None else self.min_lr

    @property
    def lr_schedule(self) -> Schedule:
        return Schedule(self.max_steps, self.warmup_steps, self.schedule, self.decay_fraction,
                        self.resolved_min_lr / self.learning_rate)

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON values; texts from Python are summarised, not copied."""
        data = dataclasses.asdict(self)
        data["betas"] = list(self.betas)
        data["sample_prompt"] = list(self.sample_prompt)
        data["min_lr"] = self.resolved_min_lr
        for key in ("train_texts", "val_texts"):
            texts = getattr(self, key)
            data[key] = _texts_summary(texts) if texts else None
        return data

    def validate(self) -> None:
        """Reject settings that cannot train, naming the option."""
        positive = ("max_steps", "eval_iters", "gradient_accumulation_steps", "train_batch_size",
                    "val_batch_size", "max_length", "stride", "logging_steps", "save_steps",
                    "sample_tokens", "max_bad_steps")
        for name in positive:
            value = getattr(self, name)
            if not _is_int(value):
                raise UserError(f"--{name} must be a whole number, got {value!r}")
            if value <= 0:
                raise UserError(f"--{name} must be positive, got {value}")
        for name in ("warmup_steps", "sample_every", "seed"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise UserError(f"--{name} must be a whole number >= 0, got {value!r}")
        if not _is_int(self.serve_port) or not 0 <= self.serve_port <= 65535:
            raise UserError(f"--serve_port must be a port number from 0 (any free one) to 65535, "
                            f"got {self.serve_port!r}")
        if not isinstance(self.serve_host, str) or not self.serve_host:
            raise UserError(f"--serve_host must be an address, got {self.serve_host!r}")
        if self.seed > MAX_SEED:
            raise UserError(f"--seed must be at most {MAX_SEED} (what numpy's generator takes), got {self.seed}")
        if self.attention not in ("auto", *ATTENTION_KERNELS):
            raise UserError(f"--attention {self.attention!r} is not a kernel; choose auto, "
                            f"{', '.join(ATTENTION_KERNELS)}")
        if self.eval_batches is not None and (not _is_int(self.eval_batches) or self.eval_batches <= 0):
            raise UserError(f"--eval_batches must be positive, got {self.eval_batches!r}")
        _check_number_sizes(self)
        if self.learning_rate <= 0:
            raise UserError(f"--learning_rate must be positive, got {self.learning_rate}")
        if self.resolved_min_lr < 0:
            raise UserError(f"--min_lr must be >= 0, got {self.resolved_min_lr}")
        if self.weight_decay < 0:
            raise UserError(f"--weight_decay must be >= 0, got {self.weight_decay}")
        if self.grad_clip < 0:
            raise UserError(f"--grad_clip must be >= 0 (0: no clipping), got {self.grad_clip}")
        if not 0 < self.val_fraction <= 0.5:
            raise UserError(f"--val_fraction must be above 0 and at most 0.5, got {self.val_fraction}")
        if self.resolved_min_lr > self.learning_rate:
            raise UserError(
                f"--min_lr {self.resolved_min_lr:g} is above --learning_rate {self.learning_rate:g}; "
                "the schedule decays from learning_rate down to min_lr")
        if self.warmup_steps > self.max_steps:
            raise UserError(f"--warmup_steps {self.warmup_steps} is above --max_steps {self.max_steps}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise UserError(f"--betas takes two numbers in [0, 1), got {' '.join(map(str, self.betas))}")
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"--optimizer {self.optimizer!r} is not an optimizer; choose {' or '.join(OPTIMIZERS)}")
        if self.optimizer == "muon" and not muon_available():
            raise UserError(MUON_NEEDS)
        if self.optimizer == "muon" and self.fsdp:
            raise UserError("--optimizer muon does not run under --fsdp: FSDP2 shards each weight matrix "
                            "across ranks and Muon orthogonalises whole matrices; drop --fsdp (DDP keeps "
                            "whole matrices on every rank) or use --optimizer adamw")
        if self.schedule not in SCHEDULES:
            raise UserError(f"--schedule {self.schedule!r} is not a schedule; choose {' or '.join(SCHEDULES)}")
        if not 0 < self.decay_fraction <= 1:
            raise UserError(f"--decay_fraction must be above 0 and at most 1, got {self.decay_fraction}")
        if self.muon_learning_rate <= 0:
            raise UserError(f"--muon_learning_rate must be positive, got {self.muon_learning_rate}")
        if not 0 <= self.muon_momentum < 1:
            raise UserError(f"--muon_momentum must be in [0, 1), got {self.muon_momentum}")
        if self.preset not in PRESETS:
            raise UserError(f"unknown preset {self.preset!r}; choose one of: {', '.join(PRESETS)}")
        if self.model_overrides:  # said now, not by the run once its folder exists
            GemmaConfig.from_dict(get_preset(self.preset).model_config().to_dict() | self.model_overrides,
                                  source="--config [model]")
        if self.resume and self.overwrite:
            raise UserError("--resume and --overwrite contradict each other; choose one")
        for key in ("train_texts", "val_texts"):
            texts = getattr(self, key)
            if not isinstance(texts, tuple) or not all(isinstance(t, str) for t in texts):
                raise UserError(f"{key} must be a list of strings")
        if self.train_texts and self.train_dataset_path:
            raise UserError("give train_texts or --train_dataset_path, not both")
        if self.val_texts and self.val_dataset_path:
            raise UserError("give val_texts or --val_dataset_path, not both")
        if self.val_texts and not self.train_texts:
            raise UserError("val_texts needs train_texts; without them the bundled corpus is used with "
                            "its own validation works")


def settings_that_do_nothing(settings: TrainSettings, given: set[str]) -> list[str]:
    """One line for each setting in ``given`` (the caller's own, not defaults) that the
    settings chosen leave unused: "--decay_fraction does nothing with --schedule cosine ..."."""
    lines = []
    for name, (other, counts_with) in COUNTS_ONLY_WITH.items():
        value = getattr(settings, other)
        if name in given and (not value if counts_with is True else value != counts_with):
            lines.append(f"--{name} does nothing {_as_given(other, value)}; it counts with "
                         f"{_as_wanted(other, counts_with)}")
    return lines


def _as_given(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return f"with --{name}" if value else f"with --no-{name}"
    return f"without --{name}" if isinstance(value, tuple) and not value else f"with --{name} {value}"


def _as_wanted(name: str, counts_with: Any) -> str:
    default = getattr(TrainSettings, name, None)
    if counts_with is not True:
        return f"--{name} {counts_with}"
    if isinstance(default, int) and not isinstance(default, bool):
        return f"--{name} above 0"
    return f"--{name}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _texts_summary(texts: tuple[str, ...]) -> dict[str, Any]:
    digest = hashlib.sha256()
    for text in texts:
        encoded = text.encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "little"))
        digest.update(encoded)
    return {"documents": len(texts), "sha256": digest.hexdigest()}


def _field_names() -> set[str]:
    return {f.name for f in dataclasses.fields(TrainSettings)}


def _normalised(values: dict[str, Any]) -> dict[str, Any]:
    """Lists where the settings hold tuples (JSON, TOML and Python callers give lists), and the
    text of a path where Python gives a ``pathlib.Path``."""
    out = {key: os.fspath(value) if isinstance(value, os.PathLike) else value for key, value in values.items()}
    for key in ("betas", "sample_prompt", "train_texts", "val_texts"):
        if isinstance(out.get(key), list):
            out[key] = tuple(out[key])
        elif key == "sample_prompt" and isinstance(out.get(key), str):
            out[key] = (out[key],)
    return out


def read_train_config(path: Path) -> dict[str, Any]:
    """Settings from a TOML (or JSON) file with the same keys as the flags."""
    data = read_settings_file(path)
    model_fields = {f.name for f in dataclasses.fields(GemmaConfig)}
    known = _field_names() - {"model_overrides", "train_texts", "val_texts"}
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
    return _normalised(out)


def _check_types(values: dict[str, Any], source: str | None) -> None:
    """Wrong types (from a TOML file, or Python), named by key: every field by its annotation."""
    where = f"{source}: " if source else ""
    hints = field_types(TrainSettings)
    for name, value in values.items():
        problem = type_mismatch(repr(name), value, hints[name]) if name in hints else None
        if problem:
            raise UserError(where + problem)


def _check_number_sizes(settings: TrainSettings) -> None:
    """Every number finite, and no larger than what the tensors and counters holding it keep:
    float32 for rates, factors and fractions (past 3.4e38 they are inf in the optimiser's
    arithmetic), int64 for counts."""
    for name, hint in field_types(TrainSettings).items():
        value = getattr(settings, name)
        for number in value if isinstance(value, tuple) else (value,):
            if isinstance(number, bool) or not isinstance(number, (int, float)):
                continue
            if _holds(hint, float):
                if not math.isfinite(number):
                    raise UserError(f"--{name} must be a finite number, got {number}")
                if abs(number) > FLOAT32_MAX:
                    raise UserError(f"--{name} {number:g} is beyond float32, the precision training computes "
                                    f"in (at most {FLOAT32_MAX:.3g}); give a smaller number")
            elif abs(number) > INT64_MAX:
                raise UserError(f"--{name} {number} is beyond a 64-bit whole number (at most {INT64_MAX}); "
                                "give a smaller number")


def _holds(hint: Any, kind: type) -> bool:
    """Whether a field annotated ``hint`` holds values of ``kind`` (alone, optional or in a tuple)."""
    return hint is kind or any(_holds(arg, kind) for arg in typing.get_args(hint))
