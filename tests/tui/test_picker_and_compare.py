"""Finding runs, picking one, and comparing several: `gemma-tui open` without a folder lists
the runs under the current folder (or --runs DIR) with state, step, best validation loss and
date; Enter opens one, Space marks runs and c compares them; `gemma-tui compare` overlays
their curves, each run named in the legend."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from gemma_core.serve.catalog import find_runs
from gemma_core.train.engine import TrainingEngine
from gemma_core.run.events import RunState
from gemma_core.train.settings import TrainSettings
from gemma_tui import cli
from gemma_tui.compare import CompareApp, read_curves, run_names
from gemma_tui.run_picker import COMPARE, OPEN, RunPicker
from studio_screens import screen_text
from gemma_tui.widgets.compare_chart import CompareChart


def train(folder: Path, corpus, steps: int, seed: int) -> Path:
    train_path, val_path = corpus
    engine = TrainingEngine(TrainSettings.for_preset(
        preset="nano", output_dir=str(folder), train_dataset_path=str(train_path), val_dataset_path=str(val_path),
        cache_dir=str(folder.parent / "cache"), device="cpu", dtype="fp32", max_steps=steps, eval_iters=5,
        save_steps=100_000, seed=seed, serve=False))
    engine.start()
    assert engine.join(timeout=240)
    assert engine.snapshot().state is RunState.FINISHED, engine.snapshot().error
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory, corpus):
    """A project folder with two finished runs (one deeper down), a damaged one and a folder
    that is no run."""
    root = tmp_path_factory.mktemp("project")
    older = train(root / "runs" / "baseline", corpus, steps=10, seed=1)
    newer = train(root / "runs" / "sweep" / "lr-high", corpus, steps=15, seed=2)
    damaged = root / "runs" / "broken"
    damaged.mkdir()
    (damaged / "training_log.jsonl").write_text('{"step": "three"}\n{"step": 4}\n', encoding="utf-8")
    (root / "notes").mkdir()
    (root / "notes" / "ideas.txt").write_text("not a run", encoding="utf-8")
    hour_ago, two_hours_ago = time.time() - 3600, time.time() - 7200
    for name in ("training_log.jsonl", "validation_log.jsonl", "config.json"):
        os.utime(older / name, (hour_ago, hour_ago))
    os.utime(damaged / "training_log.jsonl", (two_hours_ago, two_hours_ago))
    return root, older, newer, damaged


# ------------------------------------------------------------------ finding
def test_runs_are_found_below_a_folder_newest_first_with_how_each_stands(runs):
    root, older, newer, damaged = runs
    found = find_runs(root)
    assert [entry.folder for entry in found] == [newer, older, damaged]
    latest, first = (entry for entry in found if entry.opens)
    assert (latest.state, latest.step, latest.max_steps, latest.live) == ("finished", 15, 15, False)
    assert latest.best_val_step == 15 and latest.best_val_loss < 10
    assert first.step == 10
    broken = next(entry for entry in found if entry.folder == damaged)
    assert not broken.opens and "training_log.jsonl" in broken.problem and "damaged" in broken.problem
    assert all("checkpoint" not in str(entry.folder) for entry in found)  # a run's own folders are not runs


def test_a_run_folder_named_directly_is_the_only_run_found(runs):
    _, older, _, _ = runs
    assert [entry.folder for entry in find_runs(older)] == [older]


# ------------------------------------------------------------------- picker
async def test_the_picker_lists_each_run_and_enter_opens_the_one_chosen(runs):
    root, older, newer, _ = runs
    app = RunPicker(root)
    async with app.run_test(size=(120, 20)) as pilot:
        await pilot.pause()
        text = screen_text(app)
        for words in ("runs/sweep/lr-high", "runs/baseline", "finished", "15 / 15", "10 / 10", "@ 15",
                      "runs/broken", "unreadable", "today"):
            assert words in text, words
        await pilot.press("down", "enter")
    assert app.return_value[0] == OPEN and app.return_value[1][0].folder == older


async def test_space_marks_runs_and_c_compares_them(runs):
    root, older, newer, _ = runs
    app = RunPicker(root)
    async with app.run_test(size=(120, 20)) as pilot:
        await pilot.press("space", "c")  # one run is no comparison
        await pilot.pause()
        assert app.is_running and any("two runs or more" in n.message for n in app._notifications)
        await pilot.press("down", "space", "c")
    kind, chosen = app.return_value
    assert kind == COMPARE and [entry.folder for entry in chosen] == [newer, older]


async def test_a_damaged_run_says_why_it_cannot_open(runs):
    root, _, _, damaged = runs
    app = RunPicker(root)
    async with app.run_test(size=(120, 20)) as pilot:
        await pilot.press("down", "down", "enter")
        await pilot.pause()
        assert app.is_running
        assert any("damaged log line" in n.message for n in app._notifications)
        await pilot.press("q")
    assert app.return_value is None


# ------------------------------------------------------------------ compare
def test_runs_are_named_by_folder_and_by_enough_of_the_path_to_tell_them_apart():
    assert run_names([Path("/r/a"), Path("/r/b")]) == ["a", "b"]
    assert run_names([Path("/x/run"), Path("/y/run")]) == ["x/run", "y/run"]


async def test_the_comparison_names_every_run_and_switches_axis_scale_and_curves(runs):
    _, older, newer, _ = runs
    app = CompareApp([older, newer])
    async with app.run_test(size=(140, 36)) as pilot:
        await pilot.pause()
        text = screen_text(app)
        for words in ("■ baseline", "■ lr-high", "• validation", "⠒ training (smoothed)",  # the legend row
                      "optimizer step", "comparing 2 runs"):
            assert words in text, words
        chart = app.query_one(CompareChart)
        assert len(set(c.hex for c in chart.colors())) == 2  # a colour of its own per run
        await pilot.press("t")
        await pilot.pause()
        assert "tokens seen" in screen_text(app)
        await pilot.press("g")
        await pilot.pause()
        text = screen_text(app)
        assert "■ baseline" in text and "training (smoothed)" not in text and "validation only" in text
        await pilot.press("l")
        await pilot.pause()
        assert "(log scale)" in screen_text(app)


def test_every_run_compared_must_be_a_run(runs, tmp_path):
    _, older, _, _ = runs
    from gemma_core.errors import UserError

    with pytest.raises(UserError, match=f"{tmp_path}: holds no run"):
        read_curves([older, tmp_path])


# ---------------------------------------------------------------- the CLI
def test_open_without_runs_and_compare_with_one_run_are_one_line_errors(runs, tmp_path, capsys):
    _, older, _, _ = runs
    assert cli.main(["open", "--runs", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {tmp_path.resolve()}: no runs in this folder") and "\n" not in err
    assert cli.main(["compare", str(older)]) == 2
    assert "compare needs two run folders or more" in capsys.readouterr().err
    assert cli.main(["open", str(older), "--runs", str(tmp_path)]) == 2
    assert "not both" in capsys.readouterr().err


def test_the_picker_opens_a_finished_run_attaches_a_live_one_and_compares_marked_ones(runs, monkeypatch):
    import gemma_tui.run_picker as picker

    from dataclasses import replace

    root, older, newer, _ = runs
    opened, attached, compared = [], [], []
    monkeypatch.setattr(cli, "require_terminal", lambda: None)
    monkeypatch.setattr(cli, "open_finished_run", lambda folder, args: opened.append(folder) or 0)
    monkeypatch.setattr(cli, "cmd_attach", lambda args: attached.append(args.output_dir) or 0)
    monkeypatch.setattr(cli, "show_comparison", lambda folders, theme: compared.append(folders) or 0)
    entries = find_runs(root)
    live = replace(entries[0], live=True, state="running")
    for choice in ((OPEN, [entries[1]]), (OPEN, [live]), (COMPARE, entries[:2])):
        answers = iter([choice, None])  # the run chosen, then q in the list it comes back to
        monkeypatch.setattr(picker.RunPicker, "run", lambda self, answers=answers: next(answers))
        assert cli.main(["open", "--runs", str(root)]) == 0
    assert opened == [older] and attached == [str(newer)] and compared == [[newer, older]]
