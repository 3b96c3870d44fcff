"""The runs under a folder, for a picker: where each is, how it stands, its best validation
loss and when it last wrote.

A run folder is found by the same markers ``gemma-core train`` refuses to overwrite (a run's
config.json, its logs or a checkpoint). A folder that holds a run is not searched further:
its checkpoints are not runs of their own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from gemma_core.errors import UserError
from gemma_core.run import layout
from gemma_core.serve.status import run_status

SEARCH_DEPTH = 3  # runs/x is found from the project folder, a/b/runs/x is not
SKIPPED = {"node_modules", "__pycache__", "site-packages"}  # never hold runs; can be huge


@dataclass(frozen=True)
class RunEntry:
    folder: Path
    state: str  # a live run's state (running, paused, ...), else finished, stopped or died
    live: bool
    step: int
    max_steps: int
    best_val_loss: float | None
    best_val_step: int | None
    modified: float  # when the run last wrote a file (seconds since the epoch)
    problem: str | None = None  # why its files could not be read, for a damaged run

    @property
    def opens(self) -> bool:
        return self.problem is None


def find_runs(root: Path, depth: int = SEARCH_DEPTH) -> list[RunEntry]:
    """Every run at most ``depth`` folders below ``root`` (``root`` itself included), the
    most recently active first. A run whose files cannot be read is listed with the reason,
    and so is a folder this user may not read (it may hold a run)."""
    if not root.is_dir():
        raise UserError(f"{root}: no such folder (--runs names the folder that holds your runs)")
    entries = (describe_run(folder) if problem is None else _unreadable(folder, problem)
               for folder, problem in _run_folders(root, depth))
    return sorted(entries, key=lambda entry: entry.modified, reverse=True)


def _run_folders(root: Path, depth: int):
    """(folder, None) for each run folder; (folder, why) for each folder that cannot be read."""
    try:
        holds = layout.holds_run(root)
        children = [] if holds or depth == 0 else sorted(
            p for p in root.iterdir() if p.is_dir() and not p.is_symlink())
    except OSError as err:
        yield root, (f"{root}: cannot read this folder ({err.strerror or err}); run this as the user who "
                     "owns it, or give it read permission")
        return
    if holds:
        yield root, None
        return
    for child in children:
        if child.name.startswith(".") or child.name in SKIPPED:
            continue
        yield from _run_folders(child, depth - 1)


def describe_run(folder: Path) -> RunEntry:
    modified = _last_written(folder)
    try:
        # The picker never talks to another machine unasked: a run serving on a non-loopback
        # host is listed as such and opened with gemma-tui attach.
        status = run_status(folder, announce=None)
    except UserError as err:
        return _unreadable(folder, str(err), modified)
    except OSError as err:
        why = f"{err.filename or folder}: cannot be read ({err.strerror or err})"
        return _unreadable(folder, why, modified)
    problem = status.get("problem")  # live, but not answering or not this user's to open
    return RunEntry(folder, status["state"], bool(status["live"]), status["step"], status["max_steps"],
                    status.get("best_val_loss"), status.get("best_val_step"), modified, problem=problem)


def _unreadable(folder: Path, problem: str, modified: float | None = None) -> RunEntry:
    modified = _last_written(folder) if modified is None else modified
    return RunEntry(folder, "unreadable", False, 0, 0, None, None, modified, problem=problem)


def _last_written(folder: Path) -> float:
    times = []
    for name in (layout.TRAIN_STREAM, layout.VAL_STREAM, layout.CONFIG):
        try:
            times.append(os.stat(folder / name).st_mtime)
        except OSError:
            pass
    if times:
        return max(times)
    try:
        return folder.stat().st_mtime
    except OSError:
        return 0.0
