"""A run's history: its logs read back, and the bounded series a client draws.

``read_run_history`` is the one reader of a run's logs into curves: the engine
replays it when a run resumes, so clients show the whole run, and the viewer
builds a finished run's snapshot from it. ``LossCurveFollower`` keeps only the
loss curves, as columns, and reads only what a live run appends to its logs.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gemma_core.errors import UserError
from gemma_core.run.layout import TRAIN_LOG, TRAIN_STREAM, VAL_LOG, VAL_STREAM, has_checkpoint
from gemma_core.run.log_follower import LogFollower
from gemma_core.run.logs import numbered_entries
from gemma_core.run.events import EvalResult, StepMetrics
from gemma_core.folder_lock import holder_of
from gemma_core.run.checkpoint_state import read_checkpoint_state
from gemma_core.run.layer_probe import layers_from_log


class BoundedSeries:
    """Keeps at most ``capacity`` points; when full, every other point is dropped.

    Points then arrive with a doubled stride, so the kept points stay evenly
    spread over the whole run, the first included: a million-step run holds as
    many points as a thousand-step one.
    """

    def __init__(self, capacity: int = 2048) -> None:
        self.capacity = capacity - capacity % 2
        self.points: list[tuple] = []
        self.stride = 1
        self._count = 0

    def append(self, point: tuple) -> None:
        if self._count % self.stride == 0:
            self.points.append(point)
            if len(self.points) >= self.capacity:
                self.points = self.points[::2]
                self.stride *= 2
        self._count += 1

    def snapshot(self) -> tuple[tuple, ...]:
        return tuple(self.points)


@dataclass(frozen=True)
class RunHistory:
    """What a run's logs say happened, oldest first."""

    steps: tuple[StepMetrics, ...]  # one per logged training step
    evals: tuple[EvalResult, ...]
    # Which log file was read, where there was a choice or a problem, and why: a reader
    # shows these (a log passed over or cut short is never passed over in silence).
    notes: tuple[str, ...] = ()

    @property
    def last_step(self) -> StepMetrics | None:
        return self.steps[-1] if self.steps else None

    @property
    def elapsed_s(self) -> float:
        """Training time so far, on the run's own clock (it goes on across resumes)."""
        return self.steps[-1].elapsed_s if self.steps else 0.0


def _number(path: Path, line: int, entry: dict, key: str, default=None, whole: bool = False):
    value = entry.get(key, default)
    ok = (isinstance(value, int) if whole else isinstance(value, (int, float))) and not isinstance(value, bool)
    if not ok or (whole and value < 0):
        raise UserError(f"{path}:{line}: damaged log line: {key!r} is {value!r}, expected a "
                        f"{'whole number' if whole else 'number'}; delete the line or restore the file")
    return value


def eval_result_from_entry(entry: dict, path: Path = Path("validation_log.jsonl"), line: int = 0) -> EvalResult:
    """A validation-log line as an EvalResult (older logs may lack our added keys, the
    per-layer probe among them)."""
    val_loss = _number(path, line, entry, "val_loss")
    return EvalResult(_number(path, line, entry, "step", whole=True),
                      _number(path, line, entry, "tokens_seen", 0, whole=True), val_loss,
                      _number(path, line, entry, "perplexity", math.exp(min(val_loss, 50))),
                      _number(path, line, entry, "bits_per_byte", float("nan")),
                      layers=layers_from_log(entry, path, line))


def step_metrics_from_entry(entry: dict, max_steps: int, path: Path = Path("training_log.jsonl"),
                            line: int = 0) -> StepMetrics:
    """A training-log line as the StepMetrics the engine emitted for it."""
    return StepMetrics(_number(path, line, entry, "step", whole=True), max_steps,
                       _number(path, line, entry, "tokens_seen", 0, whole=True),
                       _number(path, line, entry, "train_loss"), _number(path, line, entry, "learning_rate"),
                       _number(path, line, entry, "grad_norm", float("nan")),
                       _number(path, line, entry, "tokens_per_s", 0.0),
                       _number(path, line, entry, "elapsed_s", 0.0), None,
                       _number(path, line, entry, "mfu") if "mfu" in entry else None,
                       _learning_rates(entry))


