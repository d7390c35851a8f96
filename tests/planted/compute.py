"""Planted CPU causes in a user's own model loop: a wait inside every step, a stalled stage, torch held to
one thread, the process masked to one core, and a dtype slower than the other on this CPU."""

from __future__ import annotations

import os
import time

import torch

from foleyscope import hardware
from foleyscope.stages import Stage
from foleyscope.trace import stage, step
from planted import case

WIDTH, TOKENS, DEPTH = 1024, 256, 4
TARGET_S = 0.5  # each loop is sized to take about this long on this machine in its clean setting


class MLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(WIDTH, WIDTH) for _ in range(DEPTH))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.nn.functional.gelu(layer(x))
        return x


_MODELS: dict[torch.dtype, MLP] = {}


def _model(dtype: torch.dtype) -> MLP:
    if dtype not in _MODELS:
        torch.manual_seed(0)
        _MODELS[dtype] = MLP().to(dtype).eval()
    return _MODELS[dtype]


def fast_dtype() -> torch.dtype:
    """The dtype the doctor's probe measures fastest here: the clean twins' setting (a twin in the slower
    dtype would carry a second, unplanted cause)."""
    return {"bf16": torch.bfloat16, "fp32": torch.float32}[hardware.fastest_dtype("cpu")]


_STEPS: dict[torch.dtype, int] = {}


def steps_for(dtype: torch.dtype, seconds: float = TARGET_S) -> int:
    """Steps that take about `seconds` in `dtype` with the current threads (timed once, then cached), so
    every case plants a saving well above the noise whatever the CPU."""
    if dtype not in _STEPS:
        _denoise(2, dtype)
        t = time.perf_counter()
        _denoise(8, dtype)
        _STEPS[dtype] = max(4, round(TARGET_S / ((time.perf_counter() - t) / 8)))
    return max(2, round(_STEPS[dtype] * seconds / TARGET_S))


def _denoise(steps: int, dtype: torch.dtype | None = None, wait_s: float = 0.0) -> None:
    """A user's denoising loop: `steps` forwards of a fixed model on fixed input."""
    dtype = dtype or fast_dtype()
    model = _model(dtype)
    x = torch.randn(TOKENS, WIDTH, generator=torch.Generator().manual_seed(0)).to(dtype)
    with stage(Stage.DENOISE, total=steps), torch.inference_mode():
        for i in range(steps):
            with step(i, steps):
                model(x)
                if wait_s:
                    time.sleep(wait_s)  # e.g. a progress callback posting to a web hook, synchronously


def _all_threads_on(cores: set[int]) -> None:
    """What `taskset -c` does to a process: every thread's CPU mask."""
    for tid in (int(t) for t in os.listdir("/proc/self/task")):
        try:
            os.sched_setaffinity(tid, cores)
        except OSError:
            continue


def _warm(*dtypes: torch.dtype) -> None:
    """Size the loops (steps_for) before either twin runs, so neither pays the timing."""
    for dtype in dtypes or (fast_dtype(),):
        steps_for(dtype)


def _warm_one_thread() -> None:
    """Also run the loop once on one thread: the first run after a thread-count change pays for kernels
    made for it (about 0.5 s here), which would be credited to the planted cause."""
    _warm()
    torch.set_num_threads(1)
    _denoise(steps_for(fast_dtype(), 0.1))


@case("wait_in_every_step", "blocked_in_stage", warmup=_warm)
def _wait_in_steps():
    """A synchronous 15 ms wait inside each of 24 denoising steps."""
    n = 24
    return (lambda: _denoise(n, wait_s=0.015)), (lambda: _denoise(n))


def _stalled(sleep_s: float) -> None:
    _denoise(steps_for(fast_dtype(), 0.1))
    with stage("fetch_conditions"):
        time.sleep(sleep_s)  # a blocking fetch that does no work
    _denoise(steps_for(fast_dtype(), 0.1))


