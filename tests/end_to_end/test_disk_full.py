"""A full disk, anywhere: the run stops (or, in the studio, pauses) naming the file and the space,
nothing half-written is left, and --resume goes on once space is free, losing nothing logged."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import pytest
from safetensors import SafetensorError

from gemma_core.cli import main
from gemma_core.data.corpus import bundled_works
from gemma_core.run import layout, logs
from gemma_core.train import checkpoints
from gemma_core.train.engine import TrainingEngine
from gemma_core.run.events import CheckpointSaved, RunState
from gemma_core.train.settings import TrainSettings


@pytest.fixture
def data(tmp_path) -> Path:
    path = tmp_path / "train.txt"
    path.write_text(bundled_works()[0].text[:40_000], encoding="utf-8")
    return path


def settings(out: Path, data: Path, cache: Path, **overrides) -> TrainSettings:
    values = dict(output_dir=str(out), train_dataset_path=str(data), cache_dir=str(cache), device="cpu",
                  dtype="fp32", max_steps=20, save_steps=5, eval_iters=100, warmup_steps=2, seed=1)
    values.update(overrides)
    return TrainSettings.for_preset("nano", **values)


def logged_steps(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / layout.TRAIN_STREAM).read_text().splitlines()]


def leftovers(out: Path) -> list[str]:
    return [p.name for p in out.rglob("*") if ".tmp-" in p.name or p.name == layout.BUILDING_CHECKPOINT]


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MiB filesystem of the test's own, where the machine allows mounting one."""
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here ({made.stderr.strip() or 'no permission'}); "
                    "the simulated full disk below covers the same paths")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(folder: Path) -> Path:
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError as err:
            assert err.errno == errno.ENOSPC
    return filler


def test_a_real_full_disk_stops_the_run_and_resume_loses_nothing(small_disk, data, tmp_path):
    out = small_disk / "run"
    engine = TrainingEngine(settings(out, data, tmp_path / "cache"))
    fillers = []
    engine.subscribe(lambda e: fillers.append(fill(small_disk)) if isinstance(e, CheckpointSaved) and e.step == 5
                     else None)
    engine.start()
    assert engine.join(timeout=240)
    snap = engine.snapshot()
    assert snap.state is RunState.FAILED and not snap.error_internal
    assert "disk full" in snap.error and "MiB free" in snap.error
    assert "the last complete checkpoint is of step 5" in snap.error
    assert not leftovers(out)
    fillers[0].unlink()
    resumed = TrainingEngine.resume(out, cache_dir=str(tmp_path / "cache")).run()
    assert resumed.step == 20
    assert logged_steps(out) == list(range(1, 21))


class FullDiskAfter:
    """``os.write`` that runs out of space for the training log after ``n`` writes to it, until freed."""

    def __init__(self, n: int) -> None:
        self.n, self.full = n, False
        self.real = os.write

    def __call__(self, fd, data):
        if not os.readlink(f"/proc/self/fd/{fd}").endswith(layout.TRAIN_STREAM):
            return self.real(fd, data)  # any other file of the process writes as usual
        self.n -= 1
        if self.n < 0 and self.full is not None:
            self.full = True
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.real(fd, data)

    def free(self) -> None:
        self.full = None


def test_a_full_disk_stops_a_headless_run_with_a_checkpoint(data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    disk = FullDiskAfter(7)
    monkeypatch.setattr(logs.os, "write", disk)
    engine = TrainingEngine(settings(out, data, tmp_path / "cache"))
    engine.start()
    assert engine.join(timeout=240)
    error = engine.snapshot().error
    assert "training_log.jsonl: disk full while appending to it" in error and "MiB free" in error
    assert "the last complete checkpoint is of step 5: --resume goes on from it" in error
    disk.free()
    assert TrainingEngine.resume(out, cache_dir=str(tmp_path / "cache")).run().step == 20
    assert logged_steps(out) == list(range(1, 21))


def test_in_the_studio_a_full_disk_pauses_and_training_goes_on_once_freed(data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    disk = FullDiskAfter(7)
    monkeypatch.setattr(logs.os, "write", disk)
    engine = TrainingEngine(settings(out, data, tmp_path / "cache"), pause_on_disk_full=True)
    engine.start()
    for _ in range(600):
        if engine.snapshot().state is RunState.PAUSED:
            break
        engine.join(timeout=0.1)
    snap = engine.snapshot()
    assert snap.state is RunState.PAUSED and snap.step == 8
    assert any("disk full" in m.text and "training paused" in m.text for m in snap.messages)
    disk.free()
    engine.unpause()
    final = engine.run()
    assert final.state is RunState.FINISHED and final.step == 20
    assert logged_steps(out) == list(range(1, 21))  # the step that could not be logged was kept


def test_the_safetensors_error_for_a_full_disk_is_named_as_one(data, tmp_path, monkeypatch):
    out = tmp_path / "run"

    def no_space(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(checkpoints, "save_file", no_space)
    engine = TrainingEngine(settings(out, data, tmp_path / "cache"))
    engine.start()
    assert engine.join(timeout=240)
    error = engine.snapshot().error
    assert "disk full while saving a checkpoint; it needs about" in error and not leftovers(out)


def test_export_on_a_full_disk_is_one_line(data, tmp_path, monkeypatch, capsys):
    from gemma_core.hf import exporter

    out = tmp_path / "run"
    TrainingEngine(settings(out, data, tmp_path / "cache", max_steps=2)).run()

    def no_space(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(exporter, "save_file", no_space)
    code = main(["export-hf", "--checkpoint", str(out), "--output", str(tmp_path / "hf")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "disk full while writing it" in err
    assert not list((tmp_path / "hf").glob(".*tmp-*"))


def test_a_killed_writers_leftovers_are_cleared_by_the_next_run(data, tmp_path):
    out = tmp_path / "run"
    TrainingEngine(settings(out, data, tmp_path / "cache", max_steps=5)).run()
    (out / ".training_log.json.tmp-999999").write_text("half")
    (out / layout.BUILDING_CHECKPOINT).mkdir()
    (out / layout.BUILDING_CHECKPOINT / "model.safetensors").write_text("half")
    TrainingEngine.resume(out, max_steps=6, cache_dir=str(tmp_path / "cache")).run()
    assert not leftovers(out)
