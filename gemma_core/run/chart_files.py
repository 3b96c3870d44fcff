"""A loss chart as files: the picture as PNG and SVG (matplotlib), its series as CSV.

A client describes what it shows (``ChartCurves`` per run, a ``ChartView``) and
``write_chart_files`` writes the three files side by side, each atomically, under one
timestamped name. Everything is drawn from full-resolution series (the terminal's
downsampling is not carried over); matplotlib is imported only here, on first use.
"""

from __future__ import annotations

import csv
import io
import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gemma_core import atomic
from gemma_core.errors import UserError


def _empty() -> np.ndarray:
    return np.empty(0)


@dataclass(frozen=True)
class ChartCurves:
    """One run's series as a chart shows them: training loss and its smoothed line (finite
    points only, aligned), validation loss, and, where shown, the learning rate."""

    name: str
    steps: np.ndarray = field(default_factory=_empty)
    tokens: np.ndarray = field(default_factory=_empty)
    loss: np.ndarray = field(default_factory=_empty)
    smoothed: np.ndarray = field(default_factory=_empty)
    val_steps: np.ndarray = field(default_factory=_empty)
    val_tokens: np.ndarray = field(default_factory=_empty)
    val_loss: np.ndarray = field(default_factory=_empty)
    lr_steps: np.ndarray = field(default_factory=_empty)
    lr: np.ndarray = field(default_factory=_empty)


@dataclass(frozen=True)
class ChartView:
    x_axis: str = "step"  # or "tokens"
    log_scale: bool = False
    smoothing: float = 0.0
    show_training: bool = True
    show_lr: bool = False  # the studio's chart has a learning-rate axis; a comparison has none
    title: str = "Loss"


CSV_COLUMNS = ("run", "step", "tokens", "train_loss", "train_loss_smoothed", "val_loss", "learning_rate")


def csv_rows(curves: list[ChartCurves], view: ChartView) -> list[dict[str, object]]:
    """One row per run and step (training, evaluation and learning rate joined on the step),
    in the columns the view shows; values as logged (a log scale changes the axis, not them)."""
    rows: list[dict[str, object]] = []
    for run in curves:
        by_step: dict[int, dict[str, object]] = {}

        def row(step: float, tokens: float | None = None) -> dict[str, object]:
            entry = by_step.setdefault(int(step), {"run": run.name, "step": int(step)})
            if tokens is not None:
                entry.setdefault("tokens", int(tokens))
            return entry

        if view.show_training:
            for step, tokens, loss, smoothed in zip(run.steps, run.tokens, run.loss, run.smoothed):
                row(step, tokens).update(train_loss=float(loss), train_loss_smoothed=float(smoothed))
        for step, tokens, loss in zip(run.val_steps, run.val_tokens, run.val_loss):
            row(step, tokens)["val_loss"] = float(loss)
        if view.show_lr:
            for step, lr in zip(run.lr_steps, run.lr):
                row(step)["learning_rate"] = float(lr)
        rows.extend(by_step[step] for step in sorted(by_step))
    return rows


def csv_columns(view: ChartView) -> list[str]:
    shown = set(CSV_COLUMNS)
    if not view.show_training:
        shown -= {"train_loss", "train_loss_smoothed"}
    if not view.show_lr:
        shown.discard("learning_rate")
    return [column for column in CSV_COLUMNS if column in shown]


def csv_text(curves: list[ChartCurves], view: ChartView) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, csv_columns(view), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_rows(curves, view))
    return out.getvalue()


def chart_figure(curves: list[ChartCurves], view: ChartView):
    """The chart as a matplotlib Figure (no pyplot: safe off the main thread)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 5.5), dpi=100)
    ax = fig.add_subplot()
    by_tokens = view.x_axis == "tokens"
    several = len(curves) > 1
    colors = itertools.cycle(f"C{i}" for i in range(10))
    for run in curves:
        color = next(colors)
        prefix = f"{run.name}: " if several else ""
        if view.show_training and run.steps.size:
            x = run.tokens if by_tokens else run.steps
            if not several:  # one run: the raw loss too, faint under its smoothed line
                ax.plot(x, run.loss, color="0.7", linewidth=0.6, label="training loss")
            ax.plot(x, run.smoothed, color=color, linewidth=1.4 if several else 1.8,
                    alpha=0.8 if several else 1.0,
                    label=f"{prefix}training loss (smoothed {view.smoothing:.2f})")
        if run.val_steps.size:
            val_color = color if several else "C1"
            ax.plot(run.val_tokens if by_tokens else run.val_steps, run.val_loss, "o-", color=val_color,
                    markersize=3.5, linewidth=1.2, label=f"{prefix}validation loss")
    ax.set_xlabel("tokens seen" if by_tokens else "optimizer step")
    ax.set_ylabel("cross-entropy loss (nats per token)")
    if view.log_scale:
        ax.set_yscale("log")
    ax.set_title(view.title)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    lr_curves = [run for run in curves if view.show_lr and run.lr_steps.size]
    if lr_curves:
        right = ax.twinx()
        for run in lr_curves:
            lr_x = np.interp(run.lr_steps, run.steps, run.tokens) if by_tokens and run.steps.size else run.lr_steps
            right.plot(lr_x, run.lr, color="C2", linewidth=0.9, label="learning rate")
        right.set_ylabel("learning rate")
        if view.log_scale:
            right.set_yscale("log")
        more_handles, more_labels = right.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    if handles:  # a run before its first step has no curves yet
        ax.legend(handles, labels, fontsize="small")
    fig.tight_layout()
    return fig


def export_names(folder: Path, stem: str, now: float | None = None) -> dict[str, Path]:
    """``STEM-YYYYmmdd-HHMMSS.{png,svg,csv}`` in ``folder``, none of them taken (a second
    export within the same second gets ``-2``)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    for n in itertools.count(1):
        base = f"{stem}-{stamp}" + (f"-{n}" if n > 1 else "")
        paths = {kind: folder / f"{base}.{kind}" for kind in ("png", "svg", "csv")}
        if not any(path.exists() or path.is_symlink() for path in paths.values()):
            return paths
    raise AssertionError("unreachable")


def write_chart_files(curves: list[ChartCurves], view: ChartView, folder: Path, stem: str = "loss") -> list[Path]:
    """Write the chart as PNG and SVG and its series as CSV into ``folder`` (created if
    needed); the paths written, PNG first. Each file is whole or absent, never half written."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{folder}: cannot create the folder for the exported chart ({err.strerror}); "
                        "make its parent writable") from None
    if not folder.is_dir():
        raise UserError(f"{folder}: is not a folder; move it away to export the chart there")
    paths = export_names(folder, stem)
    atomic.write_text(paths["csv"], csv_text(curves, view))
    fig = chart_figure(curves, view)
    for kind in ("png", "svg"):
        with atomic.atomic_path(paths[kind]) as tmp:
            fig.savefig(tmp, format=kind)
    return [paths["png"], paths["svg"], paths["csv"]]
