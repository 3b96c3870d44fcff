"""Telemetry: NVML readings when there is a GPU, the process's CPU and RAM when not, never a crash."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

from gemma_core import telemetry
from gemma_core.telemetry import TelemetrySampler


class NVMLError(Exception):
    pass


class FakeNvml:
    """Just the NVML calls telemetry makes, with the values an H100 reports."""

    NVML_TEMPERATURE_GPU = 0

    def __init__(self, fail: set[str] = frozenset(), pid: int | None = None) -> None:
        self.fail = set(fail)
        self.pid = pid
        self.init_calls = 0
        self.shutdowns = 0

    def _maybe_fail(self, name: str) -> None:
        if name in self.fail:
            raise NVMLError(f"{name}: Not Supported")

    def nvmlInit(self):
        self.init_calls += 1
        self._maybe_fail("init")

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetCount(self):
        return 1

    def nvmlDeviceGetHandleByIndex(self, index):
        return ("handle", index)

    def nvmlDeviceGetName(self, handle):
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetMemoryInfo(self, handle):
        self._maybe_fail("memory")
        return SimpleNamespace(used=40 * 2**30, total=80 * 2**30, free=40 * 2**30)

    def nvmlDeviceGetUtilizationRates(self, handle):
        self._maybe_fail("utilization")
        return SimpleNamespace(gpu=87, memory=40)

    def nvmlDeviceGetTemperature(self, handle, sensor):
        return 64

    def nvmlDeviceGetPowerUsage(self, handle):
        self._maybe_fail("power")
        return 412_000  # milliwatts

    def nvmlDeviceGetEnforcedPowerLimit(self, handle):
        self._maybe_fail("power")
        return 700_000

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        self._maybe_fail("processes")
        return [SimpleNamespace(pid=12345, usedGpuMemory=2**30),
                SimpleNamespace(pid=self.pid, usedGpuMemory=30 * 2**30)]


def test_gpu_readings_come_from_nvml(monkeypatch):
    monkeypatch.setattr(telemetry.os, "getpid", lambda: 777)
    sampler = TelemetrySampler(nvml=FakeNvml(pid=777))
    sample = sampler.sample()
    gpu = sample.gpu
    assert sample.gpu_unavailable is None
    assert gpu.name == "NVIDIA H100 80GB HBM3"
    assert (gpu.memory_used, gpu.memory_total) == (40 * 2**30, 80 * 2**30)
    assert (gpu.utilization, gpu.temperature_c) == (87.0, 64.0)
    assert (gpu.power_w, gpu.power_limit_w) == (412.0, 700.0)
    assert gpu.process_memory == 30 * 2**30


def test_unsupported_fields_are_none_not_errors():
    sampler = TelemetrySampler(nvml=FakeNvml(fail={"power", "utilization", "processes"}))
    gpu = sampler.sample().gpu
    assert gpu is not None and gpu.memory_total == 80 * 2**30
    assert gpu.power_w is None and gpu.utilization is None and gpu.process_memory is None


def test_no_driver_is_said_once_and_host_is_read_instead():
    nvml = FakeNvml(fail={"init"})
    sampler = TelemetrySampler(nvml=nvml)
    first, second = sampler.sample(), sampler.sample()
    assert first.gpu is None and second.gpu is None
    assert "no NVIDIA driver" in first.gpu_unavailable
    assert nvml.init_calls == 1  # not retried (and not re-reported) on every sample
    assert first.host.rss and first.host.rss > 0
    assert first.host.cpu_count >= 1
    assert first.host.cpu_percent is None  # a rate needs two samples
    assert second.host.cpu_percent is not None and second.host.cpu_percent >= 0


def test_a_machine_without_the_nvidia_library_reads_no_nvidia_gpu_not_a_driver_error():
    class NVMLError_LibraryNotFound(Exception):  # the name pynvml raises; its text is raw
        pass

    class NoLibrary(FakeNvml):
        def nvmlInit(self):
            raise NVMLError_LibraryNotFound("NVML Shared Library Not Found")

    sample = TelemetrySampler(nvml=NoLibrary()).sample()
    assert sample.gpu is None and sample.gpu_unavailable == "no NVIDIA GPU"
    assert sample.host.rss  # and this process's CPU and RAM instead


def test_gpu_that_stops_answering_is_dropped_with_a_reason():
    nvml = FakeNvml()
    sampler = TelemetrySampler(nvml=nvml)
    assert sampler.sample().gpu is not None
    nvml.fail.add("memory")
    sample = sampler.sample()
    assert sample.gpu is None and "stopped answering" in sample.gpu_unavailable
    assert nvml.shutdowns == 1
    assert sampler.sample().gpu is None  # and stays quiet afterwards


def test_this_machine_without_a_gpu_does_not_raise():
    # The real nvidia-ml-py: here (no NVIDIA driver) nvmlInit raises NVMLError_LibraryNotFound.
    pytest.importorskip("pynvml")
    sample = TelemetrySampler().sample()
    assert sample.host.ram_total and sample.host.ram_total > 0
    if sample.gpu is None:
        assert sample.gpu_unavailable == "no NVIDIA GPU"  # not the driver's raw error text


def test_missing_nvidia_ml_py_is_a_reason_not_an_error(monkeypatch):
    monkeypatch.setattr(telemetry, "_load_nvml", lambda: None)
    sample = TelemetrySampler().sample()
    assert sample.gpu is None and "nvidia-ml-py" in sample.gpu_unavailable


def test_torch_memory_is_not_read_without_cuda():
    assert telemetry.read_torch_memory() is None  # CUDA never initialised in this process


def test_telemetry_imports_no_ui_and_no_torch():
    code = ("import sys, gemma_core.telemetry as t; t.TelemetrySampler().sample(); "
            "print(sorted(m for m in ('textual', 'plotext', 'rich', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
