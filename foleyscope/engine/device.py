"""Pick the device and the automatic dtype, and time GPU work honestly.

`auto` dtype is bf16 on CUDA. On a CPU it is decided by a short measured matmul probe, because
bf16 is several times faster than fp32 on CPUs with AMX/AVX512-BF16 and several times slower on
CPUs without them; fp16 is never chosen on a CPU (it is emulated and extremely slow)."""

from __future__ import annotations

import torch

from foleyscope.errors import FoleyscopeError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise FoleyscopeError(f"--device {name}: no CUDA GPU is visible to torch {torch.__version__} ({build})")
    if name == "mps" and not torch.backends.mps.is_available():
        raise FoleyscopeError("--device mps: Metal is not available on this machine")
    if name not in ("cpu", "mps") and not name.startswith("cuda"):
        raise FoleyscopeError(f"--device {name}: expected auto, cpu, cuda, cuda:N or mps")
    return torch.device(name)


def auto_dtype(device: torch.device) -> str:
    """`--dtype auto`: bf16 on CUDA; on a CPU bf16 only where a short matmul measurement finds it
    more than 1.2x faster than fp32 (one measurement per process, shared with the doctor)."""
    if device.type == "cuda":
        return "bf16"
    if device.type == "cpu":
        from foleyscope.hardware import speedup

        return "bf16" if speedup("cpu", "bf16") > 1.2 else "fp32"
    return "fp32"


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so a wall-clock reading covers it (CPU work is synchronous)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
