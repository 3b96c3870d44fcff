"""How a run stands, as JSON values: from its server while it is live, from its files when
not (finished, stopped, or its process gone). ``gemma-core status`` prints it; the studio's
run picker lists it for every run under a folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

from gemma_core.errors import UserError

_ON_STDERR = object()  # connect's own default: a note on stderr before talking to a remote host


def run_status(folder: Path, announce=_ON_STDERR) -> dict:
    """A run's state as JSON values: from its server when it is live, from its files when not.

    A live run whose server is slow is never called dead: while its process lives it is "not
    answering" (with how long it was waited for), or "live" when its key is another user's.
    ``announce``: see ``connect`` (None: a run serving on a non-loopback host is refused)."""
    from gemma_core.serve.client import KeyNotReadable, ProcessGone, RunNotAnswering, RunNotRunning, connect

    _require_readable_folder(folder)
    kwargs = {} if announce is _ON_STDERR else {"announce": announce}
    try:
        snap = connect(folder, **kwargs).snapshot()
        return _status_of(snap, live=True, state=snap.state.value)
    except RunNotAnswering as err:
        return _live_but_unseen(folder, err, "not answering", not_answering_s=err.waited_s)
    except KeyNotReadable as err:
        return _live_but_unseen(folder, err, "live")
    except ProcessGone:
        return status_from_files(folder, died=True)
    except RunNotRunning:
        return status_from_files(folder, died=_server_files_left(folder))


def _live_but_unseen(folder: Path, why, state: str, **extra) -> dict:
    """A live run this client cannot ask: how it stands from its files, said to be live."""
    try:
        status = status_from_files(folder, died=False)
    except UserError:
        raise why from None
    status.pop("resume_command", None)  # it is running: resuming it would make two writers
    status.update(state=state, live=True, problem=str(why), **extra)
    return status


def _server_files_left(folder: Path) -> bool:
    """Whether the run left its server files behind (it stopped answering without removing them)."""
    from gemma_core.serve import server_files

    try:
        return server_files.read_server_files(folder) is not None
    except UserError:
        return True


def _require_readable_folder(folder: Path) -> None:
    try:
        os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        raise UserError(f"{folder}: run folder not found") from None
    except PermissionError:
        raise UserError(f"{folder}: cannot read this folder (permission denied); run this as the user who "
                        "owns it, or give it read permission") from None
    except OSError as err:
        raise UserError(f"{folder}: cannot read this folder ({err.strerror})") from None


def _status_of(snap, live: bool, state: str) -> dict:
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
    from gemma_core.run import layout

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
    from gemma_core.run import layout
    from gemma_core.run.checkpoint_state import read_checkpoint_state
    from gemma_core.run.history import read_run_history
    from gemma_core.train.state_store import RunStateStore

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
        from gemma_core.train.events import CheckpointSaved
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
    status = _status_of(snap, live=False, state=kind)
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
