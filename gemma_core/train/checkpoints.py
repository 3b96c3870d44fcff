"""Resumable checkpoints: weights, AdamW state and the run's state, written atomically.

    checkpoint/
      model.safetensors       the weights (a tied head stored once)
      optimizer.safetensors   AdamW's moments and step counts (and Muon's momentum), as named tensors
      tokenizer.json ...      the run folder's tokenizer files (tokenizers, transformers,
                              tiktoken), copied: built once when the run started
      state.json              step, tokens, RNG states, data position and fingerprint,
                              the model config, the tokenizer and the settings; written last

A folder is built aside (``.checkpoint.building``) and swapped in, so a crash
at any moment leaves a complete checkpoint to resume from.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gemma_core import atomic
from gemma_core.errors import DiskFull, UserError
from gemma_core.model.weights import full_tensor, shard_like
from gemma_core.run import logs
from gemma_core.run.layout import (BUILDING_CHECKPOINT, CHECKPOINT, PREVIOUS_CHECKPOINT, STATE, WEIGHTS,
                                   checkpoint_folders)
from gemma_core.run.checkpoint_state import MAX_COUNT, check_state, read_checkpoint_state  # noqa: F401
from gemma_core.run.model_dir import model_state_for_saving, save_weights
from gemma_core.tokenizers.tokenizer_files import copy_tokenizer_files
from gemma_core.train.distributed import Ranks
from gemma_core.train.optim import TrainingOptimizer

MODEL_TENSORS = "model.safetensors"
OPTIMIZER_TENSORS = "optimizer.safetensors"


def save_checkpoint(output_dir: Path, model_state: dict[str, torch.Tensor],
                    optimizer_state: dict[str, torch.Tensor], state: dict) -> Path:
    """Write a checkpoint folder atomically: build it aside, then swap it in.

    ``state.json`` is written last, so a folder without it is incomplete. During
    the swap the previous checkpoint survives as ``checkpoint.old``.
    """
    final = output_dir / CHECKPOINT
    building = output_dir / BUILDING_CHECKPOINT
    old = output_dir / PREVIOUS_CHECKPOINT
    shutil.rmtree(building, ignore_errors=True)
    try:
        building.mkdir()
        with atomic.atomic_path(building / MODEL_TENSORS) as tmp:
            save_file(model_state, str(tmp))
        with atomic.atomic_path(building / OPTIMIZER_TENSORS) as tmp:
            save_file(optimizer_state, str(tmp))
        copy_tokenizer_files(output_dir, building)
        atomic.write_json(building / STATE, state)
    except (OSError, SafetensorError, DiskFull) as err:
        shutil.rmtree(building, ignore_errors=True)
        if isinstance(err, OSError) and not atomic.is_disk_full(err):
            raise UserError(f"{building}: cannot write the checkpoint ({err.strerror}); the last complete "
                            "one is kept: make the folder writable, then continue with --resume") from None
        if not isinstance(err, DiskFull) and not atomic.is_disk_full(err):
            raise
        needed = sum(t.numel() * t.element_size() for t in
                     list(model_state.values()) + list(optimizer_state.values()))
        free = shutil.disk_usage(output_dir).free
        raise DiskFull(f"{output_dir}: disk full while saving a checkpoint; it needs about "
                        f"{needed / 2**20:,.0f} MiB free, {free / 2**20:,.0f} MiB are. The previous "
                        "checkpoint is intact: free some space, then continue with --resume") from None
    try:
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
        os.replace(building, final)
    except OSError as err:
        raise UserError(f"{output_dir}: cannot put the new checkpoint in place ({err.strerror}); the "
                        "last complete one is kept: make the folder writable, then continue with "
                        "--resume") from None
    shutil.rmtree(old, ignore_errors=True)
    atomic._fsync_directory(output_dir)
    return final


def load_checkpoint(output_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
    """(model state, optimizer state, state.json) of the newest complete checkpoint."""
    for folder in checkpoint_folders(output_dir):
        try:
            state = check_state(json.loads((folder / STATE).read_text(encoding="utf-8")), folder / STATE)
            return (load_file(str(folder / MODEL_TENSORS)),
                    load_file(str(folder / OPTIMIZER_TENSORS)), state)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, SafetensorError) as err:
            raise UserError(f"{folder}: checkpoint unreadable ({str(err).splitlines()[0]}); "
                            "it may be corrupted") from None
    raise UserError(f"{output_dir}: no checkpoint to resume from; start without --resume")


def optimizer_state_tensors(optimizer: TrainingOptimizer, names: dict[int, str]) -> dict[str, torch.Tensor]:
    """Each optimiser's per-parameter state as named tensors (safetensors, never pickle):
    AdamW's moments and step counts, Muon's momentum, under the parameter's name."""
    out = {}
    for part in optimizer.parts.values():
        for group in part.param_groups:
            for param in group["params"]:
                for key, value in part.state.get(param, {}).items():
                    tensor = full_tensor(value) if torch.is_tensor(value) else torch.tensor(value)
                    out[f"{names[id(param)]}.{key}"] = tensor.detach().to("cpu").contiguous()
    return out


