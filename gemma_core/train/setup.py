"""From settings to a run's parts: device, tokenizer, data, model, optimizer, batches.

``prepare_run`` only reads and checks until everything is known to work; then
``claim_run_folder`` writes the folder. A run that fails on its inputs leaves
an existing folder as it was. A resumed run also gets back its weights,
optimizer state, data position and random state here, after its data is
checked to be the data it was trained on.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from gemma_core.data.batches import TrainBatches, fixed_validation_batches
from gemma_core.data.documents import DataOptions, expand_paths
from gemma_core.data.splits import PreparedData, prepare_datasets
from gemma_core.data.token_cache import sample_digest
from gemma_core.device import available_bytes, resolve_device, resolve_dtype
from gemma_core.errors import UserError
from gemma_core.model.config import GemmaConfig
from gemma_core.model.model import Gemma3Model
from gemma_core.model.presets import preset
from gemma_core.model.weights import local_tensor, shard_like
from gemma_core.run import layout, logs
from gemma_core.run.model_dir import WEIGHTS_FILE, load_tokenizer_of, load_weights, read_config, write_config
from gemma_core.tokenizers.tokenizer import Tokenizer, load_tokenizer, token_byte_lengths
from gemma_core.tokenizers.tokenizer_files import tokenizer_from_spec
from gemma_core.train import checkpoints, distributed
from gemma_core.train.evaluation import logits_chunk_rows
from gemma_core.train.flops import device_peak_flops, training_flops_per_token
from gemma_core.train.memory import evaluation_bytes, training_bytes
from gemma_core.train.optim import TrainingOptimizer, build_optimizer
from gemma_core.train.settings import TrainSettings

Log = Callable[[str, str], None]  # (text, level)


@dataclass(frozen=True)
class ResumePoint:
    """Where a resumed run continues from."""

    step: int
    tokens_seen: int
    best_val_loss: float
    skipped_steps: int
    saved_at: float = 0.0  # when its checkpoint was written (time.time())
    last_log_entries: dict | None = None  # the logs' entries of the checkpoint's step, kept with it


@dataclass
class RunParts:
    """Everything a run trains with, built by ``prepare_run``."""

    device: torch.device
    dtype: torch.dtype
    device_name: str
    dtype_name: str
    tokenizer: Tokenizer
    model_config: GemmaConfig
    data: PreparedData
    data_fingerprint: dict
    model: Gemma3Model
    kernel: str
    n_parameters: int
    train_module: torch.nn.Module
    param_names: dict[int, str]
    optimizer: TrainingOptimizer
    batches: TrainBatches
    val_batches: list[list[int]]
    byte_lengths: torch.Tensor
    flops_per_token: float
    peak_flops: float | None  # one device's peak in the training dtype; None where unknown
    resumed: ResumePoint | None


def prepare_run(settings: TrainSettings, ranks: distributed.Ranks, log: Log,
                cancel: threading.Event | None = None) -> RunParts:
    """The run's parts, every check passed before anything large is allocated. The run folder
    was checked by the engine (rank 0), before it took the folder's lock."""
    s = settings
    device, dtype, device_name, dtype_name = _start_device(s, ranks)
    cfg, tokenizer, saved = _model_and_tokenizer(s)
    _check_fits(s, cfg, tokenizer)
    n_parameters = cfg.num_parameters()
    _check_memory(s, cfg, n_parameters, dtype, device, device_name)  # before anything is allocated

    _check_data_outside_run(s, Path(s.output_dir))
    data = _prepare_data(s, ranks, device, tokenizer, log, cancel)
    fingerprint = data_fingerprint(data, s, tokenizer)
    if saved is not None:
        if not check_same_data(Path(s.output_dir), saved[2], fingerprint):
            log("this checkpoint records no fingerprint of its data (an older version wrote it): "
                "resuming without checking that the data is the same", "warning")

    model, kernel, train_module, param_names, optimizer = _build_model(s, ranks, cfg, device)
    batches = TrainBatches(data.train.windows, s.train_batch_size, seed=s.seed,
                           rank=ranks.rank, world_size=ranks.world_size)
    resumed = None
    if saved is not None:
        resumed = _restore(saved, model, optimizer, param_names, batches,
                           Path(s.output_dir) / layout.CHECKPOINT)
    return RunParts(
        device=device, dtype=dtype, device_name=device_name, dtype_name=dtype_name,
        tokenizer=tokenizer, model_config=cfg, data=data, data_fingerprint=fingerprint, model=model,
        kernel=kernel, n_parameters=n_parameters, train_module=train_module, param_names=param_names,
        optimizer=optimizer, batches=batches,
        val_batches=fixed_validation_batches(data.val.windows, s.val_batch_size, s.eval_batches),
        byte_lengths=torch.from_numpy(token_byte_lengths(tokenizer)),
        flops_per_token=training_flops_per_token(cfg, s.max_length),
        peak_flops=device_peak_flops(device, dtype), resumed=resumed)


