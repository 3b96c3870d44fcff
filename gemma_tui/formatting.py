"""Short, human forms of the numbers the panes show, and the bars that draw fractions."""

from __future__ import annotations

import math
import time

from textual.content import Content

from gemma_core.safe_text import printable


def count(n: float | int | None) -> str:
    """1234 -> '1,234'; 1_234_567 -> '1.23M'."""
    if n is None:
        return "-"
    n = float(n)
    for limit, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M")):
        if abs(n) >= limit:
            return f"{n / limit:.2f}{suffix}"
    return f"{n:,.0f}"


def nbytes(n: int | float | None) -> str:
    """1536 -> '2 KiB'; 41 * 2**30 -> '41.0 GiB'."""
    if n is None:
        return "-"
    n = float(n)
    for unit in ("B", "KiB", "MiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit != "MiB" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def duration(seconds: float | None) -> str:
    """3725 -> '1h02m05s'; None or a non-number -> '-'."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def number(value: float | None, digits: int = 4) -> str:
    """A loss-like number with ``digits`` significant digits; NaN and inf spelt out."""
    if value is None:
        return "-"
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}g}"


def loss(value: float | None) -> str:
    """A validation loss, always to four decimals: the latest, the best and the run picker's
    agree digit for digit ('2.2516')."""
    if value is None or not math.isfinite(value):
        return number(value)
    return f"{value:.4f}"


def rate(value: float | None) -> str:
    """A learning rate: '3.00e-04'."""
    if value is None or not math.isfinite(value):
        return number(value)
    return f"{value:.2e}"


def clock(wall_time: float | None) -> str:
    """Local wall-clock time of a time.time() value: '14:03:07'."""
    if wall_time is None:
        return "-"
    return time.strftime("%H:%M:%S", time.localtime(wall_time))


def progress_bar(fraction: float, width: int) -> Content:
    """A bar ``width`` cells wide, the first ``fraction`` of it in the primary colour."""
    fraction = min(1.0, max(0.0, fraction))
    filled = int(round(fraction * width))
    return Content.assemble(("━" * filled, "$primary"), ("━" * (width - filled), "$panel-lighten-2"))


def resume_command(output_dir: str) -> str:
    """The command that continues a run stopped before its last step, printable as is."""
    return printable(f"gemma-tui launch --resume --output_dir {output_dir}")
