"""Step 0's facts about the machine and the torch build: which device ran, which GPUs are visible even
when torch cannot use them (NVML or the driver's /proc entries), memory free versus used, swapping."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import psutil


def visible_gpus() -> list[dict[str, Any]]:
    """GPUs the machine has, independent of torch: NVML first, then the NVIDIA driver's /proc entries."""
    gpus: list[dict[str, Any]] = []
    try:
        import pynvml

        pynvml.nvmlInit()
        driver = pynvml.nvmlSystemGetDriverVersion()
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            name = pynvml.nvmlDeviceGetName(h)
            gpus.append({
                "index": i,
                "name": name.decode() if isinstance(name, bytes) else str(name),
                "memory_total_bytes": int(mem.total),
                "memory_used_bytes": int(mem.used),
                "driver": driver.decode() if isinstance(driver, bytes) else str(driver),
                "source": "nvml",
            })
        if gpus:
            return gpus
    except Exception:  # noqa: BLE001 - no driver / no library: fall through to /proc
        pass
    proc = Path("/proc/driver/nvidia/gpus")
    if proc.is_dir():
        for i, d in enumerate(sorted(proc.iterdir())):
            info = (d / "information").read_text(errors="replace") if (d / "information").exists() else ""
            models = [ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("Model")]
            model = models[0] if models else ""
            gpus.append({"index": i, "name": model or d.name, "source": "/proc/driver/nvidia"})
    return gpus


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    """The bf16/fp16 matrix extensions the CPU exposes (explains the dtype probe's numbers)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return sorted(f for f in flags if f.startswith("amx") or f in ("avx512_bf16", "avx512_fp16"))
    except OSError:
        pass
    return []


def memory_snapshot() -> dict[str, Any]:
    """Free and used memory now, host and (when torch can use it) CUDA; swap counters for deltas."""
    vm = psutil.virtual_memory()
    sw = psutil.swap_memory()
    snap: dict[str, Any] = {
        "ram_total_bytes": int(vm.total),
        "ram_available_bytes": int(vm.available),
        "rss_bytes": int(psutil.Process().memory_info().rss),
        "swap_used_bytes": int(sw.used),
        "swap_in_bytes": int(getattr(sw, "sin", 0) or 0),
        "swap_out_bytes": int(getattr(sw, "sout", 0) or 0),
    }
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            free, total = torch.cuda.mem_get_info()
            snap.update(cuda_free_bytes=int(free), cuda_total_bytes=int(total),
                        cuda_allocated_bytes=int(torch.cuda.memory_allocated()))
    except Exception:  # noqa: BLE001
        pass
    return snap


def machine_cores() -> int:
    """Cores this container may use at all: the CPU count, capped by a cgroup v2 CPU quota. The process's
    affinity (usable_cores) may be narrower than this: that gap is what `taskset` or a launcher took."""
    cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def torch_facts() -> dict[str, Any]:
    facts: dict[str, Any] = {"torch": None}
    try:
        import torch
    except ImportError:
        return facts
    facts.update(
        torch=torch.__version__,
        torch_cuda=torch.version.cuda,  # None: a CPU-only build
        cuda_available=bool(torch.cuda.is_available()),
        num_threads=torch.get_num_threads(),
        cpu_capability=torch.backends.cpu.get_cpu_capability(),
    )
    if torch.cuda.is_available():
        i = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(i)
        facts.update(
            cuda_device=props.name,
            cuda_capability=f"{props.major}.{props.minor}",
            cuda_memory_total_bytes=int(props.total_memory),
            tf32_matmul=bool(torch.backends.cuda.matmul.allow_tf32),
            cudnn=torch.backends.cudnn.version(),
        )
    return facts


def collect(module_log: Any | None = None) -> dict[str, Any]:
    """Everything step 0 reads, gathered after the run (nothing here touches the timed work)."""
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_matrix_flags": _cpu_flags(),
        "logical_cores": psutil.cpu_count(logical=True) or 1,
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "machine_cores": machine_cores(),
        "gpus_visible": visible_gpus(),
    }
    env.update(torch_facts())
    if module_log is not None:
        devices: dict[str, int] = {}
        dtypes: dict[str, int] = {}
        for per in module_log.params.values():
            for (dev, dt), n in per.items():
                devices[dev] = devices.get(dev, 0) + n
                dtypes[dt] = dtypes.get(dt, 0) + n
        env["param_devices"] = devices  # parameter elements seen in forward calls, by device
        env["param_dtypes"] = dtypes
    return env
