"""Shared helpers: timing with warm-up and medians, machine facts, the JSON report."""

from __future__ import annotations

import json
import platform
import statistics
import time
from typing import Callable

import torch


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict:
    info = {"cpu": cpu_model(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def median_time(run: Callable[[], None], *, warmup: int, repeats: int, sync: bool = False) -> float:
    """Median seconds of ``repeats`` timed calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        run()
    if sync:
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        if sync:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def alternating_medians(ours: Callable[[], None], reference: Callable[[], None],
                        repeats: int) -> tuple[float, float]:
    """Median seconds of each, timed turn about after one warm-up each, so drift hits both."""
    ours(), reference()
    ours_times, ref_times = [], []
    for _ in range(repeats):
        ref_times.append(median_time(reference, warmup=0, repeats=1))
        ours_times.append(median_time(ours, warmup=0, repeats=1))
    return statistics.median(ours_times), statistics.median(ref_times)


def report(name: str, payload: dict) -> None:
    """The benchmark's result: one JSON object on the last line of output."""
    print(json.dumps({"benchmark": name, "machine": machine(), **payload}))
