"""Every scalar a run logs, as series the Charts screen draws: no UI here.

The snapshot carries the loss curves, the learning rate and the evaluations; the
other numbers a step logs (grad norm, tokens/s, each optimiser's learning rate,
MFU on a GPU) are only in the run's ``training_log.jsonl``, which is followed as it
grows (``LogFollower``: each read parses only the lines appended since the last)
and thinned as the snapshot's histories are (``BoundedSeries``), so a long run
costs what a short one does. A long log is read a slice at a time
(``LINES_PER_READ``), so opening the screen on it never freezes the studio.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gemma_core.errors import UserError
from gemma_core.run.history import BoundedSeries, step_metrics_from_entry
from gemma_core.run.layout import TRAIN_STREAM
from gemma_core.run.log_follower import LogFollower
from gemma_core.run.events import RunSnapshot
from gemma_tui.series import columns_of, interpolate_x

LINES_PER_READ = 20_000  # about 0.1 s of parsing: the rest is read on the next call
NO_POINTS = np.empty(0)


@dataclass(frozen=True, eq=False)  # compared by identity: its arrays have no single truth value
class Series:
    """One curve: its values at logged steps, with the tokens seen at each."""

    name: str
    steps: np.ndarray
    tokens: np.ndarray
    values: np.ndarray
    per_step: bool = True  # logged every step (smoothing applies); False: evaluations, schedules


@dataclass(frozen=True, eq=False)
class Metric:
    """One chart's worth: a named quantity, its series, and why it has none where it has none."""

    key: str
    title: str
    series: tuple[Series, ...]
    format: Callable[[float], str]
    absent: str | None = None  # shown instead of an empty chart

    @property
    def has_points(self) -> bool:
        return any(s.steps.size for s in self.series)


def _loss(value: float) -> str:
    return f"{value:.4f}"


def _rate(value: float) -> str:
    return f"{value:.2e}"


def _speed(value: float) -> str:
    return f"{value:,.0f}"


def _share(value: float) -> str:
    return f"{value:.1%}"


def _short(value: float) -> str:
    return f"{value:.3g}"


# key, title, format: the charts in the order they are shown
METRICS = (
    ("loss", "Training loss", _loss), ("val_loss", "Validation loss", _loss),
    ("perplexity", "Perplexity", _short), ("bits_per_byte", "Bits per byte", _loss),
    ("grad_norm", "Grad norm", _short), ("tokens_per_s", "Tokens/s", _speed),
    ("learning_rate", "Learning rate", _rate), ("mfu", "MFU", _share),
)