def _start_device(s: TrainSettings, ranks: distributed.Ranks) -> tuple[torch.device, torch.dtype, str, str]:
    """The device and dtype to train in (and their names), every random generator seeded."""
    device = distributed.start(ranks, resolve_device(s.device))
    dtype = resolve_dtype(s.dtype, device)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    dtype_name = {torch.bfloat16: "bf16", torch.float32: "fp32"}[dtype]
    torch.manual_seed(s.seed)
    random.seed(s.seed)
    np.random.seed(s.seed)
    return device, dtype, device_name, dtype_name


def _model_and_tokenizer(s: TrainSettings) -> tuple[GemmaConfig, Tokenizer, tuple | None]:
    """The model's config and tokenizer: a resumed run's (with its checkpoint's tensors and
    state), a model directory's to continue from, or a preset's."""
    output_dir = Path(s.output_dir)
    if s.resume:
        model_tensors, optimizer_tensors, state = checkpoints.load_checkpoint(output_dir)
        cfg = GemmaConfig.from_dict(state["model"], source=str(output_dir / layout.CHECKPOINT / layout.STATE))
        saved = (model_tensors, optimizer_tensors, state)
        return cfg, tokenizer_from_spec(state["tokenizer"], output_dir), saved
    cfg = preset(s.preset)
    if s.model_overrides:
        cfg = GemmaConfig.from_dict(cfg.to_dict() | s.model_overrides, source="--config [model]")
    if s.init_from:  # continue pretraining a checkpoint, with its own tokenizer
        cfg, data = read_config(s.init_from)
        return cfg, load_tokenizer_of(s.init_from, data, cfg), None
    return cfg, load_tokenizer(s.tiktoken_encoder_name), None


def _prepare_data(s: TrainSettings, ranks: distributed.Ranks, device: torch.device, tokenizer: Tokenizer,
                  log: Log, cancel: threading.Event | None) -> PreparedData:
    """The token windows to train and validate on, tokenized once into the cache."""
    log(f"preparing data (tokenizer {tokenizer.name}, max_length {s.max_length})", "info")
    quarters: dict[str, int] = {}

    def progress(split: str, docs: int, done: int, total: int) -> None:
        """Log tokenization at every further quarter of the text (long corpora take a while)."""
        quarter = 4 * done // total if total else 4
        if quarter > quarters.get(split, 0):
            quarters[split] = quarter
            log(f"tokenizing {split}: {25 * quarter}%", "info")

    # Rank 0 builds the token cache; the other ranks then find it built.
    data = distributed.main_first(ranks, device, lambda: prepare_datasets(
        s.train_dataset_path, s.val_dataset_path, s.test_dataset_path, tokenizer,
        DataOptions(text_field=s.text_field, add_eos_between_documents=s.add_eos_between_documents,
                    split_on_blank_lines=s.split_on_blank_lines, skip_bad_lines=s.skip_bad_lines),
        s.max_length, s.stride, s.val_fraction, s.cache_dir, progress=progress, cancel=cancel,
        train_texts=s.train_texts, val_texts=s.val_texts))
    for note in data.notes:
        log(note, "warning")
    log(f"train: {data.train.n_tokens:,} tokens in {len(data.train.windows):,} windows; "
        f"validation: {data.val.n_tokens:,} tokens", "info")
    return data