@case("stalled_stage", "stall", warmup=_warm, needs_free_cores=True)
def _stall():
    """A stage that only waits (0.4 s) between two bursts of compute."""
    return (lambda: _stalled(0.4)), (lambda: _stalled(0.0))


def _threads(n: int) -> None:
    steps = steps_for(fast_dtype())
    torch.set_num_threads(n)  # left set: the doctor reads the threads after the run, as they were
    _denoise(steps)


def _need_cores() -> str | None:
    return None if len(os.sched_getaffinity(0)) >= 2 else "needs at least 2 usable cores"


@case("torch_one_thread", "torch_threads_low", skip=_need_cores, warmup=_warm_one_thread, needs_free_cores=True)
def _one_thread():
    """torch.set_num_threads(1) on a machine with 2 or more cores."""
    cores = len(os.sched_getaffinity(0))
    return (lambda: _threads(1)), (lambda: _threads(cores))


def _masked(cores: set[int]) -> None:
    steps = steps_for(fast_dtype())
    _all_threads_on(cores)
    torch.set_num_threads(len(cores))  # torch's default under `taskset`: one thread per allowed core
    _denoise(steps)


@case("taskset_one_core", "cpu_affinity_narrow", skip=_need_cores, warmup=_warm_one_thread,
      needs_free_cores=True)
def _one_core():
    """The process masked to one core (`taskset -c 0`) on a machine with more."""
    every = set(range(os.cpu_count() or 1))
    return (lambda: _masked({min(every)})), (lambda: _masked(every))


def _bf16_speedup() -> float:
    return hardware.speedup("cpu", "bf16")


def _dtype_skip(slow_when: str) -> str | None:
    """Why a dtype case cannot show its cause here: bf16 not slower/faster, or the speed-up forced by
    FOLEYSCOPE_CPU_BF16_SPEEDUP (that changes the doctor's decision, not the speed the twins run at)."""
    if os.environ.get(hardware.FORCE_BF16_ENV):
        return f"{hardware.FORCE_BF16_ENV} is set: the twins would run at this CPU's real speed"
    ratio = _bf16_speedup()
    if slow_when == "fp32":
        return None if ratio >= 1.3 else f"bf16 is not faster here ({ratio:.2f}x)"
    return None if ratio <= 1 / 1.3 else f"bf16 is not slower here ({ratio:.2f}x)"


@case("fp32_where_bf16_fast", "fp32_where_bf16_fast", warmup=lambda: _warm(torch.bfloat16, torch.float32),
      skip=lambda: _dtype_skip("fp32"), needs_free_cores=True)
def _fp32_slow():
    """fp32 on a CPU whose bf16 matmuls are faster (AVX512-BF16, AMX)."""
    return (lambda: _denoise(steps_for(torch.bfloat16, 0.25), torch.float32)), \
        (lambda: _denoise(steps_for(torch.bfloat16, 0.25), torch.bfloat16))


@case("bf16_without_native_bf16", "half_precision_slow", warmup=lambda: _warm(torch.bfloat16, torch.float32),
      skip=lambda: _dtype_skip("bf16"), needs_free_cores=True)
def _bf16_slow():
    """bf16 on a CPU without native bf16 matrix instructions."""
    return (lambda: _denoise(steps_for(torch.float32, 0.25), torch.bfloat16)), \
        (lambda: _denoise(steps_for(torch.float32, 0.25), torch.float32))


def _hogged(n: int, steps: int) -> None:
    """The loop while `n` other processes spin on the cores (another job on a shared machine)."""
    import subprocess
    import sys

    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(0.05)  # let them take the cores
        _denoise(steps)
    finally:
        for h in hogs:
            h.kill()
            h.wait()


@case("other_processes_on_the_cores", "cpu_contention", skip=_need_cores, warmup=_warm, needs_free_cores=True)
def _contention():
    """Two CPU-bound processes sharing the cores with the run."""
    cores = len(os.sched_getaffinity(0))
    return (lambda: _hogged(cores, steps_for(fast_dtype(), 0.3))), (lambda: _hogged(0, steps_for(fast_dtype(), 0.3)))
