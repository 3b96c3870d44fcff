"""Nothing unpickles, nothing from the model or the data steers the terminal, long runs stay small."""

from __future__ import annotations

import json
import re
from pathlib import Path

from gemma_core.cli import main
from gemma_core.data.corpus import bundled_works
from gemma_core.run.history import BoundedSeries
from gemma_core.safe_text import printable

SOURCES = [p for package in ("gemma_core", "gemma_tui", "bench")
           for p in (Path(__file__).parents[2] / package).rglob("*.py")]
HOSTILE = "\x1b[2J\x1b]0;owned\x07\x9b31m"  # clear screen, set the title, bell, 8-bit CSI


def test_no_code_path_can_unpickle():
    assert SOURCES
    for path in SOURCES:
        text = path.read_text(encoding="utf-8")
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, f"{path}: {call}"
        assert not re.search(r"^\s*(import pickle|from pickle|import dill|import joblib)", text, re.M), path
        assert "allow_pickle=True" not in text, path


def test_printable_removes_escape_and_control_characters_but_keeps_text():
    assert printable(f"ROMEO:{HOSTILE}\n\tBut soft!\r\n") == "ROMEO:[2J]0;owned31m\n\tBut soft!\n"


def test_headless_samples_never_print_escape_sequences(tmp_path, capsys):
    train = tmp_path / "train.txt"
    train.write_text(bundled_works()[0].text[:20_000], encoding="utf-8")
    code = main(["train", "--preset", "nano", "--output_dir", str(tmp_path / "run"), "--max_steps", "2",
                 "--warmup_steps", "1", "--train_dataset_path", str(train), "--sample_every", "1",
                 "--sample_prompt", f"{HOSTILE}ROMEO:", "--sample_tokens", "4",
                 "--cache_dir", str(tmp_path / "cache")])
    out = capsys.readouterr().out
    assert code == 0
    assert "sample @ 1" in out and "ROMEO:" in out
    assert not set(out) & {"\x1b", "\x07", "\x9b"}
    # The samples file keeps the exact text: it is data, not terminal output.
    sample = json.loads((tmp_path / "run" / "samples.jsonl").read_text().splitlines()[0])
    assert sample["prompt"].startswith(HOSTILE)


def test_data_quoted_in_an_error_message_is_made_printable(tmp_path, capsys):
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({f"{HOSTILE}title": "x"}) + "\n", encoding="utf-8")
    code = main(["train", "--preset", "nano", "--output_dir", str(tmp_path / "run"),
                 "--train_dataset_path", str(data), "--cache_dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 2 and "no 'text' field" in err
    assert not set(err) & {"\x1b", "\x07", "\x9b"}


def test_a_million_steps_hold_no_more_points_than_a_few_thousand():
    series = BoundedSeries(2048)
    for step in range(1, 1_000_001):
        series.append((step, 1.0 / step))
    points = series.snapshot()
    assert len(points) <= 2048
    assert points[0][0] == 1 and points[-1][0] > 990_000
    gaps = {b[0] - a[0] for a, b in zip(points, points[1:])}
    assert len(gaps) == 1  # evenly spread over the whole run
