"""What this machine can do, measured: peak matmul FLOP/s per device and dtype, host-to-GPU copy speed.

The engine asks it which dtype is fastest (`--dtype auto`); the doctor uses it for the compute floor
and for dtype advice. On CPUs without native bf16 (no AVX512-BF16/AMX) bf16 matmuls are several times
SLOWER than fp32, on CPUs with them several times faster: measured, never assumed. Results are cached
per process: a measurement costs about 0.2 s per dtype on a CPU. Dtypes are named fp32/bf16/fp16.

`FOLEYSCOPE_CPU_BF16_SPEEDUP=R` makes the CPU measurement report bf16 at R times its measured fp32 speed: it
simulates the other kind of CPU (R=8 for AMX, R=0.2 for none), so the suite and the dtype advice can be
checked both ways on one machine. Only the measurement's answer changes, never the arithmetic.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Any

_ALIASES = {
    "float32": "fp32", "float": "fp32", "f32": "fp32",
    "bfloat16": "bf16", "float16": "fp16", "half": "fp16", "f16": "fp16",
}
_TORCH_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "tf32": "float32"}


def norm_dtype(value: Any) -> str | None:
    """'torch.bfloat16' / 'bfloat16' / torch.bfloat16 -> 'bf16' (fp32, bf16, fp16, tf32); None stays None."""
    if value is None:
        return None
    text = str(value).removeprefix("torch.").lower()
    return _ALIASES.get(text, text)


def norm_device(value: Any) -> str:
    """'cuda:0' -> 'cuda'; anything else -> its type."""
    return str(value or "cpu").split(":")[0]


@dataclass
class Measurement:
    device: str
    dtype: str
    flops_per_s: float
    n: int
    seconds: float  # time the measurement itself took
    threads: int = 0  # torch CPU threads during a CPU measurement

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


FORCE_BF16_ENV = "FOLEYSCOPE_CPU_BF16_SPEEDUP"
_CACHE: dict[tuple[str, str, int], Measurement] = {}  # (device, dtype, CPU threads): the peak depends on all three


def _torch_dtype(torch: Any, dtype: str) -> Any:
    return getattr(torch, _TORCH_NAMES.get(dtype, dtype))


def _one_round(torch: Any, device: str, dtype: str, n: int, budget_s: float) -> tuple[float, int]:
    """Best single-matmul time over `budget_s` (best-of resists other processes stealing the cores)."""
    dev = torch.device(device)
    dt = _torch_dtype(torch, dtype)
    cuda = dev.type == "cuda"
    tf32_before = torch.backends.cuda.matmul.allow_tf32 if cuda else None
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"
    try:
        with torch.inference_mode():
            a = torch.randn(n, n, device=dev).to(dt)
            b = torch.randn(n, n, device=dev).to(dt)
            a @ b  # warm-up: kernel selection, allocator
            if cuda:
                torch.cuda.synchronize()
            best, k, end = float("inf"), 0, time.perf_counter() + budget_s
            reps = 8 if cuda else 1
            while time.perf_counter() < end or k == 0:
                t = time.perf_counter()
                for _ in range(reps):
                    a @ b
                if cuda:
                    torch.cuda.synchronize()
                best = min(best, (time.perf_counter() - t) / reps)
                k += 1
    finally:
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = tf32_before
    return 2.0 * n**3 / best, k


def _default_n(device: str, dtype: str) -> int:
    if device == "cuda":
        return 4096
    return 256 if dtype == "fp16" else 512  # fp16 on CPU runs at a few GFLOP/s: keep it short


def measure(device: str = "cpu", dtypes: tuple[str, ...] = ("fp32",), *, budget_s: float = 0.08,
            rounds: int = 3) -> dict[str, Measurement]:
    """Peak matmul FLOP/s per dtype, measured in interleaved rounds so that a burst of load from another
    process hurts every dtype alike; cached per (device, dtype)."""
    import torch

    device = norm_device(device)
    threads = torch.get_num_threads() if device == "cpu" else 0
    wanted = [d for d in dict.fromkeys(norm_dtype(x) for x in dtypes) if (device, d, threads) not in _CACHE]
    best: dict[str, float] = {d: 0.0 for d in wanted}
    spent: dict[str, float] = {d: 0.0 for d in wanted}
    for _ in range(rounds):
        for d in wanted:
            t = time.perf_counter()
            flops, _k = _one_round(torch, device, d, _default_n(device, d), budget_s)
            best[d] = max(best[d], flops)
            spent[d] += time.perf_counter() - t
    forced = os.environ.get(FORCE_BF16_ENV) if device == "cpu" else None
    if forced and "bf16" in wanted:
        fp32 = best["fp32"] if "fp32" in best else measure(device, ("fp32",))["fp32"].flops_per_s
        best["bf16"] = fp32 * _forced_ratio(forced)
    for d in wanted:
        _CACHE[(device, d, threads)] = Measurement(device, d, best[d], _default_n(device, d), spent[d], threads)
    return {norm_dtype(d): _CACHE[(device, norm_dtype(d), threads)] for d in dtypes}


def _forced_ratio(text: str) -> float:
    try:
        ratio = float(text)
    except ValueError:
        ratio = 0.0
    if not 0 < ratio < 1000:
        from foleyscope.errors import FoleyscopeError

        raise FoleyscopeError(f"{FORCE_BF16_ENV}={text!r}: expected a positive speed-up such as 8 or 0.2")
    return ratio


def peak_flops(device: str = "cpu", dtype: str = "fp32") -> float:
    return measure(device, (dtype,))[norm_dtype(dtype)].flops_per_s


def ratio_probe(device: str, dtypes: tuple[str, ...]) -> dict[str, Measurement]:
    """The measurement that decides between dtypes. On a CPU it runs on one thread: the speed-up of one
    dtype over another is a property of the core, and a multi-threaded matmul on a shared machine waits
    at every barrier for a thread another process has descheduled (the probe then read 40-60x where a
    quiet machine reads 4x)."""
    if norm_device(device) != "cpu":
        return measure(device, dtypes)
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return measure(device, dtypes)
    finally:
        torch.set_num_threads(before)


def speedup(device: str, fast: str, base: str = "fp32") -> float:
    """Measured matmul speed of `fast` over `base` on `device` (> 1: `fast` is faster)."""
    found = ratio_probe(device, (base, fast))
    return found[norm_dtype(fast)].flops_per_s / found[norm_dtype(base)].flops_per_s


def fastest_dtype(device: str = "cpu", candidates: tuple[str, ...] = ("fp32", "bf16")) -> str:
    """The candidate with the highest measured matmul throughput on `device` (what the engine should run)."""
    found = ratio_probe(device, candidates)
    return max(found.values(), key=lambda m: m.flops_per_s).dtype


def cached() -> dict[str, dict[str, Any]]:
    """Every measurement taken so far in this process, for the report."""
    return {f"{dev}/{dt}" + (f"/{n}threads" if n else ""): p.to_dict() for (dev, dt, n), p in _CACHE.items()}


_BW_CACHE: dict[str, dict[str, float]] = {}


def copy_bandwidth(nbytes: int = 64 * 2**20) -> dict[str, float]:
    """Host-to-CUDA copy bytes/s from pageable and from pinned memory (measured once per process)."""
    if "cuda" in _BW_CACHE:
        return _BW_CACHE["cuda"]
    import torch

    out: dict[str, float] = {}
    host = torch.empty(nbytes, dtype=torch.uint8)
    pinned = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
    dev = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    for label, src, nb in (("pageable", host, False), ("pinned", pinned, True)):
        dev.copy_(src, non_blocking=nb)
        torch.cuda.synchronize()
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            dev.copy_(src, non_blocking=nb)
            torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t)
        out[label] = nbytes / best
    _BW_CACHE["cuda"] = out
    return out