def restore_optimizer_state(optimizer: TrainingOptimizer, tensors: dict[str, torch.Tensor],
                            names: dict[int, str]) -> None:
    for part in optimizer.parts.values():
        for group in part.param_groups:
            # Fused AdamW keeps its step count on the parameter's device, the others on the CPU.
            step_device = param_device = None
            for param in group["params"]:
                param_device = param.device
                step_device = param_device if group.get("fused") else torch.device("cpu")
                prefix = names[id(param)] + "."
                state = {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}
                if state:  # the moments are sharded like their parameter under FSDP2
                    part.state[param] = {
                        key: (value.to(step_device) if key == "step"
                              else shard_like(value.to(param_device), param))
                        for key, value in state.items()}


class Checkpointer:
    """Writes one run's checkpoints and best weights: rank 0 writes, and under FSDP2
    every rank takes part in gathering the sharded tensors first.

    ``fixed_state`` is what every checkpoint of the run records unchanged: the
    model config, the tokenizer, the settings, the run's id and its data fingerprint.
    """

    def __init__(self, output_dir: Path, ranks: Ranks, model: torch.nn.Module,
                 optimizer: TrainingOptimizer, param_names: dict[int, str], data_position,
                 fixed_state: dict) -> None:
        self.output_dir = output_dir
        self.ranks = ranks
        self.model = model
        self.optimizer = optimizer
        self.param_names = param_names
        self.data_position = data_position  # anything with state_dict(): the training batches
        self.fixed_state = fixed_state

    @property
    def gathers(self) -> bool:
        """Rank 0 writes the weights; under FSDP2 gathering them takes every rank."""
        return self.ranks.is_main or self.ranks.fsdp

    def save(self, *, step: int, tokens_seen: int, best_val_loss: float | None,
             skipped_steps: int, last_log_entries: dict | None = None) -> Path:
        """A resumable checkpoint of this moment, the seed's logs and plot brought up to date.
        ``last_log_entries``: this step's log entries (stream name -> entry), kept with it so
        a resume can put back one the log lost."""
        state = {"step": step, "tokens_seen": tokens_seen, "skipped_steps": skipped_steps,
                 "data": self.data_position.state_dict(),
                 "rng": {"torch": torch.get_rng_state().tolist(), "python": random.getstate()},
                 **self.fixed_state, "saved_at": time.time()}
        if best_val_loss is not None:
            state["best_val_loss"] = best_val_loss
        if last_log_entries:
            state["last_log_entries"] = last_log_entries
        path = self.output_dir / CHECKPOINT
        if self.gathers:
            weights = model_state_for_saving(self.model)
            optimizer_state = optimizer_state_tensors(self.optimizer, self.param_names)
        if self.ranks.is_main:
            path = save_checkpoint(self.output_dir, weights, optimizer_state, state)
            if not (self.output_dir / WEIGHTS).exists():
                save_weights(self.output_dir / WEIGHTS, weights)  # no evaluation yet
            logs.write_seed_outputs(self.output_dir)
        return path

    def save_best_weights(self) -> None:
        """``model.safetensors``: the weights of the best validation loss so far."""
        if self.gathers:
            weights = model_state_for_saving(self.model)
        if self.ranks.is_main:
            save_weights(self.output_dir / WEIGHTS, weights)