class LoggedSteps:
    """What ``training_log.jsonl`` says of each step beyond the snapshot's curves."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.follower = LogFollower(folder / TRAIN_STREAM)
        self.points = BoundedSeries()
        self.more_to_read = False
        self.damaged = 0  # lines left out: a damaged value

    def read(self, lines: int = LINES_PER_READ) -> bool:
        """Read up to ``lines`` appended lines; whether anything new came in."""
        entries = self.follower.read_appended()
        if self.follower.started_over:  # rewritten (a resume cut it back): start again
            self.points = BoundedSeries()
        taken = 0
        for taken, (line, entry) in enumerate(entries, start=1):
            try:
                m = step_metrics_from_entry(entry, 0, self.follower.path, line)
            except UserError:
                self.damaged += 1
            else:
                self.points.append((m.step, m.tokens_seen, m.grad_norm, m.tokens_per_s,
                                    math.nan if m.mfu is None else m.mfu, m.learning_rates))
            if taken >= lines:
                break
        close = getattr(entries, "close", None)
        if close is not None:
            close()  # the follower carries on after the last line taken
        self.more_to_read = taken >= lines
        return taken > 0 or self.follower.started_over

    def columns(self) -> dict[str, np.ndarray]:
        rows = self.points.points
        steps, tokens, grad, speed, mfu = columns_of([row[:5] for row in rows], 0, 1, 2, 3, 4)
        names = sorted({name for row in rows for name in row[5]})
        rates = {name: np.array([row[5].get(name, math.nan) for row in rows], dtype=float) for name in names}
        return {"steps": steps, "tokens": tokens, "grad_norm": grad, "tokens_per_s": speed, "mfu": mfu,
                **{f"lr:{name}": values for name, values in rates.items()}}


class RunMetrics:
    """The metrics of the run the studio shows, kept up to date from its snapshots and its log."""

    def __init__(self) -> None:
        self.logged: LoggedSteps | None = None
        self.snapshot: RunSnapshot | None = None
        self.version = 0  # changes whenever what ``metrics`` returns may have
        self._metrics: tuple[Metric, ...] | None = None

    @property
    def reading(self) -> bool:
        """The log is longer than one read: call ``update`` again soon."""
        return self.logged is not None and self.logged.more_to_read

    def update(self, snapshot: RunSnapshot) -> None:
        folder = Path(snapshot.output_dir) if snapshot.output_dir else None
        if folder is not None and (self.logged is None or self.logged.folder != folder):
            self.logged = LoggedSteps(folder)
        changed = snapshot is not self.snapshot
        if self.logged is not None:
            try:
                changed = self.logged.read() or changed
            except UserError:  # unreadable: the charts say the log is not there
                pass
        self.snapshot = snapshot
        if changed:
            self._metrics = None
            self.version += 1

    def metrics(self) -> tuple[Metric, ...]:
        if self._metrics is None:
            self._metrics = tuple(self._build())
        return self._metrics

    # ---------------------------------------------------------------- building
    def _build(self):
        snap = self.snapshot
        train = snap.train_history if snap is not None else ()
        steps, tokens, loss = columns_of(train, 0, 1, 2)
        evals = snap.eval_history if snap is not None else ()
        e_steps, e_tokens, val, ppl, bpb = columns_of(
            [(e.step, e.tokens_seen, e.val_loss, e.perplexity, e.bits_per_byte) for e in evals], 0, 1, 2, 3, 4)
        logged = self.logged.columns() if self.logged is not None else {}
        l_steps, l_tokens = logged.get("steps", NO_POINTS), logged.get("tokens", NO_POINTS)
        for key, title, fmt in METRICS:
            if key == "loss":
                series = (Series("train", steps, tokens, loss),)
            elif key in ("val_loss", "perplexity", "bits_per_byte"):
                values = {"val_loss": val, "perplexity": ppl, "bits_per_byte": bpb}[key]
                series = (Series("val", e_steps, e_tokens, values, per_step=False),)
            elif key == "learning_rate":
                series = self._learning_rates(logged, steps, tokens)
            else:
                series = (Series(key.replace("_", " "), l_steps, l_tokens, logged.get(key, NO_POINTS)),)
            series = tuple(_finite(s) for s in series)
            metric = Metric(key, title, series, fmt)
            if not metric.has_points:
                metric = Metric(key, title, (), fmt, self._why_empty(key))
            yield metric

    def _learning_rates(self, logged: dict, steps: np.ndarray, tokens: np.ndarray) -> tuple[Series, ...]:
        """One series per optimiser the log names (Muon and AdamW...), else the snapshot's one rate."""
        groups = sorted(name for name in logged if name.startswith("lr:"))
        if groups:
            return tuple(Series(name[3:], logged["steps"], logged["tokens"], logged[name], per_step=False)
                         for name in groups)
        lr_steps, lr = columns_of(self.snapshot.lr_history if self.snapshot else (), 0, 1)
        lr_tokens = interpolate_x(lr_steps, steps, tokens) if steps.size else np.full(lr_steps.shape, np.nan)
        return (Series("lr", lr_steps, lr_tokens, lr, per_step=False),)

    def _why_empty(self, key: str) -> str:
        snap = self.snapshot
        if snap is None or (key in ("loss", "learning_rate") and not snap.train_history):
            return "waiting for the first optimizer step"
        if key in ("val_loss", "perplexity", "bits_per_byte"):
            return "no evaluation yet (e evaluates now)"
        if key == "mfu" and snap.device.startswith("cpu"):
            return "no MFU on a CPU"
        if self.logged is None or not self.logged.follower.path.exists():
            return f"no {TRAIN_STREAM} to read it from"
        if key == "mfu":
            return "no MFU: this GPU's peak is unknown"
        return "waiting for the first optimizer step"


def _finite(series: Series) -> Series:
    keep = np.isfinite(series.values) & np.isfinite(series.steps)
    if keep.all():
        return series
    return Series(series.name, series.steps[keep], series.tokens[keep], series.values[keep], series.per_step)