def _build_model(s: TrainSettings, ranks: distributed.Ranks, cfg: GemmaConfig, device: torch.device):
    """The model on its device (a model directory's weights in it when continuing one), wrapped
    for the ranks, and its optimizer: (model, kernel, train_module, param_names, optimizer)."""
    with torch.device(device):
        model = Gemma3Model(cfg)
    if s.init_from and not s.resume:
        load_weights(Path(s.init_from) / WEIGHTS_FILE, model)
    kernel = model.set_attention_kernel(s.attention)
    # Wrap before building the optimizer: FSDP2 replaces the parameters with sharded ones.
    train_module = distributed.wrap(ranks, model, device)
    param_names = {id(p): name for name, p in model.named_parameters()}
    optimizer = build_optimizer(model, s.learning_rate, s.weight_decay, s.betas, device,
                                fused=not ranks.fsdp, optimizer=s.optimizer,
                                muon_learning_rate=s.muon_learning_rate, muon_momentum=s.muon_momentum)
    return model, kernel, train_module, param_names, optimizer


def claim_run_folder(settings: TrainSettings, parts: RunParts, run_id: str) -> logs.RunLogs:
    """Everything checked: make the folder the run's and open its logs (rank 0 only)."""
    output_dir = Path(settings.output_dir)
    layout.claim_output_dir(output_dir, resume=settings.resume, overwrite=settings.overwrite)
    if parts.resumed is not None:  # steps after the checkpoint are trained again
        logs.truncate_logs_to(output_dir, parts.resumed.step, parts.resumed.last_log_entries)
    run_logs = logs.RunLogs(output_dir)
    write_config(output_dir, parts.model_config, parts.tokenizer,
                 {"training": settings.to_dict(), "run_id": run_id})
    logs.write_vocab(output_dir, parts.tokenizer)
    return run_logs


# ------------------------------------------------------------------- checks
def _check_fits(s: TrainSettings, cfg: GemmaConfig, tokenizer: Tokenizer) -> None:
    if tokenizer.n_vocab > cfg.vocab_size:
        raise UserError(f"tokenizer {s.tiktoken_encoder_name!r} has {tokenizer.n_vocab} tokens "
                        f"but the model's vocab_size is {cfg.vocab_size}; choose a matching "
                        "--tiktoken_encoder_name or --preset")
    if s.eos_token != "<|endoftext|>":
        raise UserError(f"--eos_token {s.eos_token!r}: the tokenizers here end documents with "
                        "'<|endoftext|>'")
    if s.max_length > cfg.context_length:
        raise UserError(f"--max_length {s.max_length} is above the model's context_length "
                        f"{cfg.context_length}; lower --max_length")


def _check_data_outside_run(s: TrainSettings, output_dir: Path) -> None:
    """Refuse data that is, or will be, the run's own files: a resumed run would read its
    logs as training text."""
    out = output_dir.expanduser().resolve()
    for flag, spec in (("--train_dataset_path", s.train_dataset_path), ("--val_dataset_path", s.val_dataset_path),
                       ("--test_dataset_path", s.test_dataset_path)):
        if spec is None:
            continue
        folder = Path(spec).expanduser()
        if folder.is_dir() and (folder.resolve() == out or folder.resolve() in out.parents):
            raise UserError(f"--output_dir {output_dir} is inside the data folder {spec} ({flag}): the "
                            "run's own logs would be read as data; choose an --output_dir outside it")
        for file in expand_paths(spec):
            if out in file.resolve().parents:
                raise UserError(f"{file} ({flag}) is inside --output_dir {output_dir}: the run's own files "
                                "are not data; move the data or choose another --output_dir")


def _check_memory(s: TrainSettings, cfg: GemmaConfig, n_parameters: int, dtype: torch.dtype,
                  device: torch.device, device_name: str) -> None:
    """Refuse a batch that cannot fit, in training or in evaluation, before the first step."""
    free = available_bytes(device)
    if free is None:
        return
    train_need = training_bytes(cfg, n_parameters, s.train_batch_size, s.max_length, dtype)
    if train_need > free:
        raise UserError(
            f"--train_batch_size {s.train_batch_size} x --max_length {s.max_length} needs at least "
            f"{train_need / 2**30:.1f} GiB to train but {free / 2**30:.1f} GiB is free on "
            f"{device_name}; lower --train_batch_size or --max_length (raise "
            "--gradient_accumulation_steps to keep the tokens per step)")
    eval_need = evaluation_bytes(cfg, n_parameters, s.val_batch_size, s.max_length, dtype,
                                 logits_chunk_rows(cfg.vocab_size))
    if eval_need > free:
        raise UserError(
            f"--val_batch_size {s.val_batch_size} x --max_length {s.max_length} needs at least "
            f"{eval_need / 2**30:.1f} GiB to evaluate but {free / 2**30:.1f} GiB is free on "
            f"{device_name}; lower --val_batch_size")


