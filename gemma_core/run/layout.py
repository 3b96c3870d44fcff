"""A run folder: the seed's file names, and who may write there.

    output_dir/
      config.json            model fields (seed names) + "tokenizer" + "training"
      model.safetensors      best-validation weights
      training_log.json      the seed's log files, rewritten atomically at checkpoints
      validation_log.json
      training_log.jsonl     append-only streams written every step (crash-safe, linear cost)
      validation_log.jsonl
      vocab.json             token -> id, lossless (GPT-2's byte-to-unicode alphabet)
      tokenizer.json         the tokenizer for Hugging Face tokenizers, with tokenizer_config.json
      tokenizer.tiktoken     ... and for tiktoken, with tokenizer.tiktoken.json (see
                             gemma_core/tokenizers/tokenizer_files.py; checkpoints hold them too)
      loss_function.png      train and validation loss against optimizer step
      samples.jsonl          continuations sampled during training
      checkpoint/            resumable state: weights, optimizer, step, RNG, data position

A folder never mixes two runs: a new run refuses a folder that holds one,
unless told to resume it or to overwrite it, and overwriting removes every
file of the old run before the new one writes its first.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from gemma_core import atomic
from gemma_core.errors import UserError
from gemma_core.tokenizers.tokenizer_files import TOKENIZER_FILES
from gemma_core.folder_lock import refuse_if_live

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
TRAIN_LOG = "training_log.json"
VAL_LOG = "validation_log.json"
TRAIN_STREAM = "training_log.jsonl"
VAL_STREAM = "validation_log.jsonl"
SAMPLES = "samples.jsonl"
CHAT_TRANSCRIPT = "chat.jsonl"  # the studio's chat with the run, one exchange a line
VOCAB = "vocab.json"
LOSS_PLOT = "loss_function.png"
CHECKPOINT = "checkpoint"
PREVIOUS_CHECKPOINT = CHECKPOINT + ".old"  # the last one, kept while a new one is swapped in
BUILDING_CHECKPOINT = "." + CHECKPOINT + ".building"
STATE = "state.json"  # inside a checkpoint folder; written last

RUN_MARKERS = (CONFIG, CHECKPOINT, TRAIN_STREAM, TRAIN_LOG)
# Everything a run writes; --overwrite removes all of it and nothing else.
RUN_FILES = (CONFIG, WEIGHTS, TRAIN_LOG, VAL_LOG, TRAIN_STREAM, VAL_STREAM, SAMPLES, CHAT_TRANSCRIPT,
             VOCAB, LOSS_PLOT, *TOKENIZER_FILES)
RUN_FOLDERS = (CHECKPOINT, PREVIOUS_CHECKPOINT, BUILDING_CHECKPOINT)


# ---------------------------------------------------------------- checkpoints
def checkpoint_folders(output_dir: Path) -> list[Path]:
    """The complete checkpoint folders, newest first.

    A checkpoint is complete once its ``state.json`` exists (it is written last).
    ``checkpoint.old`` only survives a crash in the middle of swapping a new
    checkpoint in, and is then the newest complete one after ``checkpoint``.
    """
    folders = (output_dir / CHECKPOINT, output_dir / PREVIOUS_CHECKPOINT)
    return [folder for folder in folders if (folder / STATE).is_file()]


def newest_checkpoint(output_dir: Path) -> Path | None:
    folders = checkpoint_folders(output_dir)
    return folders[0] if folders else None


def has_checkpoint(output_dir: Path) -> bool:
    return newest_checkpoint(output_dir) is not None


# ----------------------------------------------------------------- the folder
def holds_run(path: Path) -> bool:
    if not path.is_dir():
        return False
    return any((path / marker).exists() and (marker != CONFIG or is_run_config(path / marker))
               for marker in RUN_MARKERS)


def is_run_config(path: Path) -> bool:
    """A run's config.json (model fields by the seed's names), not some other program's."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and all(key in data for key in ("vocab_size", "emb_dim", "n_layers"))


# Beside a run's own files, a run folder may hold these (a kept run's output, a live
# run's address); hidden files are the lock and interrupted writes.
RUN_COMPANIONS = ("train.log", "server.json", "server.token")


def foreign_entries(path: Path) -> list[str]:
    """What in ``path`` is not a run's: a run never starts among someone else's files."""
    if not path.is_dir():
        return []
    ours = set(RUN_FILES) | set(RUN_FOLDERS) | set(RUN_COMPANIONS)
    found = []
    for entry in sorted(path.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.name not in ours or (entry.name == CONFIG and not is_run_config(entry)):
            found.append(entry.name)
    return found


def check_entry_kinds(path: Path) -> None:
    """Each run file is a regular file and each checkpoint a folder, before the run
    writes any: finding a folder where a file goes only at the first checkpoint would
    stop a run that had already trained."""
    for name in RUN_FILES:
        entry = path / name
        if (entry.exists() or entry.is_symlink()) and (entry.is_symlink() or not entry.is_file()):
            raise UserError(f"{entry}: is not a regular file, but the run writes a file by this name; "
                            "move it away and run again")
    for name in (CHECKPOINT, PREVIOUS_CHECKPOINT):
        entry = path / name
        if (entry.exists() or entry.is_symlink()) and (entry.is_symlink() or not entry.is_dir()):
            raise UserError(f"{entry}: is not a folder, but the run keeps its checkpoint there; "
                            "move it away and run again")


def check_output_dir(path: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to mix two runs in one folder, to write among files that are not a run's,
    to change a folder a live run writes, or a folder that cannot be written.

    Changes nothing on disk: a run that then fails on its inputs leaves the folder
    as it was. ``claim_output_dir`` makes the changes once the run is set to start.
    """
    refuse_if_live(path, "a second run")
    if not resume and not holds_run(path):
        foreign = foreign_entries(path)
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise UserError(f"{path}: holds files that are not a run's ({shown}); a run starts in an empty "
                            "or new folder: choose another --output_dir")
    check_entry_kinds(path)
    if holds_run(path) and not has_checkpoint(path) and (resume or not overwrite):
        raise UserError(f"{path}: holds a run that stopped before its first checkpoint, so there is "
                        "nothing to resume; pass --overwrite to start it again, or choose another "
                        "--output_dir")
    if resume:
        if not has_checkpoint(path):
            raise UserError(f"{path}: no checkpoint to resume from; start a new run without --resume")
    elif holds_run(path) and not overwrite:
        raise UserError(f"{path}: holds another run; pass --resume to continue it, --overwrite to "
                        "replace it, or choose another --output_dir")
    check_writable(path)


def check_writable(path: Path) -> None:
    """Refuse a folder that cannot be created or written, changing nothing."""
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
    """Create the folder and clear what an interrupted writer left; with --overwrite,
    remove every file of the run it held. Call it holding the folder's lock.

    Files that are not a run's (a user's notes, a dataset) are left alone.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{path}: cannot create the output directory ({err.strerror}); "
                        "choose another --output_dir") from None
    # The run holds the folder's lock: whatever a killed writer left half-done is stale.
    atomic.remove_leftovers(path)
    shutil.rmtree(path / BUILDING_CHECKPOINT, ignore_errors=True)
    if overwrite and not resume:
        for name in RUN_FILES:
            (path / name).unlink(missing_ok=True)
        for name in RUN_FOLDERS:
            shutil.rmtree(path / name, ignore_errors=True)
