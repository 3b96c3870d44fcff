"""A checkpoint's ``state.json``: read and checked without torch.

Where a run stands (its step, tokens, data position, settings) is plain JSON, so
``gemma-core status`` and an attached studio read it without importing torch;
``checkpoints`` saves and restores the tensors beside it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from gemma_core.errors import UserError
from gemma_core.run.layout import STATE, checkpoint_folders

MAX_COUNT = 2**53  # steps and tokens past this are not a real run's (nor exact in JSON readers)


def check_state(state: object, path: Path) -> dict:
    """A checkpoint's state.json, every number in it checked: a damaged or edited state is
    named, field by field, instead of resuming somewhere wrong."""
    if not isinstance(state, dict):
        raise UserError(f"{path}: damaged checkpoint state (not a JSON object)")

    def fail(field: str, why: str) -> UserError:
        return UserError(f"{path}: damaged checkpoint state: {field!r} {why}; restore the checkpoint or "
                         "start the run again with --overwrite")

    for field in ("step", "tokens_seen"):
        value = state.get(field)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_COUNT:
            raise fail(field, f"is {value!r}, expected a whole number from 0 to {MAX_COUNT}")
    skipped = state.get("skipped_steps", 0)
    if not isinstance(skipped, int) or isinstance(skipped, bool) or skipped < 0:
        raise fail("skipped_steps", f"is {skipped!r}, expected a whole number >= 0")
    best = state.get("best_val_loss")
    if best is not None and (isinstance(best, bool) or not isinstance(best, (int, float)) or not math.isfinite(best)):
        raise fail("best_val_loss", f"is {best!r}, expected a finite number")
    for field in ("data", "rng", "model", "tokenizer", "settings"):
        if not isinstance(state.get(field), dict):
            raise fail(field, "is missing or not an object")
    data = state["data"]
    for field in ("epoch", "position"):
        value = data.get(field)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise fail(f"data.{field}", f"is {value!r}, expected a whole number >= 0")
    torch_rng = state["rng"].get("torch")
    if not isinstance(torch_rng, list) or not all(isinstance(b, int) and 0 <= b < 256 for b in torch_rng):
        raise fail("rng.torch", "is not a list of bytes")
    if not isinstance(state["rng"].get("python"), list):
        raise fail("rng.python", "is missing")
    return state


def read_checkpoint_state(output_dir: Path) -> dict:
    """``state.json`` of the newest complete checkpoint (no tensors read)."""
    for folder in checkpoint_folders(output_dir):
        path = folder / STATE
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            raise UserError(f"{path}: damaged checkpoint state; it may be corrupted") from None
        return check_state(state, path)
    raise UserError(f"{output_dir}: no checkpoint to resume from; start without --resume")
