"""Device and precision choice, auto-detected and overridable."""

from __future__ import annotations

import contextlib
import os

import torch

from gemma_core.errors import UserError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA device is available here; use --device cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise UserError(f"--device {name!r} is not supported; use auto, cpu or cuda")
    return torch.device(name)


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX512-BF16 or AMX)."""
    backend = getattr(torch.backends, "cpu", None)
    capability = backend.get_cpu_capability() if backend is not None else ""
    with contextlib.suppress(Exception):
        import torch._C as C
        if hasattr(C, "_cpu__is_amx_tile_supported") and C._cpu__is_amx_tile_supported():
            return True
    return "AVX512" in capability and _has_cpu_flag("avx512_bf16")


def _has_cpu_flag(flag: str) -> bool:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            return any(flag in line for line in f if line.startswith("flags"))
    return False


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """The autocast dtype: bf16 where the hardware has it, else fp32. Never fp16."""
    if name in ("fp16", "float16"):
        raise UserError("--dtype fp16 is not supported: Gemma 3 overflows in float16; use bf16 or fp32")
    if name in ("fp32", "float32"):
        return torch.float32
    if name in ("bf16", "bfloat16"):
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise UserError("--dtype bf16: this GPU has no bfloat16 support; use --dtype fp32")
        return torch.bfloat16
    if name != "auto":
        raise UserError(f"--dtype {name!r} is not supported; use auto, bf16 or fp32")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_supports_bf16() else torch.float32


def autocast(device: torch.device, dtype: torch.dtype):
    """Mixed precision over fp32 master weights; a no-op in fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def available_bytes(device: torch.device) -> int | None:
    """Memory free for this process on the device, or None when it cannot be told."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
