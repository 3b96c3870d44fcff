"""A run's history: its logs read back, and the bounded series a client draws.

``read_run_history`` is the one reader of a run's logs into curves: the engine
replays it when a run resumes, so clients show the whole run, and the viewer
builds a finished run's snapshot from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from gemma_core.run.layout import TRAIN_STREAM, VAL_STREAM
from gemma_core.errors import UserError
from gemma_core.run.logs import numbered_entries
from gemma_core.train.events import EvalResult, StepMetrics


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
    """A validation-log line as an EvalResult (older logs may lack our added keys)."""
    val_loss = _number(path, line, entry, "val_loss")
    return EvalResult(_number(path, line, entry, "step", whole=True),
                      _number(path, line, entry, "tokens_seen", 0, whole=True), val_loss,
                      _number(path, line, entry, "perplexity", math.exp(min(val_loss, 50))),
                      _number(path, line, entry, "bits_per_byte", float("nan")))


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
    """Replay ``training_log.jsonl`` and ``validation_log.jsonl``. A torn last line is
    skipped; a damaged line is reported with its file and line."""
    train, val = output_dir / TRAIN_STREAM, output_dir / VAL_STREAM
    steps = tuple(step_metrics_from_entry(entry, max_steps, train, line)
                  for line, entry in numbered_entries(train))
    evals = tuple(eval_result_from_entry(entry, val, line) for line, entry in numbered_entries(val))
    return RunHistory(steps, evals)