# ------------------------------------------------------- the data a run saw
def data_fingerprint(data: PreparedData, s: TrainSettings, tokenizer: Tokenizer) -> dict:
    """What must be the same for a checkpoint's data position to mean the same windows."""
    tokenizer_spec = json.dumps(tokenizer.spec(), sort_keys=True)
    return {
        "train_tokens": data.train.n_tokens,
        "train_sha256": sample_digest(data.train.windows.tokens),
        "val_tokens": data.val.n_tokens,
        "val_sha256": sample_digest(data.val.windows.tokens),
        "tokenizer_sha256": hashlib.sha256(tokenizer_spec.encode("utf-8")).hexdigest(),
        "max_length": s.max_length,
        "stride": s.stride,
        "seed": s.seed,
    }


_FINGERPRINT_NAMES = {
    "train_tokens": "training tokens", "train_sha256": "training text", "val_tokens": "validation tokens",
    "val_sha256": "validation text", "tokenizer_sha256": "tokenizer", "max_length": "--max_length",
    "stride": "--stride", "seed": "--seed",
}


def check_same_data(output_dir: Path, state: dict, fingerprint: dict) -> bool:
    """Refuse to resume on data other than the run's: its data position would mean other windows.
    False when the checkpoint has no fingerprint to compare with (an older version's)."""
    saved = state.get("data_fingerprint")
    if not isinstance(saved, dict):
        return False
    for key, name in _FINGERPRINT_NAMES.items():
        if key in saved and saved[key] != fingerprint[key]:
            then, now = saved[key], fingerprint[key]
            shown = f" ({then:,} then, {now:,} now)" if isinstance(then, int) and isinstance(now, int) else ""
            raise UserError(
                f"{output_dir / layout.CHECKPOINT / layout.STATE}: the run was trained on other data: "
                f"its {name} differs{shown}; resume with the same data, --max_length, --stride and "
                "--seed, or start a new run in another --output_dir")
    return True


# ------------------------------------------------------------------- resume
def _restore(saved: tuple, model: Gemma3Model, optimizer: TrainingOptimizer,
             param_names: dict[int, str], batches: TrainBatches, where: Path) -> ResumePoint:
    model_tensors, optimizer_tensors, state = saved
    settings = state.get("settings") if isinstance(state.get("settings"), dict) else {}
    saved_optimizer = settings.get("optimizer", "adamw")
    if saved_optimizer != optimizer.name:
        raise UserError(f"{where}: the run trained with {saved_optimizer} and this resume asks for "
                        f"{optimizer.name}; resume with --optimizer {saved_optimizer}, or start a new run "
                        "from its weights with --init_from")
    own = model.state_dict()
    for name, tensor in model_tensors.items():
        if name not in own or tuple(own[name].shape) != tuple(tensor.shape):
            raise UserError(f"{where}: checkpoint tensor {name!r} does not fit the model its state.json "
                            "describes; the checkpoint is damaged")
    with torch.no_grad():
        for name, tensor in model_tensors.items():
            target = own[name]
            local_tensor(target).copy_(
                local_tensor(shard_like(tensor, target)))
    try:
        checkpoints.restore_optimizer_state(optimizer, optimizer_tensors, param_names)
        batches.load_state_dict(state["data"], same_data=isinstance(state.get("data_fingerprint"), dict))
        torch.set_rng_state(torch.tensor(state["rng"]["torch"], dtype=torch.uint8))
        random.setstate(_tuples(state["rng"]["python"]))
    except (RuntimeError, TypeError, ValueError) as err:
        raise UserError(f"{where}: the checkpoint's optimizer or random state does not load "
                        f"({str(err).splitlines()[0]}); the checkpoint is damaged") from None
    best = state.get("best_val_loss")
    return ResumePoint(step=state["step"], tokens_seen=state["tokens_seen"],
                       best_val_loss=best if isinstance(best, (int, float)) else math.inf,
                       skipped_steps=state.get("skipped_steps", 0),
                       saved_at=float(state.get("saved_at", 0.0)),
                       last_log_entries=state.get("last_log_entries") if isinstance(
                           state.get("last_log_entries"), dict) else None)


def _tuples(value):
    """JSON turned Python's RNG state tuples into lists; turn them back."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value
