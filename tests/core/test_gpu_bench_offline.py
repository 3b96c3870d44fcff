"""The GPU benchmark's parts that need no GPU, checked here so its one run on a GPU is not
spent finding their bugs: the profile of a training step, reading nvidia-smi, refusing
without CUDA; and MFU reaching the training log where a device's peak is known."""

from __future__ import annotations

import json

import pytest
import torch

from bench import gpu
from tests.conftest import tiny_config


def test_a_profile_lists_the_operations_that_take_a_step_s_time():
    step = gpu.training_step(torch.device("cpu"), tiny_config(), "sdpa", batch=2, seq=64, compile_model=False)
    table = gpu.profile_table(step, torch.device("cpu"), steps=2, top=8)
    assert 1 <= len(table) <= 8
    shares = [row["share"] for row in table]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1.0001
    assert all(row["ms_per_step"] >= 0 and row["calls_per_step"] >= 0 and row["name"] for row in table)
    assert any("mm" in row["name"] or "linear" in row["name"] or "addmm" in row["name"] for row in table)


def test_nvidia_smi_lines_are_read_in_bytes_and_units():
    text = "0, 41000, 81559, 87, 64, 412.35\n1, 10, 81559, 0, 30, [N/A]\n"
    first = gpu.read_nvidia_smi(text, 0)
    assert first == {"memory_used": 41000 * 2**20, "memory_total": 81559 * 2**20, "utilization": 87.0,
                     "temperature_c": 64.0, "power_w": 412.35}
    assert gpu.read_nvidia_smi(text, 1)["power_w"] is None
    with pytest.raises(ValueError, match="no line for GPU 2"):
        gpu.read_nvidia_smi(text, 2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_the_benchmark_measures_nothing_and_says_so(capsys):
    assert gpu.main([]) == 2
    assert "no CUDA device here" in capsys.readouterr().err


def test_mfu_is_logged_where_the_device_peak_is_known(tmp_path, corpus, monkeypatch):
    import gemma_core.train.setup as setup
    from gemma_core.run.history import read_run_history
    from gemma_core.train.engine import TrainingEngine
    from gemma_core.train.settings import TrainSettings

    monkeypatch.setattr(setup, "device_peak_flops", lambda device, dtype=None: 1e12)
    train, val = corpus
    engine = TrainingEngine(TrainSettings.for_preset(
        "nano", output_dir=str(tmp_path / "run"), train_dataset_path=str(train), val_dataset_path=str(val),
        cache_dir=str(tmp_path / "cache"), device="cpu", max_steps=3, eval_iters=3, serve=False))
    engine.start()
    assert engine.join(timeout=120)
    entries = [json.loads(line) for line in (tmp_path / "run" / "training_log.jsonl").read_text().splitlines()]
    assert all(0 < entry["mfu"] < 1 for entry in entries)
    assert read_run_history(tmp_path / "run", 3).steps[-1].mfu == entries[-1]["mfu"]
