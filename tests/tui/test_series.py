"""Series shaping for the loss chart: smoothing, log view, downsampling, token axis, ticks."""

from __future__ import annotations

import math
import random

import numpy as np

from gemma_tui.series import HistoryColumns, columns_of, downsample, ema, finite, interpolate_x, log10
from gemma_tui.widgets.loss_chart import nice_ticks


def reference_ema(values, weight):
    """TensorBoard's smoothing, one value at a time: what the vectorised ema must equal."""
    out, average, correction = [], 0.0, 1.0
    for value in values:
        average = weight * average + (1 - weight) * value
        correction *= weight
        out.append(average / (1 - correction))
    return out


def test_ema_matches_the_step_by_step_definition():
    rng = random.Random(1)
    values = [8.0 * math.exp(-i / 3000) + rng.random() for i in range(10_000)]
    for weight in (0.3, 0.8, 0.99, 0.999):
        assert np.allclose(ema(np.array(values), weight), reference_ema(values, weight),
                           rtol=1e-9, atol=1e-9), weight
    assert np.array_equal(ema(np.array(values), 0.0), values)
    assert np.allclose(ema(np.full(50, 5.0), 0.9), 5.0)  # no pull towards zero


def test_log_view_drops_values_a_log_cannot_take():
    x, y = log10(np.arange(5.0), np.array([100.0, 0.0, -1.0, math.nan, 0.1]))
    assert x.tolist() == [0.0, 4.0] and y.tolist() == [2.0, -1.0]
    x, y = finite(np.array([1.0, 2.0, math.nan]), np.array([math.inf, 1.0, 1.0]))
    assert x.tolist() == [2.0] and y.tolist() == [1.0]


def test_downsample_bounds_points_and_keeps_extremes():
    rng = np.random.default_rng(0)
    x, y = np.arange(100_000.0), rng.random(100_000)
    y[54_321] = 50.0  # a loss spike must survive
    y[77_777] = -3.0  # and so must a dip
    sx, sy = downsample(x, y, 80)
    assert len(sx) <= 160
    assert 54_321 in sx and 77_777 in sx
    assert np.all(np.diff(sx) > 0)  # still in x order
    short_x, short_y = downsample(x[:100], y[:100], 80)
    assert np.array_equal(short_x, x[:100])  # short series untouched


def test_history_columns_convert_only_what_is_new():
    columns = HistoryColumns(0, 2)
    rows = tuple((s, s * 10, s / 2) for s in range(1, 101))
    steps, loss = columns(rows)
    assert steps.tolist() == list(range(1, 101)) and loss[-1] == 50.0
    grown = rows + ((101, 1010, 50.5),)
    assert columns(grown)[0].tolist() == list(range(1, 102))
    thinned = grown[::2]  # the engine drops every other point when its buffer fills
    assert columns(thinned)[0].tolist() == list(range(1, 102, 2))
    assert [c.size for c in columns_of((), 0, 1)] == [0, 0]


def test_lr_steps_map_onto_tokens():
    tokens = interpolate_x(np.array([1.0, 2, 3, 4, 6]), np.array([1.0, 2, 4]),
                           np.array([512.0, 1024, 2048]))
    assert tokens.tolist() == [512, 1024, 1536, 2048, 3072]


def test_nice_ticks_are_round_numbers():
    assert nice_ticks(1, 640) == [200, 400, 600]
    assert nice_ticks(0.0, 1.0) == [0.0, 0.5, 1.0]
    assert nice_ticks(0, 10_000) == [0, 5000, 10_000]
    assert nice_ticks(5, 5) == [5]


def test_numbers_read_as_people_write_them():
    from gemma_tui import formatting as fmt

    assert fmt.count(1234) == "1,234" and fmt.count(2_621_440) == "2.62M"
    assert fmt.nbytes(1536) == "2 KiB" and fmt.nbytes(41 * 2**30) == "41.0 GiB"
    assert fmt.duration(3725) == "1h02m05s" and fmt.duration(None) == "-"
    assert fmt.number(math.nan) == "nan" and fmt.number(2.09454) == "2.095"
    assert fmt.rate(3e-4) == "3.00e-04"
