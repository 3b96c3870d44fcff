"""Run stats: progress, speed, losses and state of the run, as a few labelled lines."""

from __future__ import annotations

from textual.content import Content

from gemma_core.safe_text import printable
from gemma_core.train.events import RunSnapshot, RunState
from gemma_tui import formatting as fmt
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


class RunStats(SteadyStatic):
    """Everything about the run that is a number, redrawn from each snapshot."""

    ALLOW_MAXIMIZE = True  # z zooms it to the whole screen

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__("waiting for the engine…", id=id, classes=classes)
        self.snapshot: RunSnapshot | None = None

    def show(self, snapshot: RunSnapshot) -> None:
        self.snapshot = snapshot
        self.update(self.describe(snapshot))

    def on_resize(self) -> None:
        if self.snapshot is not None:
            self.update(self.describe(self.snapshot))  # the bar follows the width

    def _line(self, label: str, *parts: str | tuple[str, str] | Content) -> Content:
        return Content.assemble((label.ljust(LABEL_WIDTH), "$text-muted"), *parts, "\n")

    def describe(self, snap: RunSnapshot) -> Content:
        latest = snap.latest
        lines: list[Content] = []
        lines.append(self._line("state", (snap.state.value.upper(),
                                          f"{STATE_STYLES[snap.state]} bold")))
        where = " · ".join(x for x in (snap.preset and f"{snap.preset} preset", snap.device,
                                        snap.dtype) if x)
        if where:
            lines.append(self._line("run", where))
        lines.append(self._line("output", printable(snap.output_dir)))
        if snap.error:
            lines.append(self._line("error", (printable(snap.error), "$error bold")))

        fraction = snap.step / snap.max_steps if snap.max_steps else 0.0
        bar_width = max(8, min(BAR_WIDTH_MAX, self.size.width - LABEL_WIDTH - 8))
        lines.append(self._line("step", f"{snap.step:,} / {snap.max_steps:,}  ",
                                (f"{100 * fraction:.1f}%", "bold")))
        lines.append(self._line("", fmt.progress_bar(fraction, bar_width)))
        eta = latest.eta_s if latest and snap.state not in (
            RunState.FINISHED, RunState.STOPPED, RunState.FAILED, RunState.VIEWING) else None
        lines.append(self._line("elapsed", fmt.duration(latest.elapsed_s if latest else None),
                                "   ETA ", fmt.duration(eta)))
        lines.append(self._line("tokens", fmt.count(snap.tokens_seen), "   ",
                                f"{fmt.count(latest.tokens_per_s)}/s" if latest else "-/s"))
        if latest and latest.mfu is not None:
            lines.append(self._line("MFU", f"{100 * latest.mfu:.1f}%"))
        lines.append(self._line("train loss", fmt.number(latest.loss if latest else None)))
        lines.append(self._line("lr", fmt.rate(latest.learning_rate if latest else None),
                                "   grad norm ", fmt.number(latest.grad_norm if latest else None, 3)))

        last_eval = snap.eval_history[-1] if snap.eval_history else None
        best = snap.best_eval
        val = (f"{fmt.number(last_eval.val_loss)} @ {last_eval.step:,}" if last_eval else "-")
        lines.append(self._line("val loss", val, "   best ",
                                f"{fmt.number(best.val_loss)} @ {best.step:,}" if best else "-"))
        if last_eval:
            lines.append(self._line("perplexity", fmt.number(last_eval.perplexity),
                                    "   bits/byte ", fmt.number(last_eval.bits_per_byte, 3)))
        ckpt = snap.last_checkpoint
        lines.append(self._line("checkpoint", f"step {ckpt.step:,} at {fmt.clock(ckpt.wall_time)}"
                                if ckpt else "none yet"))
        if snap.skipped_steps:
            lines.append(self._line("skipped", (f"{snap.skipped_steps} non-finite steps",
                                                "$warning")))
        params = fmt.count(snap.n_parameters) if snap.n_parameters else "-"
        lines.append(self._line("parameters", params))
        for message in snap.messages[-3:]:
            style = {"error": "$error", "warning": "$warning"}.get(message.level, "$text-muted")
            lines.append(Content.assemble(("› " + printable(message.text), style), "\n"))
        return Content("").join(lines).rstrip("\n")
