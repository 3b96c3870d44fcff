"""How a run stands, as JSON values, read from its files: a run that is finished, stopped, or
whose process is gone. (A live run is asked through its server: serve/status.py.)"""

from __future__ import annotations

import json
import os
from pathlib import Path

from gemma_core.errors import UserError
from gemma_core.run import layout
from gemma_core.run.checkpoint_state import read_checkpoint_state
from gemma_core.run.events import CheckpointSaved
from gemma_core.run.history import read_run_history
from gemma_core.run.state_store import RunStateStore

def status_of(snap, live: bool, state: str) -> dict:
    """A snapshot as the JSON values ``gemma-core status`` prints."""
    latest = snap.latest
    last_eval = snap.eval_history[-1] if snap.eval_history else None
    checkpoint = snap.last_checkpoint
    return {
        "output_dir": snap.output_dir, "run_id": snap.run_id, "live": live, "state": state,
        "step": snap.step, "max_steps": snap.max_steps, "tokens_seen": snap.tokens_seen,
        "train_loss": latest.loss if latest else None,
        "learning_rate": latest.learning_rate if latest else None,
        "tokens_per_s": latest.tokens_per_s if latest and live else None,
        "eta_s": latest.eta_s if latest and live else None,
        "val_loss": last_eval.val_loss if last_eval else None,
        "bits_per_byte": last_eval.bits_per_byte if last_eval else None,
        "best_val_loss": snap.best_eval.val_loss if snap.best_eval else None,
        "best_val_step": snap.best_eval.step if snap.best_eval else None,
        "last_checkpoint": ({"step": checkpoint.step, "path": checkpoint.path, "saved_at": checkpoint.wall_time}
                            if checkpoint else None),
        "error": snap.error,
    }


def status_from_files(folder: Path, died: bool) -> dict:
    if not folder.is_dir():
        raise UserError(f"{folder}: run folder not found")
    _require_readable_files(folder)
    try:
        return _status_from_files(folder, died)
    except OSError as err:  # e.g. a file made unreadable while it was read
        raise UserError(f"{err.filename or folder}: cannot be read ({err.strerror}); run this as the user "
                        "who owns the run, or give it read permission") from None


def _require_readable_files(folder: Path) -> None:
    """A file of the run this user may not read is said, not taken for a missing one."""
    names = (layout.CONFIG, layout.TRAIN_STREAM, layout.VAL_STREAM, layout.TRAIN_LOG, layout.CHECKPOINT,
             f"{layout.CHECKPOINT}/{layout.STATE}", layout.PREVIOUS_CHECKPOINT,
             f"{layout.PREVIOUS_CHECKPOINT}/{layout.STATE}")
    for name in names:
        try:
            os.close(os.open(folder / name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY))
        except (FileNotFoundError, NotADirectoryError):
            pass
        except PermissionError:
            raise UserError(f"{folder / name}: cannot be read (permission denied); run this as the user who "
                            "owns the run, or give it read permission") from None
        except OSError:
            pass  # a FIFO, a loop...: the readers that follow say what is wrong with it


def _status_from_files(folder: Path, died: bool) -> dict:
    if not layout.holds_run(folder):
        raise UserError(f"{folder}: holds no run (no config.json, logs or checkpoint)")
    state = read_checkpoint_state(folder) if layout.has_checkpoint(folder) else None
    settings = state.get("settings", {}) if state else _training_settings(folder)
    max_steps = settings.get("max_steps") if isinstance(settings.get("max_steps"), int) else 0
    store = RunStateStore(state.get("run_id", folder.name) if state else folder.name, str(folder), max_steps,
                          settings.get("preset"))
    store.load_history(read_run_history(folder, max_steps), position_from_logs=True)
    snap = store.snapshot()
    if state is not None:
        saved = CheckpointSaved(state["step"], str(layout.newest_checkpoint(folder)), state.get("saved_at", 0.0))
        store.set_position(step=state["step"], tokens_seen=state["tokens_seen"],
                           skipped_steps=state.get("skipped_steps", 0), last_checkpoint=saved)
        snap = store.snapshot()
    if state is not None and max_steps and state["step"] >= max_steps:
        kind = "finished"
    elif died:
        kind = "died"  # its process ended without a word: killed, or the machine went down
    else:
        kind = "stopped"
    status = status_of(snap, live=False, state=kind)
    if kind != "finished":
        status["resume_command"] = (f"gemma-core train --resume --output_dir {folder}" if state is not None
                                    else f"gemma-core train --overwrite --output_dir {folder} (no checkpoint "
                                         "to resume from)")
    return status


def _training_settings(folder: Path) -> dict:
    try:
        data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    training = data.get("training") if isinstance(data, dict) else None
    return training if isinstance(training, dict) else {}
