"""One line per run for a comparison table: its preset, its settings, its best and final
validation loss and bits per byte, and how far it went (steps, tokens, training time).

``RunSummaryFollower`` takes each evaluation as the run's validation log is followed (see
``LossCurveFollower``) and reads only the last line of its training log, so a live run's
summary costs what its new evaluations cost, however long it has trained. ``differing_settings`` picks the
settings worth a column: those whose values are not the same in every run.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from gemma_core.errors import UserError
from gemma_core.run.checkpoint_state import read_checkpoint_state
from gemma_core.run.history import eval_result_from_entry
from gemma_core.run.layout import CONFIG, TRAIN_STREAM, VAL_STREAM, has_checkpoint
from gemma_core.run.events import EvalResult

# Where and how a run was started, not what it trained: these differ between any two runs
# (their folders) or say nothing about the curves, so they never get a column.
NOT_COMPARED = frozenset({"output_dir", "cache_dir", "resume", "overwrite", "serve", "serve_host",
                          "serve_port", "preset", "train_texts", "val_texts"})
TAIL_BYTES = 65_536  # enough for the last line of a training log


@dataclass(frozen=True)
class RunSummary:
    preset: str | None = None
    settings: dict[str, object] = field(default_factory=dict)  # flat: "model_overrides.emb_dim"
    best: EvalResult | None = None  # the evaluation with the lowest validation loss
    final: EvalResult | None = None  # the latest evaluation
    steps: int | None = None  # the last step logged
    tokens: int | None = None
    elapsed_s: float | None = None  # training time, on the run's own clock


def read_run_settings(folder: Path) -> tuple[str | None, dict[str, object]]:
    """(preset, flat settings): config.json's ``training`` block, overlaid with the newest
    checkpoint's settings (a resume may have changed some). Unreadable files give what the
    others say: a summary never stops a comparison."""
    training: dict = {}
    try:
        config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
        if isinstance(config, dict) and isinstance(config.get("training"), dict):
            training = dict(config["training"])
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        pass
    if has_checkpoint(folder):
        try:
            saved = read_checkpoint_state(folder).get("settings")
        except UserError:
            saved = None
        if isinstance(saved, dict):
            training.update(saved)
    preset = training.get("preset")
    return (str(preset) if preset is not None else None), _flat(training)


def _flat(settings: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if not prefix and key in NOT_COMPARED:
            continue
        if isinstance(value, dict):
            flat.update(_flat(value, f"{name}."))
        else:
            flat[name] = tuple(value) if isinstance(value, list) else value
    return flat


def differing_settings(summaries: list[RunSummary]) -> list[str]:
    """The settings whose values are not the same in every run (one a run lacks counts as
    different), in the order the runs first name them."""
    missing = object()
    names = list(dict.fromkeys(name for summary in summaries for name in summary.settings))
    return [name for name in names
            if len({repr(summary.settings.get(name, missing)) for summary in summaries}) > 1]


class RunSummaryFollower:
    """A run's summary. Its evaluations arrive as the run's validation log is followed (it is
    the ``val_watcher`` of the run's ``LossCurveFollower``: the log is read once, for both);
    ``refresh`` adds its settings and the last training step (off the UI thread)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._best: EvalResult | None = None
        self._final: EvalResult | None = None
        self.summary = RunSummary()

    def start_over(self) -> None:
        """The validation log was replaced (a resume rewrites it): its evaluations come again."""
        self._best = self._final = None

    def take(self, line: int, entry: dict) -> None:
        """One evaluation from the validation log (a damaged one is left out: the curves say it)."""
        try:
            result = eval_result_from_entry(entry, self.folder / VAL_STREAM, line)
        except UserError:
            return
        self._final = result
        if math.isfinite(result.val_loss) and (self._best is None or result.val_loss < self._best.val_loss):
            self._best = result

    def refresh(self) -> RunSummary:
        preset, settings = read_run_settings(self.folder)
        last = last_log_entry(self.folder / TRAIN_STREAM)
        self.summary = RunSummary(preset, settings, self._best, self._final,
                                  _whole(last.get("step")), _whole(last.get("tokens_seen")),
                                  _real(last.get("elapsed_s")))
        return self.summary


def last_log_entry(path: Path) -> dict:
    """The last whole line of a JSON-lines log, read from its end ({} if none)."""
    try:
        with open(path, "rb") as log:
            size = log.seek(0, 2)
            log.seek(max(0, size - TAIL_BYTES))
            tail = log.read()
    except OSError:
        return {}
    for line in reversed(tail.split(b"\n")):
        try:
            entry = json.loads(line)
        except (UnicodeDecodeError, ValueError, RecursionError):
            continue  # a line still being written, or cut by the window
        if isinstance(entry, dict):
            return entry
    return {}


def _whole(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _real(value) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None
