"""What the machine is doing while a model trains: GPU through NVML, else this process.

``TelemetrySampler.sample()`` returns an immutable ``TelemetrySample``. It never
raises: without an NVIDIA GPU or driver it says why once (``gpu_unavailable``)
and reports this process's CPU and memory instead. A GPU field NVML cannot read
(power on some boards, per-process memory inside a container) is ``None``.

NVML comes from NVIDIA's ``nvidia-ml-py`` package (``import pynvml``). This
module imports neither a UI library nor torch: torch's memory counters are read
only when the training process has already imported torch and started CUDA.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable

NO_GPU = "no NVIDIA GPU"  # why there is no GPU reading, on a machine without one


@dataclass(frozen=True)
class GpuReading:
    index: int
    name: str
    memory_used: int  # bytes, all processes
    memory_total: int
    utilization: float | None  # percent of time a kernel ran
    temperature_c: float | None
    power_w: float | None
    power_limit_w: float | None
    process_memory: int | None  # bytes this process holds on the GPU


@dataclass(frozen=True)
class TorchMemory:
    allocated: int  # bytes in live tensors
    reserved: int  # bytes the caching allocator holds
    peak: int  # most bytes ever allocated


@dataclass(frozen=True)
class HostReading:
    cpu_percent: float | None  # of one core; None on the first sample
    cpu_count: int
    rss: int | None  # bytes resident for this process
    ram_total: int | None


@dataclass(frozen=True)
class TelemetrySample:
    time: float  # time.monotonic()
    gpu: GpuReading | None
    torch_memory: TorchMemory | None
    host: HostReading
    gpu_unavailable: str | None  # why there is no GPU reading; None when there is one


def _load_nvml() -> ModuleType | None:
    try:
        import pynvml
    except ImportError:
        return None
    return pynvml


class TelemetrySampler:
    """Samples one GPU (or the host) on demand; cheap enough to call once a second."""

    def __init__(self, device_index: int = 0, nvml: Any = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.device_index = device_index
        self._nvml = nvml if nvml is not None else _load_nvml()
        self._clock = clock
        self._handle: Any = None
        self._gpu_name = ""
        self._unavailable: str | None = None
        self._started = False
        self._last_cpu: tuple[float, float] | None = None  # (wall, cpu seconds)

    # ------------------------------------------------------------ lifecycle
    def _start(self) -> None:
        """Initialise NVML once; remember why it failed instead of retrying every sample."""
        self._started = True
        nvml = self._nvml
        if nvml is None:
            self._unavailable = f"{NO_GPU} reading (nvidia-ml-py is not installed)"
            return
        try:
            nvml.nvmlInit()
        except Exception as err:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ...
            # No NVIDIA library at all is the everyday machine without a GPU: say just that.
            # A library without a working driver is a GPU machine with a problem worth naming.
            library_missing = type(err).__name__ == "NVMLError_LibraryNotFound"
            self._unavailable = NO_GPU if library_missing else f"no NVIDIA driver ({_nvml_reason(err)})"
            return
        try:
            count = nvml.nvmlDeviceGetCount()
            if self.device_index >= count:
                self._unavailable = f"no NVIDIA GPU {self.device_index} (found {count})"
                self._shutdown_nvml()
                return
            self._handle = nvml.nvmlDeviceGetHandleByIndex(self.device_index)
            name = nvml.nvmlDeviceGetName(self._handle)
            self._gpu_name = name.decode() if isinstance(name, bytes) else str(name)
        except Exception as err:
            self._unavailable = f"NVIDIA GPU not readable ({_nvml_reason(err)})"
            self._handle = None
            self._shutdown_nvml()

    def _shutdown_nvml(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except Exception:
            pass

    def close(self) -> None:
        if self._handle is not None:
            self._handle = None
            self._shutdown_nvml()

    @property
    def gpu_unavailable(self) -> str | None:
        if not self._started:
            self._start()
        return self._unavailable

    # -------------------------------------------------------------- reading
    def sample(self) -> TelemetrySample:
        if not self._started:
            self._start()
        gpu = self._read_gpu() if self._handle is not None else None
        return TelemetrySample(time=self._clock(), gpu=gpu, torch_memory=read_torch_memory(),
                               host=self._read_host(), gpu_unavailable=self._unavailable)

    def _read_gpu(self) -> GpuReading | None:
        nvml, handle = self._nvml, self._handle
        try:
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        except Exception as err:
            # The device went away (driver reset, GPU fell off the bus): stop asking.
            self._unavailable = f"NVIDIA GPU stopped answering ({_nvml_reason(err)})"
            self.close()
            return None
        utilization = _optional(lambda: float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu))
        temperature = _optional(lambda: float(
            nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)))
        power = _optional(lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0)
        limit = _optional(lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0)
        return GpuReading(index=self.device_index, name=self._gpu_name,
                          memory_used=int(memory.used), memory_total=int(memory.total),
                          utilization=utilization, temperature_c=temperature, power_w=power,
                          power_limit_w=limit, process_memory=self._process_gpu_memory())

    def _process_gpu_memory(self) -> int | None:
        # Inside a container NVML reports host PIDs, so this process may not be found.
        def find() -> int | None:
            pid = os.getpid()
            for proc in self._nvml.nvmlDeviceGetComputeRunningProcesses(self._handle):
                if proc.pid == pid and proc.usedGpuMemory is not None:
                    return int(proc.usedGpuMemory)
            return None
        return _optional(find)

    def _read_host(self) -> HostReading:
        now = self._clock()
        times = os.times()
        cpu_seconds = times.user + times.system  # all threads of this process
        cpu_percent = None
        if self._last_cpu is not None:
            wall = now - self._last_cpu[0]
            if wall > 0:
                cpu_percent = max(0.0, 100.0 * (cpu_seconds - self._last_cpu[1]) / wall)
        self._last_cpu = (now, cpu_seconds)
        return HostReading(cpu_percent=cpu_percent, cpu_count=os.cpu_count() or 1,
                           rss=read_rss(), ram_total=read_ram_total())


def _optional(read: Callable[[], Any]) -> Any:
    """A reading NVML may not support on this board: None instead of an error."""
    try:
        return read()
    except Exception:
        return None


def _nvml_reason(err: Exception) -> str:
    text = str(err).strip()
    return text or type(err).__name__


def read_rss() -> int | None:
    """Resident memory of this process in bytes (current from /proc, else the peak)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    try:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (OSError, ValueError):
        return None
    return peak if sys.platform == "darwin" else peak * 1024  # macOS: bytes, Linux: KiB


def read_ram_total() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError, AttributeError):
        return None


def read_torch_memory() -> TorchMemory | None:
    """torch's CUDA allocator counters, only if this process already uses CUDA.

    Importing torch or initialising CUDA here would cost seconds and memory in a
    process that does not train on a GPU, so neither is done.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        if not torch.cuda.is_initialized():
            return None
        return TorchMemory(allocated=int(torch.cuda.memory_allocated()),
                           reserved=int(torch.cuda.memory_reserved()),
                           peak=int(torch.cuda.max_memory_allocated()))
    except Exception:
        return None
