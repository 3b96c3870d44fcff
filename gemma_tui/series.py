"""Turning metric histories into the few points a terminal plot can show.

Pure numpy functions, no UI. A plot column is about two braille dots wide, so
a series never needs more than a few points per column whatever the length of
the run; every step here is vectorised, so a 100,000-step history costs a few
milliseconds, and what plotext receives depends on the plot's width only.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def columns_of(rows: Sequence[Sequence[float]], *indices: int) -> tuple[np.ndarray, ...]:
    """Columns ``indices`` of a history of tuples, as float arrays."""
    if not rows:
        return tuple(np.empty(0) for _ in indices)
    table = np.asarray(rows, dtype=float)
    return tuple(table[:, i] for i in indices)


class HistoryColumns:
    """``columns_of`` for a history that grows between calls, converting only new rows.

    Snapshot histories are append-only until the engine thins them (then they
    shrink or change at the seam), so converting the whole tuple on every
    snapshot would make a long run cost more than a short one.
    """

    def __init__(self, *indices: int) -> None:
        self.indices = indices
        self._rows: Sequence = ()
        self._columns: tuple[np.ndarray, ...] = columns_of((), *indices)

    def __call__(self, rows: Sequence[Sequence[float]]) -> tuple[np.ndarray, ...]:
        old = self._rows
        grew = (old and len(rows) >= len(old) and rows[0] == old[0]
                and rows[len(old) - 1] == old[-1])
        if rows is old:
            pass
        elif grew:
            added = columns_of(rows[len(old):], *self.indices)
            self._columns = tuple(np.concatenate([a, b]) for a, b in zip(self._columns, added))
        else:
            self._columns = columns_of(rows, *self.indices)
        self._rows = rows
        return self._columns


def finite(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points whose x and y are real numbers (a NaN loss would break the axes)."""
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def log10(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """y replaced by log10(y); non-positive values dropped.

    plotext's own log axis crashes on its second build (plotext issue #209), so
    the log view plots log10 values on a linear axis.
    """
    keep = np.isfinite(y) & (y > 0)
    return x[keep], np.log10(y[keep])


def ema(values: np.ndarray, weight: float) -> np.ndarray:
    """Exponential moving average with bias correction, as TensorBoard smooths.

    ``weight`` 0 returns the values; 0.99 is very smooth. Bias correction keeps
    the first points from being pulled towards zero. Computed in closed form,
    chunk by chunk: within a chunk s_j = w^(j+1) s_start + (1-w) w^j cumsum(w^-i x_i),
    and chunks are short enough that w^-i stays far from overflowing.
    """
    values = np.asarray(values, dtype=float)
    if weight <= 0 or values.size == 0:
        return values.copy()
    w = min(weight, 0.999)
    size = min(values.size, max(1, int(300 / -math.log(w))))
    k = np.arange(size)
    grow, decay = w ** -k, w ** k  # the same for every chunk: computed once
    out = np.empty_like(values)
    state = 0.0
    for start in range(0, values.size, size):
        x = values[start:start + size]
        n = x.size
        smoothed = decay[:n] * (w * state + (1 - w) * np.cumsum(x * grow[:n]))
        out[start:start + n] = smoothed
        state = smoothed[-1]
    return out / (1 - w ** np.arange(1, values.size + 1))


def downsample(x: np.ndarray, y: np.ndarray, buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """At most 2 * ``buckets`` points that draw the same line (x ascending).

    Points are grouped into ``buckets`` equal ranges of x; each range keeps its
    lowest and highest point, in x order, so spikes survive.
    """
    n = x.size
    if buckets <= 0 or n <= 2 * buckets:
        return x, y
    span = (x[-1] - x[0]) or 1.0
    bucket = np.minimum(buckets - 1, ((x - x[0]) / span * buckets).astype(np.int64))
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])  # x ascending: contiguous
    counts = np.diff(np.r_[starts, n])
    keep = np.concatenate([_first_match(y == np.repeat(reduce.reduceat(y, starts), counts), bucket)
                           for reduce in (np.minimum, np.maximum)])
    keep = np.unique(keep)  # sorted: back in x order
    return x[keep], y[keep]


def _first_match(matches: np.ndarray, bucket: np.ndarray) -> np.ndarray:
    """Index of the first True in each bucket."""
    where = np.flatnonzero(matches)
    return where[np.r_[True, bucket[where][1:] != bucket[where][:-1]]]


def interpolate_x(steps: np.ndarray, known_steps: np.ndarray,
                  known_tokens: np.ndarray) -> np.ndarray:
    """Tokens seen at each step, interpolated from known (step, tokens) pairs.

    The learning-rate history records steps only; this places it on the
    tokens axis beside the losses. Outside the known range it extrapolates
    at the average tokens per step.
    """
    if known_steps.size == 0:
        return np.full(steps.shape, np.nan)
    per_step = known_tokens[-1] / known_steps[-1] if known_steps[-1] else 0.0
    tokens = np.interp(steps, known_steps, known_tokens)
    after = steps > known_steps[-1]
    tokens[after] = known_tokens[-1] + per_step * (steps[after] - known_steps[-1])
    before = steps < known_steps[0]
    tokens[before] = steps[before] * per_step
    return tokens
