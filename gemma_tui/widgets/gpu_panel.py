"""GPU pane: memory, utilisation, temperature, power and a short history.

Readings come from ``gemma_core.telemetry`` (NVML). Without an NVIDIA GPU or
driver the pane says so once, in place, and shows this process's CPU and
memory instead: no pop-ups, nothing repeated on every sample.
"""

from __future__ import annotations

import math
from collections import deque

from rich.cells import cell_len

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.content import Content
from textual.widgets import Sparkline

from gemma_core.telemetry import NO_GPU, TelemetrySample
from gemma_tui import formatting as fmt
from gemma_tui.widgets.steady_static import SteadyStatic

HISTORY = 60  # readings kept for the sparkline (one a second, one every two while a CPU trains)
LABEL_WIDTH = 9


def _line(label: str, *parts: str | tuple[str, str] | Content) -> Content:
    return Content.assemble((label.ljust(LABEL_WIDTH), "$text-muted"), *parts, "\n")


def describe_sample(sample: TelemetrySample, bar_width: int = 20, room: int = 80) -> Content:
    """The sample as labelled lines; ``room``: the pane's width, which a narrow pane's lines fit."""
    lines: list[Content] = []
    gpu = sample.gpu
    if gpu is not None:
        lines.append(Content.assemble((f"{gpu.name}", "bold"), f"  (GPU {gpu.index})\n"))
        fraction = gpu.memory_used / gpu.memory_total if gpu.memory_total else 0.0
        lines.append(_line("memory", fmt.progress_bar(fraction, bar_width),
                           f" {fmt.nbytes(gpu.memory_used)} / {fmt.nbytes(gpu.memory_total)}"))
        util = f"{gpu.utilization:.0f}%" if gpu.utilization is not None else "-"
        temp = f"{gpu.temperature_c:.0f}°C" if gpu.temperature_c is not None else "-"
        lines.append(_line("util", util, "   temp ", temp))
        if gpu.power_w is not None:
            limit = f" / {gpu.power_limit_w:.0f} W" if gpu.power_limit_w else " W"
            lines.append(_line("power", f"{gpu.power_w:.0f}{limit}"))
        lines.append(_line("process", fmt.nbytes(gpu.process_memory)
                           if gpu.process_memory is not None else "not visible to NVML"))
    else:
        # Most users train without one: say so plainly; a GPU machine's problem is named.
        reason = sample.gpu_unavailable or NO_GPU
        detail = reason.removeprefix(NO_GPU).strip()
        if reason.startswith(NO_GPU):
            lines.append(Content.assemble(("No NVIDIA GPU", "$text-muted bold"), f" {detail}" if detail else "",
                                          (" · this process:", "$text-muted"), "\n"))
        else:
            lines.append(Content.assemble(("GPU: ", "$warning bold"), reason, "\n"))
    torch_mem = sample.torch_memory
    if torch_mem is not None:
        lines.append(_line("torch", f"alloc {fmt.nbytes(torch_mem.allocated)}",
                           f" · reserved {fmt.nbytes(torch_mem.reserved)}"))
        lines.append(_line("", f"peak {fmt.nbytes(torch_mem.peak)}"))
    host = sample.host
    cpu = f"{host.cpu_percent:.0f}%" if host.cpu_percent is not None else "-"
    whose = "this process, " if room >= 40 else ""  # a narrow pane: its first line says whose
    lines.append(_line("CPU", f"{cpu} ({whose}{host.cpu_count} cores)"))
    ram = fmt.nbytes(host.rss)
    if host.ram_total:
        ram += f" of {fmt.nbytes(host.ram_total)}"
    lines.append(_line("RAM", ram))
    return Content("").join(lines).rstrip("\n")


class GpuPanel(Vertical):
    """Shows the latest telemetry sample; the sparkline tracks GPU (else CPU) use.

    The history (its label and the sparkline) shows only together, once there is a reading
    to draw, and only where the studio gives the pane rows for it (``history_room``): a label
    announcing a graph with no room under it is never shown.
    """

    ALLOW_MAXIMIZE = True  # z zooms it to the whole screen

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.history: deque[float] = deque(maxlen=HISTORY)
        self.sample: TelemetrySample | None = None
        self._history_room = True

    def compose(self) -> ComposeResult:
        yield SteadyStatic("reading the GPU…", id="gpu-readings")
        yield SteadyStatic("", id="gpu-history-label")
        yield Sparkline([], id="gpu-history")

    def on_resize(self) -> None:
        if self.sample is not None:
            self._describe(self.sample)  # the bar and the lines follow the width

    def show(self, sample: TelemetrySample) -> None:
        self.sample = sample
        if sample.gpu is not None and sample.gpu.utilization is not None:
            self.history.append(sample.gpu.utilization)
            label = "GPU utilisation, latest readings"
        elif sample.gpu is None and sample.host.cpu_percent is not None:
            self.history.append(sample.host.cpu_percent)
            label = "process CPU, latest readings"
        else:
            label = ""
        self._describe(sample)
        self.query_one("#gpu-history-label", SteadyStatic).update(Content.styled(label, "$text-muted"))
        self.query_one("#gpu-history", Sparkline).data = list(self.history)
        self._show_history()

    @property
    def history_room(self) -> bool:
        return self._history_room

    @history_room.setter
    def history_room(self, room: bool) -> None:
        if room != self._history_room:
            self._history_room = room
            self._show_history()

    def _show_history(self) -> None:
        self.set_class(not (self._history_room and self.history), "-no-history")

    @staticmethod
    def _readings(sample: TelemetrySample, width: int) -> Content:
        return describe_sample(sample, max(8, min(24, width - LABEL_WIDTH - 24)), width)

    def readings_rows(self, width: int) -> int:
        """Rows the readings take ``width`` columns wide: what the studio shares the side column by."""
        if self.sample is None:
            return 1
        lines = self._readings(self.sample, width).plain.split("\n")
        return sum(max(1, math.ceil(cell_len(line) / max(1, width))) for line in lines)

    def _describe(self, sample: TelemetrySample) -> None:
        self.query_one("#gpu-readings", SteadyStatic).update(self._readings(sample, self.size.width))
