"""Export the loss chart on screen: the studio's or a comparison's, as it is shown (which
series, x axis, smoothing, log scale), to PNG, SVG and CSV (``gemma_core.run.chart_files``).

The files are written off the UI thread (matplotlib is slow to import and to draw), then a
toast names them; one export at a time.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from gemma_core.errors import UserError, internal_message
from gemma_core.run.chart_files import ChartCurves, ChartView, write_chart_files
from gemma_core.safe_text import printable
from gemma_tui.series import columns_of, ema, finite

EXPORTS = "exports"  # the run folder's subfolder the studio exports into


def _train_curves(name: str, steps, tokens, loss, smoothing: float, **rest) -> ChartCurves:
    """The training points the chart draws (finite losses) and the same smoothed, aligned."""
    keep = np.isfinite(loss) & np.isfinite(steps) & np.isfinite(tokens)
    steps, tokens, loss = steps[keep], tokens[keep], loss[keep]
    return ChartCurves(name, steps, tokens, loss, ema(loss, smoothing), **rest)


def studio_chart(chart) -> tuple[list[ChartCurves], ChartView]:
    """What the studio's loss chart (a ``LossChart``) shows now."""
    snap = chart.snapshot
    view = ChartView(chart.x_axis, chart.log_scale, chart.smoothing, show_training=True, show_lr=True,
                     title=f"Loss: {Path(snap.output_dir).name}" if snap is not None else "Loss")
    if snap is None:
        return [], view
    steps, tokens, loss = columns_of(snap.train_history, 0, 1, 2)
    val_steps, val_tokens, val_loss = columns_of(
        [(e.step, e.tokens_seen, e.val_loss) for e in snap.eval_history], 0, 1, 2)
    lr_steps, lr = finite(*columns_of(snap.lr_history, 0, 1))
    val = np.isfinite(val_loss)
    return [_train_curves(Path(snap.output_dir).name, steps, tokens, loss, chart.smoothing,
                          val_steps=val_steps[val], val_tokens=val_tokens[val], val_loss=val_loss[val],
                          lr_steps=lr_steps, lr=lr)], view


def compared_chart(chart) -> tuple[list[ChartCurves], ChartView]:
    """What a comparison's chart (a ``CompareChart``) shows now: only the run it isolates, if
    one, and the training curves only while they are shown."""
    runs = chart.shown_runs() if hasattr(chart, "shown_runs") else chart.runs
    view = ChartView(chart.x_axis, chart.log_scale, chart.smoothing, show_training=chart.show_training,
                     title="Loss by run")
    curves = []
    for run in runs:
        val = np.isfinite(run.val_loss)
        curves.append(_train_curves(run.name, run.steps, run.tokens, run.loss, chart.smoothing,
                                    val_steps=run.val_steps[val], val_tokens=run.val_tokens[val],
                                    val_loss=run.val_loss[val]))
    return curves, view


class ChartExporter:
    """Writes a chart's files for ``app`` in a worker, then says where they went."""

    def __init__(self, app) -> None:
        self.app = app
        self.busy = False

    def export(self, curves: list[ChartCurves], view: ChartView, folder: Path, stem: str) -> None:
        if self.busy:
            self.app.notify("Still writing the last export; try again in a moment.", severity="warning")
            return
        self.busy = True
        self.app.notify(f"Exporting the chart to {printable(str(folder))} …", timeout=3)
        self.app.run_worker(self._write(curves, view, folder, stem), group="chart-export")

    async def _write(self, curves, view, folder: Path, stem: str) -> None:
        try:
            paths = await asyncio.to_thread(write_chart_files, curves, view, folder, stem)
        except UserError as err:
            self.app.notify(printable(str(err)), title="Export failed", severity="error", timeout=15)
        except Exception as err:  # noqa: BLE001 - an export never takes the studio down
            self.app.notify(printable(internal_message(err)), title="Export failed", severity="error", timeout=15)
        else:
            names = ", ".join(path.name for path in paths)
            self.app.notify(f"{names} in {printable(str(folder))}", title="Chart exported", timeout=10)
        finally:
            self.busy = False
