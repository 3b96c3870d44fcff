"""The files of a training run, in the seed's layout, written so a crash loses nothing.

    output_dir/
      config.json            model fields (seed names) + "tokenizer" + "training"
      model.safetensors      best-validation weights
      training_log.json      the seed's log files, rewritten atomically at checkpoints
      validation_log.json
      training_log.jsonl     append-only streams written every step (crash-safe, linear cost)
      validation_log.jsonl
      vocab.json             token -> id, lossless (GPT-2's byte-to-unicode alphabet)
      loss_function.png      train and validation loss against optimizer step
      samples.jsonl          continuations sampled during training
      checkpoint/            resumable state: weights, optimizer, step, RNG, data position
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gemma_core import atomic
from gemma_core.errors import DiskFull, UserError
from gemma_core.tokenizers.hf_json import bytes_to_unicode  # GPT-2's byte-to-unicode table
from gemma_core.tokenizers.tokenizer import Tokenizer
from gemma_core.train.distributed import full_tensor, shard_like
from gemma_core.train.events import EvalResult

TRAIN_LOG = "training_log.json"
VAL_LOG = "validation_log.json"
TRAIN_STREAM = "training_log.jsonl"
VAL_STREAM = "validation_log.jsonl"
SAMPLES = "samples.jsonl"
CHECKPOINT = "checkpoint"
RUN_MARKERS = ("config.json", CHECKPOINT, TRAIN_STREAM, TRAIN_LOG)


# ------------------------------------------------------------- output folder
def check_output_dir(path: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to mix two runs in one folder, or a folder that cannot be written.

    Changes nothing on disk: a run that then fails on its inputs leaves the folder
    as it was. ``claim_output_dir`` makes the changes once the run is set to start.
    """
    holds_run = path.is_dir() and any((path / marker).exists() for marker in RUN_MARKERS)
    if holds_run and not has_checkpoint(path) and (resume or not overwrite):
        raise UserError(f"{path}: holds a run that stopped before its first checkpoint, so there is "
                        "nothing to resume; pass --overwrite to start it again, or choose another "
                        "--output_dir")
    if resume:
        if not has_checkpoint(path):
            raise UserError(f"{path}: no checkpoint to resume from; start a new run without --resume")
    elif holds_run and not overwrite:
        raise UserError(f"{path}: holds another run; pass --resume to continue it, --overwrite to "
                        "replace it, or choose another --output_dir")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{path}: output directory cannot be created: {existing} is a file; "
                        "choose another --output_dir")
    try:  # permission bits do not tell the whole story (read-only mounts, root), so try a write
        probe = existing / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise UserError(f"{path}: output directory is not writable ({err.strerror}); "
                        "choose another --output_dir") from None


def claim_output_dir(path: Path, *, resume: bool, overwrite: bool) -> None:
    """Create the folder and, with --overwrite, clear the run it held."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{path}: cannot create the output directory ({err.strerror}); "
                        "choose another --output_dir") from None
    holds_run = any((path / marker).exists() for marker in RUN_MARKERS)
    if overwrite and holds_run and not resume:
        for name in (TRAIN_STREAM, VAL_STREAM, SAMPLES, TRAIN_LOG, VAL_LOG):
            (path / name).unlink(missing_ok=True)
        shutil.rmtree(path / CHECKPOINT, ignore_errors=True)


# ---------------------------------------------------------------------- logs
class NoLog:
    """Where the logs of a rank other than 0 go: nowhere."""

    def append(self, entry: dict) -> None:
        pass

    def sync(self) -> None:
        pass

    def close(self) -> None:
        pass


class JsonlLog:
    """An append-only JSON-lines file; each entry is flushed as it is written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open(path, "a", encoding="utf-8")

    def append(self, entry: dict) -> None:
        self._file.write(json.dumps(entry) + "\n")
        self._file.flush()

    def sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def read_jsonl(path: Path) -> list[dict]:
    """Entries of a JSON-lines log; a torn last line (a crash mid-write) is ignored."""
    if not path.exists():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def eval_result_from_entry(entry: dict) -> EvalResult:
    """A validation-log line as an EvalResult (older logs may lack our added keys)."""
    return EvalResult(entry["step"], entry.get("tokens_seen", 0), entry["val_loss"],
                      entry.get("perplexity", math.exp(min(entry["val_loss"], 50))),
                      entry.get("bits_per_byte", float("nan")))


def truncate_logs_to(output_dir: Path, step: int) -> None:
    """Keep log entries up to ``step``: steps after a checkpoint are replayed on resume."""
    for name in (TRAIN_STREAM, VAL_STREAM, SAMPLES):
        path = output_dir / name
        if path.exists():
            kept = [e for e in read_jsonl(path) if e.get("step", 0) <= step]
            atomic.write_text(path, "".join(json.dumps(e) + "\n" for e in kept))


def write_seed_logs(output_dir: Path) -> None:
    """Rewrite the seed's JSON log files (valid JSON lists) from the streams."""
    atomic.write_json(output_dir / TRAIN_LOG, read_jsonl(output_dir / TRAIN_STREAM))
    atomic.write_json(output_dir / VAL_LOG, read_jsonl(output_dir / VAL_STREAM))


