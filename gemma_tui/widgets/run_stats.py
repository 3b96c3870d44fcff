"""Run stats: progress, speed, losses and state of the run, as a few labelled lines."""

from __future__ import annotations

import math

from textual.content import Content

from gemma_core.safe_text import printable
from gemma_core.run.events import RunSnapshot, RunState, StepMetrics
from gemma_tui import formatting as fmt
from gemma_tui.pane_fit import BORDER, PaneWants
from gemma_tui.widgets.steady_static import SteadyStatic

# The theme colour each state is shown in.
STATE_STYLES = {
    RunState.STARTING: "$text-muted",
    RunState.RUNNING: "$success",
    RunState.PAUSED: "$warning",
    RunState.EVALUATING: "$accent",
    RunState.SAVING: "$accent",
    RunState.FINISHED: "$primary",
    RunState.STOPPED: "$warning",
    RunState.FAILED: "$error",
    RunState.VIEWING: "$primary",
}
LABEL_WIDTH = 11
BAR_WIDTH_MAX = 40
ESSENTIAL_RANK = 4  # state, an error, step, train and validation loss: what the least pane keeps


class RunStats(SteadyStatic):
    """Everything about the run that is a number, redrawn from each snapshot."""

    ALLOW_MAXIMIZE = True  # z zooms it to the whole screen

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__("waiting for the engine…", id=id, classes=classes)
        self.snapshot: RunSnapshot | None = None
        self._fit_to_height = True

    def show(self, snapshot: RunSnapshot) -> None:
        self.snapshot = snapshot
        self.update(self.describe(snapshot))

    def on_resize(self) -> None:
        if self.snapshot is not None:
            self.update(self.describe(self.snapshot))  # the bar follows the width

    def _line(self, label: str, *parts: str | tuple[str, str] | Content) -> Content:
        return Content.assemble((label.ljust(LABEL_WIDTH), "$text-muted"), *parts, "\n")

    @property
    def fit_to_height(self) -> bool:
        """A short terminal: show the lines that matter most, as many as the pane has rows."""
        return self._fit_to_height

    @fit_to_height.setter
    def fit_to_height(self, value: bool) -> None:
        if value != self._fit_to_height:
            self._fit_to_height = value
            if self.snapshot is not None:
                self.update(self.describe(self.snapshot))

    @staticmethod
    def _heights(ranked: list[tuple[int, Content]], width: int) -> list[int]:
        """Each line's rows once wrapped at ``width`` (an error or a message may wrap)."""
        return [max(1, math.ceil((line.cell_length - 1) / max(1, width))) for _, line in ranked]

    def wants(self, width: int) -> PaneWants:
        """Rows (borders included) for the essential lines and for every line, ``width``
        columns wide: what the studio shares the side column by."""
        if self.snapshot is None:
            return PaneWants(BORDER + 1, BORDER + 1)
        ranked = self._ranked_lines(self.snapshot, width)
        heights = self._heights(ranked, width)
        return PaneWants(BORDER + sum(h for (rank, _), h in zip(ranked, heights) if rank <= ESSENTIAL_RANK),
                         BORDER + sum(heights))

    def describe(self, snap: RunSnapshot) -> Content:
        """The run's lines in reading order; where the pane is short, those ranked first."""
        rows, width = self.size.height, max(1, self.size.width)
        ranked = self._ranked_lines(snap, width)
        heights = self._heights(ranked, width)
        if self._fit_to_height and 0 < rows < sum(heights):
            keep, used = [], 0
            for index in sorted(range(len(ranked)), key=lambda i: ranked[i][0]):
                if used + heights[index] <= rows:
                    keep.append(index)
                    used += heights[index]
            ranked = [ranked[i] for i in sorted(keep)]
        return Content("").join(line for _, line in ranked).rstrip("\n")

    @staticmethod
    def _learning_rates(latest: StepMetrics | None) -> list[str | tuple[str, str]]:
        """Each optimiser's learning rate, named: "muon 2.00e-02  adamw 4.50e-03"."""
        if latest is None:
            return ["-"]
        rates = latest.learning_rates or {"adamw": latest.learning_rate}  # older logs: AdamW's only
        parts: list[str | tuple[str, str]] = []
        for name in sorted(rates, key=lambda n: n != "muon"):
            parts += [(f"{name} ", "$text-muted"), fmt.rate(rates[name]), "  "]
        return parts[:-1]

    @staticmethod
    def _fitted(text: str, width: int, keep_end: bool = False) -> str:
        """``text`` cut with an ellipsis to the room after a label: a name, never worth a second
        row (a path keeps its end, the part that tells runs apart)."""
        room = max(8, width - LABEL_WIDTH)
        if len(text) <= room:
            return text
        return "…" + text[-(room - 1):] if keep_end else text[:room - 1] + "…"

    def _ranked_lines(self, snap: RunSnapshot, width: int) -> list[tuple[int, Content]]:
        """(rank, line) in reading order; rank 0 is kept longest when rows run out."""
        latest = snap.latest
        lines: list[tuple[int, Content]] = []
        lines.append((0, self._line("state", (snap.state.value.upper(), f"{STATE_STYLES[snap.state]} bold"))))
        where = " · ".join(x for x in (snap.preset and f"{snap.preset} preset", snap.device,
                                        snap.dtype) if x)
        if where:
            lines.append((12, self._line("run", self._fitted(where, width))))
        lines.append((14, self._line("output", self._fitted(printable(snap.output_dir), width, keep_end=True))))
        if snap.error:
            lines.append((1, self._line("error", (printable(snap.error), "$error bold"))))

        fraction = snap.step / snap.max_steps if snap.max_steps else 0.0
        bar_width = max(8, min(BAR_WIDTH_MAX, width - LABEL_WIDTH - 8))
        lines.append((2, self._line("step", f"{snap.step:,} / {snap.max_steps:,}  ",
                                    (f"{100 * fraction:.1f}%", "bold"))))
        lines.append((9, self._line("", fmt.progress_bar(fraction, bar_width))))
        eta = latest.eta_s if latest and snap.state not in (
            RunState.FINISHED, RunState.STOPPED, RunState.FAILED, RunState.VIEWING) else None
        lines.append((5, self._line("elapsed", fmt.duration(latest.elapsed_s if latest else None),
                                    "   ETA ", fmt.duration(eta))))
        lines.append((6, self._line("tokens", fmt.count(snap.tokens_seen), "   ",
                                    f"{fmt.count(latest.tokens_per_s)}/s" if latest else "-/s")))
        if latest and latest.mfu is not None:
            lines.append((11, self._line("MFU", f"{100 * latest.mfu:.1f}%")))
        lines.append((3, self._line("train loss", fmt.number(latest.loss if latest else None))))
        lines.append((8, self._line("lr", *self._learning_rates(latest))))
        lines.append((13, self._line("grad norm", fmt.number(latest.grad_norm if latest else None, 3))))

        last_eval = snap.eval_history[-1] if snap.eval_history else None
        best = snap.best_eval
        # The latest and the best evaluation each on a line of its own, in the same precision:
        # side by side they wrapped, and the best lost digits to fit.
        val = f"{fmt.loss(last_eval.val_loss)} @ {last_eval.step:,}" if last_eval else "-"
        if best is not None and last_eval is not None and best.step == last_eval.step:
            lines.append((4, self._line("val loss", val, ("  best", "$success"))))
        else:
            lines.append((4, self._line("val loss", val)))
            if best is not None:
                lines.append((4, self._line("best val", f"{fmt.loss(best.val_loss)} @ {best.step:,}")))
        if last_eval:
            lines.append((10, self._line("perplexity", fmt.number(last_eval.perplexity),
                                         "   bits/byte ", fmt.number(last_eval.bits_per_byte, 3))))
        ckpt = snap.last_checkpoint
        lines.append((7, self._line("checkpoint", f"step {ckpt.step:,} at {fmt.clock(ckpt.wall_time)}"
                                    if ckpt else "none yet")))
        if snap.skipped_steps:
            lines.append((9, self._line("skipped", (f"{snap.skipped_steps} non-finite steps", "$warning"))))
        params = fmt.count(snap.n_parameters) if snap.n_parameters else "-"
        lines.append((15, self._line("parameters", params)))
        recent = snap.messages[-3:]
        for index, message in enumerate(recent):
            age = len(recent) - 1 - index  # 0: the newest, which an error keeps near the top
            style = {"error": "$error", "warning": "$warning"}.get(message.level, "$text-muted")
            rank = 1 if message.level in ("error", "warning") and age == 0 else 13 + age
            lines.append((rank, Content.assemble(("› " + printable(message.text), style), "\n")))
        return lines
