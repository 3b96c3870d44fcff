"""What ``gemma-core train`` prints while a run trains: a progress bar from the step events,
one line for each evaluation, sample, checkpoint and log message, and how the run ended.

One handler per kind of event (``functools.singledispatchmethod``); events without one
(state changes, layer statistics...) print nothing.
"""

from __future__ import annotations

from functools import singledispatchmethod

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text

from gemma_core.run.events import (CheckpointSaved, EvalResult, LogMessage, RunFailed, RunFinished,
                                   SampleProduced, StepMetrics)
from gemma_core.safe_text import printable


class TrainProgress:
    """Shows a run's events on ``console``; keeps the failure a ``RunFailed`` reports."""

    def __init__(self, console: Console, max_steps: int, output_dir: str) -> None:
        self.output_dir = output_dir
        self.failure: str | None = None
        self.progress = Progress(
            TextColumn("[bold]step {task.completed:>6.0f}/{task.total:.0f}"), BarColumn(),
            TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[speed]} tok/s"),
            TimeRemainingColumn(), console=console, transient=False)
        self.task = self.progress.add_task("train", total=max_steps, loss="-", lr="-", speed="-")

    def print(self, *args, **kwargs) -> None:
        self.progress.console.print(*args, **kwargs)

    @singledispatchmethod
    def show(self, event) -> None:
        """An event no one reads here."""

    @show.register
    def _(self, event: StepMetrics) -> None:
        self.progress.update(self.task, completed=event.step, loss=f"{event.loss:.4f}",
                             lr=f"{event.learning_rate:.2e}", speed=f"{event.tokens_per_s:,.0f}")

    @show.register
    def _(self, event: EvalResult) -> None:
        self.print(f"step {event.step}: val loss {event.val_loss:.4f}  perplexity "
                   f"{event.perplexity:.2f}  bits/byte {event.bits_per_byte:.4f}")

    @show.register
    def _(self, event: SampleProduced) -> None:
        line = Text(f"sample @ {event.step}: ", style="dim")
        line.append(printable(event.prompt + event.text))
        self.print(line)

    @show.register
    def _(self, event: CheckpointSaved) -> None:
        self.print(f"[dim]checkpoint saved at step {event.step}[/dim]")

    @show.register
    def _(self, event: LogMessage) -> None:
        if event.level != "info":
            self.print(Text(f"{event.level}: {printable(event.text)}"))
        else:
            self.print(Text(printable(event.text), style="dim"))

    @show.register
    def _(self, event: RunFailed) -> None:
        self.failure = event.message  # said once the run has ended (see cmd_train)

    @show.register
    def _(self, event: RunFinished) -> None:
        if event.reason == "stopped" and event.checkpoint is None:
            self.print(f"stopped before the first step; no checkpoint was saved in {self.output_dir} "
                       "(start again with --overwrite)", soft_wrap=True)
        elif event.reason == "stopped":
            self.print(f"stopped at step {event.step}; checkpoint in {event.checkpoint}\n"
                       f"resume with: gemma-core train --resume --output_dir {self.output_dir}",
                       soft_wrap=True)
        else:
            self.print(f"finished {event.step} steps; outputs in {self.output_dir}", soft_wrap=True)