# --------------------------------------------------------------- vocab.json
def vocab_mapping(tokenizer: Tokenizer) -> dict[str, int]:
    """Every token as a distinct string: bytes through GPT-2's alphabet, specials verbatim."""
    alphabet = bytes_to_unicode()
    vocab: dict[str, int] = {}
    specials = {token_id: text for text, token_id in tokenizer.encoding._special_tokens.items()}
    for token_id in range(tokenizer.n_vocab):
        if token_id in specials:
            vocab[specials[token_id]] = token_id
            continue
        try:
            raw = tokenizer.token_bytes(token_id)
        except KeyError:  # a gap in the ranks
            continue
        vocab["".join(alphabet[b] for b in raw)] = token_id
    return vocab


def write_vocab(output_dir: Path, tokenizer: Tokenizer) -> None:
    atomic.write_text(output_dir / "vocab.json",
                      json.dumps(vocab_mapping(tokenizer), ensure_ascii=False, indent=0) + "\n")


# ---------------------------------------------------------------- loss plot
def write_loss_plot(output_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = read_jsonl(output_dir / TRAIN_STREAM)
    val = read_jsonl(output_dir / VAL_STREAM)
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    if train:
        ax.plot([e["step"] for e in train], [e["train_loss"] for e in train],
                label="training loss", linewidth=0.8, alpha=0.8)
    if val:
        ax.plot([e["step"] for e in val], [e["val_loss"] for e in val], "o-",
                label="validation loss", linewidth=1.5)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy loss (nats per token)")
    ax.set_title("Loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic.atomic_path(output_dir / "loss_function.png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


# ------------------------------------------------------------ checkpointing
def has_checkpoint(output_dir: Path) -> bool:
    return _complete(output_dir / CHECKPOINT) or _complete(output_dir / (CHECKPOINT + ".old"))


def _complete(folder: Path) -> bool:
    return (folder / "state.json").is_file()


def save_checkpoint(output_dir: Path, model_state: dict[str, torch.Tensor],
                    optimizer_state: dict[str, torch.Tensor], state: dict) -> Path:
    """Write a checkpoint folder atomically: build it aside, then swap it in.

    ``state.json`` is written last, so a folder without it is incomplete. During
    the swap the previous checkpoint survives as ``checkpoint.old``.
    """
    final = output_dir / CHECKPOINT
    building = output_dir / f".{CHECKPOINT}.building"
    old = output_dir / (CHECKPOINT + ".old")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir()
    try:
        with atomic.atomic_path(building / "model.safetensors") as tmp:
            save_file(model_state, str(tmp))
        with atomic.atomic_path(building / "optimizer.safetensors") as tmp:
            save_file(optimizer_state, str(tmp))
        atomic.write_json(building / "state.json", state)
    except (OSError, DiskFull) as err:
        shutil.rmtree(building, ignore_errors=True)
        if isinstance(err, OSError) and err.errno != errno.ENOSPC:
            raise
        needed = sum(t.numel() * t.element_size() for t in
                     list(model_state.values()) + list(optimizer_state.values()))
        free = shutil.disk_usage(output_dir).free
        raise UserError(f"{output_dir}: disk full while saving a checkpoint; it needs about "
                        f"{needed / 2**20:,.0f} MiB free, {free / 2**20:,.0f} MiB are. The previous "
                        "checkpoint is intact: free some space, then continue with --resume") from None
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(building, final)
    shutil.rmtree(old, ignore_errors=True)
    atomic._fsync_directory(output_dir)
    return final


def load_checkpoint(output_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
    """(model state, optimizer state, state.json) of the newest complete checkpoint."""
    for folder in (output_dir / CHECKPOINT, output_dir / (CHECKPOINT + ".old")):
        if not _complete(folder):
            continue
        try:
            state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
            return (load_file(str(folder / "model.safetensors")),
                    load_file(str(folder / "optimizer.safetensors")), state)
        except (OSError, json.JSONDecodeError, SafetensorError) as err:
            raise UserError(f"{folder}: checkpoint unreadable ({str(err).splitlines()[0]}); "
                            "it may be corrupted") from None
    raise UserError(f"{output_dir}: no checkpoint to resume from; start without --resume")


def optimizer_state_tensors(optimizer: torch.optim.Optimizer, names: dict[int, str]) -> dict[str, torch.Tensor]:
    """AdamW's per-parameter state as named tensors (safetensors, never pickle)."""
    out = {}
    for group in optimizer.param_groups:
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                tensor = full_tensor(value) if torch.is_tensor(value) else torch.tensor(value)
                out[f"{names[id(param)]}.{key}"] = tensor.detach().to("cpu").contiguous()
    return out


def restore_optimizer_state(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                            names: dict[int, str]) -> None:
    for group in optimizer.param_groups:
        # Fused AdamW keeps its step count on the parameter's device, the others on the CPU.
        step_device = param_device = None
        for param in group["params"]:
            param_device = param.device
            step_device = param_device if group.get("fused") else torch.device("cpu")
            prefix = names[id(param)] + "."
            state = {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}
            if state:  # the moments are sharded like their parameter under FSDP2
                optimizer.state[param] = {
                    key: (value.to(step_device) if key == "step"
                          else shard_like(value.to(param_device), param))
                    for key, value in state.items()}