def _learning_rates(entry: dict) -> dict[str, float]:
    """Each optimiser's learning rate (older logs have only ``learning_rate``)."""
    rates = entry.get("learning_rates")
    if not isinstance(rates, dict):
        return {}
    return {str(name): float(value) for name, value in rates.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)}


def read_run_history(output_dir: Path, max_steps: int) -> RunHistory:
    """Replay ``training_log.jsonl`` and ``validation_log.jsonl`` (or, in a folder without
    them, the seed's ``training_log.json`` and ``validation_log.json``). A torn last line is
    skipped and said; a damaged line is reported with its file and line; a seed log that is
    damaged, or that holds steps the stream lacks, is said in ``notes`` with the file used."""
    notes: list[str] = []
    train_path, train_entries = _chosen_log(output_dir / TRAIN_STREAM, output_dir / TRAIN_LOG, "steps", notes)
    val_path, val_entries = _chosen_log(output_dir / VAL_STREAM, output_dir / VAL_LOG, "evaluations", notes)
    steps = tuple(step_metrics_from_entry(entry, max_steps, train_path, line) for line, entry in train_entries)
    evals = tuple(eval_result_from_entry(entry, val_path, line) for line, entry in val_entries)
    return RunHistory(steps, evals, tuple(notes))


def _chosen_log(stream: Path, seed: Path, what: str, notes: list[str]) -> tuple[Path, list[tuple[int, dict]]]:
    """The entries of ``stream`` (appended at every step: the fuller record), else of the
    seed's JSON list ``seed``; what was passed over, and why, goes to ``notes``."""
    if not stream.exists():
        seed_entries, seed_problem = _seed_log_entries(seed)
        if seed_problem:
            notes.append(f"{seed}: {seed_problem}; no {stream.name} either: no {what} shown")
            return stream, []
        if seed_entries:
            notes.append(f"read {seed.name} ({len(seed_entries):,} {what}): the folder has no {stream.name}")
        return seed, seed_entries
    entries = numbered_entries(stream)
    if _last_line_torn(stream):
        notes.append(f"{stream}: its last line is cut short (a write interrupted); read the "
                     f"{len(entries):,} whole {what} before it")
    if seed.exists() and not _looks_whole(seed):  # checked by its ends: the stream is read anyway
        notes.append(f"{seed}: damaged (not a whole JSON list: cut short?); read {stream.name} "
                     f"({len(entries):,} {what}) instead")
    return stream, entries


def _looks_whole(path: Path) -> bool:
    """Whether a JSON-list log starts with ``[`` and ends with ``]`` (a cut one does not)."""
    try:
        with open(path, "rb") as log:
            head = log.read(64).lstrip()
            size = log.seek(0, 2)
            log.seek(max(0, size - 64))
            tail = log.read().rstrip()
    except OSError:
        return False
    return head.startswith(b"[") and tail.endswith(b"]")


def _seed_log_entries(path: Path) -> tuple[list[tuple[int, dict]], str | None]:
    """(entry number, entry) of a seed JSON-list log, or why it cannot be read."""
    if not path.exists():
        return [], None
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as err:
        return [], f"cannot read ({err.strerror})"
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return [], "damaged (not a whole JSON list: cut short while written?)"
    if not isinstance(data, list) or not all(isinstance(entry, dict) for entry in data):
        return [], "damaged (not a JSON list of entries)"
    return list(enumerate(data, start=1)), None


def _last_line_torn(path: Path) -> bool:
    """Whether the log's last line was cut short: no newline after it and not whole JSON."""
    try:
        with open(path, "rb") as log:
            size = log.seek(0, 2)
            log.seek(max(0, size - 65_536))
            tail = log.read()
    except OSError:
        return False
    if not tail or tail.endswith(b"\n"):
        return False
    try:
        json.loads(tail.rsplit(b"\n", 1)[-1].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return True
    return False


# ------------------------------------------------------------- loss curves
@dataclass(frozen=True)
class LossColumns:
    """One log's loss curve as three float columns (24 bytes a line, whatever the line held)."""

    steps: np.ndarray
    tokens: np.ndarray
    loss: np.ndarray

    @staticmethod
    def empty() -> "LossColumns":
        return LossColumns(np.empty(0), np.empty(0), np.empty(0))

    def extended(self, blocks: list[np.ndarray]) -> "LossColumns":
        """New columns with the rows of ``blocks`` after these; these are never changed (another
        thread may be drawing them)."""
        if not blocks:
            return self
        rows = np.concatenate(blocks)
        return LossColumns(*(np.concatenate([old, rows[:, i]]) for i, old in
                             enumerate((self.steps, self.tokens, self.loss))))


BLOCK_ROWS = 65_536  # a long log is gathered a block at a time, never as a million Python tuples


class _FollowedCurve:
    """One log followed into ``LossColumns``: step, tokens seen and the loss named ``loss_key``."""

    def __init__(self, path: Path, loss_key: str, watcher=None) -> None:
        self.follower = LogFollower(path)
        self.loss_key = loss_key
        self.columns = LossColumns.empty()
        # Also given each sound entry (``take``) and told when the log starts over: whoever keeps
        # more of a line than the columns do (a comparison's table) reads the log no second time.
        self.watcher = watcher

    def read_appended(self, stop: threading.Event | None) -> None:
        entries = self.follower.read_appended(stop)
        kept = LossColumns.empty() if self.follower.started_over else self.columns
        if self.follower.started_over and self.watcher is not None:
            self.watcher.start_over()
        blocks, rows = [], []
        for line, entry in entries:
            try:
                rows.append(self._point(line, entry))
            except UserError as err:  # a damaged value: said, and the line left out
                self.follower.damage.append(str(err))
                continue
            if self.watcher is not None:
                self.watcher.take(line, entry)
            if len(rows) == BLOCK_ROWS:
                blocks.append(np.asarray(rows, dtype=float))
                rows = []
        if rows:
            blocks.append(np.asarray(rows, dtype=float))
        self.columns = kept.extended(blocks)

    def _point(self, line: int, entry: dict) -> tuple[float, float, float]:
        path = self.follower.path
        return (_number(path, line, entry, "step", whole=True),
                _number(path, line, entry, "tokens_seen", 0, whole=True), _number(path, line, entry, self.loss_key))


class LossCurveFollower:
    """A run's training and validation loss curves, read in full once and then only as its
    logs grow; once the run has ended (see ``run_has_ended``) its logs are never read again."""

    def __init__(self, folder: Path, val_watcher=None) -> None:
        self.folder = Path(folder)
        self.train = _FollowedCurve(self.folder / TRAIN_STREAM, "train_loss")
        self.val = _FollowedCurve(self.folder / VAL_STREAM, "val_loss", val_watcher)
        self.ended = False

    def read_appended(self, stop: threading.Event | None = None) -> None:
        """Read what the logs gained since the last call (damaged lines are left out and
        said by ``take_damage``)."""
        if self.ended:
            return
        ended = run_has_ended(self.folder)  # asked first: what it wrote before ending is read now
        self.train.read_appended(stop)
        self.val.read_appended(stop)
        self.ended = ended and not (stop is not None and stop.is_set())

    def take_damage(self) -> list[str]:
        """The damaged lines met since the last call, each said once."""
        said = self.train.follower.damage + self.val.follower.damage
        self.train.follower.damage, self.val.follower.damage = [], []
        return said


def run_has_ended(folder: Path) -> bool:
    """No process writes the run and its checkpoint reached its last step: its logs are final."""
    if holder_of(folder) is not None or not has_checkpoint(folder):
        return False
    try:
        state = read_checkpoint_state(folder)
    except UserError:
        return False
    settings = state.get("settings")
    max_steps = settings.get("max_steps") if isinstance(settings, dict) else None
    return isinstance(max_steps, int) and state["step"] >= max_steps
