"""In-process A/B probes at the model's own shapes: the seconds a run's Linear layers take in one setting
against another (dtype, torch threads, CPU affinity), so a fix's estimate prices the work that fix
changes instead of scaling a whole stage by a generic 512x512 matmul ratio.

The shapes come from the tracer (ModuleLog.linears: calls per (tokens, in, out, device, dtype)). The two
settings are timed alternately, `repeats` times each (three times as many when that does not separate
them), so a burst of other load hits both; the result carries the spread and whether the probe's threads
waited for a core, which is how a check tells a measurement it can stand on from one taken on a shared
machine.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from foleyscope.trace.procstat import cpu_wait_seconds, steal_seconds

Shape = tuple[int, int, int, str, str]  # tokens, in_features, out_features, device, dtype
MAX_SHAPES = 16  # the largest shapes by FLOPs x calls; the rest is scaled in by FLOPs
MIN_TIMED_S = 0.02  # each shape is called enough times to take at least this long
CONTENDED_SHARE = 0.1  # the probe's threads waited for a core this share of its wall time
SETTLE_S = 0.01  # after a switch, a resized pool's idle workers stop spinning (they would share our cores)


@dataclass(frozen=True)
class Setting:
    dtype: str | None = None  # None: each shape's own dtype
    threads: int | None = None  # torch intra-op threads (None: as now)
    cores: frozenset[int] | None = None  # CPU affinity of every thread of the process (None: as now)


@dataclass(frozen=True)
class AB:
    a_s: float  # seconds of the run's Linear calls in setting A (median over repeats)
    b_s: float
    spread_s: float  # the larger of the two settings' range over repeats (see _spread)
    coverage: float  # share of the Linear FLOPs in the timed shapes (the rest scaled in)
    contended: bool  # its threads waited for a core (or the hypervisor stole one) over 10% of its time

    @property
    def saving_s(self) -> float:
        return self.a_s - self.b_s

    def evidence(self, prefix: str) -> dict[str, float | bool]:
        return {f"{prefix}_a_s": round(self.a_s, 4), f"{prefix}_b_s": round(self.b_s, 4),
                f"{prefix}_spread_s": round(self.spread_s, 4), f"{prefix}_coverage": round(self.coverage, 3),
                f"{prefix}_contended": self.contended}


def flops(shapes: dict[Shape, int]) -> float:
    return sum(2.0 * t * i * o * n for (t, i, o, _, _), n in shapes.items())


def _dtype(name: str):  # noqa: ANN202 - a torch.dtype, torch imported late
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


@contextmanager
def applied(setting: Setting) -> Iterator[None]:
    """The setting's threads and affinity for the duration, restored after (every thread's own mask)."""
    import torch

    threads_before = torch.get_num_threads()
    masks: dict[int, set[int]] = {}
    try:
        if setting.cores is not None:
            for tid in (int(t) for t in os.listdir("/proc/self/task")):
                try:
                    masks[tid] = os.sched_getaffinity(tid)
                    os.sched_setaffinity(tid, setting.cores)
                except OSError:  # a thread that just exited
                    continue
        if setting.threads is not None:
            torch.set_num_threads(setting.threads)
        yield
    finally:
        torch.set_num_threads(threads_before)
        for tid, mask in masks.items():
            try:
                os.sched_setaffinity(tid, mask)
            except OSError:
                continue


def _time_shape(shape: Shape, dtype: str, reps: int | None = None) -> tuple[float, int]:
    """(seconds per call, calls timed) of F.linear at one shape, after a warm-up call."""
    import torch

    tokens, k, n, device, _ = shape
    dt = _dtype(dtype)
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(tokens, k, generator=g).to(device, dt)
    w = torch.randn(n, k, generator=g).to(device, dt)
    with torch.inference_mode():
        torch.nn.functional.linear(x, w)
        if reps is None:
            t, reps = time.perf_counter(), 1
            torch.nn.functional.linear(x, w)
            _sync(device)
            one = max(time.perf_counter() - t, 1e-6)
            reps = max(1, min(200, int(MIN_TIMED_S / one)))
        t = time.perf_counter()
        for _ in range(reps):
            torch.nn.functional.linear(x, w)
        _sync(device)
    return (time.perf_counter() - t) / reps, reps


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _chosen(shapes: dict[Shape, int]) -> tuple[list[tuple[Shape, int]], float]:
    ranked = sorted(shapes.items(), key=lambda kv: -flops({kv[0]: kv[1]}))[:MAX_SHAPES]
    total = flops(shapes)
    return ranked, (flops(dict(ranked)) / total if total > 0 else 1.0)


def _seconds(chosen: list[tuple[Shape, int]], setting: Setting, reps: dict) -> float:
    total = 0.0
    with applied(setting):
        time.sleep(SETTLE_S)
        for shape, calls in chosen:
            per, reps[shape, setting] = _time_shape(shape, setting.dtype or shape[4], reps.get((shape, setting)))
            total += per * calls
    return total


def _spread(runs: list[float]) -> float:
    """Range of the runs, the fastest and slowest dropped once there are 5 or more (one burst of other
    load, or a pool still waking, must not decide)."""
    ordered = sorted(runs)
    if len(ordered) >= 5:
        ordered = ordered[1:-1]
    return ordered[-1] - ordered[0]


def _alternate(a: Callable[[], float], b: Callable[[], float], repeats: int, scale: float,
               coverage: float) -> AB:
    """Time a and b alternately after one warm-up each. When the first `repeats` pairs do not separate
    the two (their gap within the spread) or other processes held the cores, twice as many more pairs
    are timed and all of them count: a transient disturbance then moves neither the median nor the spread."""
    a(), b()  # warm-up: thread pools resized, kernels chosen, call counts fixed
    a_runs: list[float] = []
    b_runs: list[float] = []
    wall, wait0, steal0 = time.perf_counter(), cpu_wait_seconds(), steal_seconds()
    for more in (repeats, 2 * repeats):
        for _ in range(more):
            a_runs.append(a() * scale)
            b_runs.append(b() * scale)
        waited = max(_since(wait0, cpu_wait_seconds()), _since(steal0, steal_seconds()))
        contended = waited > CONTENDED_SHARE * (time.perf_counter() - wall)
        result = AB(statistics.median(a_runs), statistics.median(b_runs),
                    max(_spread(a_runs), _spread(b_runs)), coverage, contended)
        if not contended and abs(result.saving_s) > result.spread_s:
            break
    return result


def _since(before: float | None, after: float | None) -> float:
    return after - before if before is not None and after is not None else 0.0


def compare(shapes: dict[Shape, int], a: Setting, b: Setting, repeats: int = 3) -> AB | None:
    """Time the run's Linear calls in settings a and b, alternately; None if there is nothing to time."""
    chosen, coverage = _chosen(shapes)
    if not chosen:
        return None
    reps: dict = {}
    return _alternate(lambda: _seconds(chosen, a, reps), lambda: _seconds(chosen, b, reps), repeats,
                      1 / coverage if coverage > 0 else 1.0, coverage)


def measure(shapes: dict[Shape, int], setting: Setting) -> float:
    """Seconds the run's Linear calls take in one setting (one pass; the FLOPs not timed scaled in)."""
    chosen, coverage = _chosen(shapes)
    return _seconds(chosen, setting, {}) / coverage if chosen and coverage > 0 else 0.0


def _time_attention(shape: tuple, backend: str | None, reps: int | None = None) -> tuple[float, int]:
    """(seconds per call, calls timed) of scaled_dot_product_attention at one recorded shape, with torch's
    choice of kernel (backend None) or pinned to one ("math")."""
    import contextlib

    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q_shape, k_shape, device, dtype = shape
    dt = _dtype(dtype)
    g = torch.Generator(device="cpu").manual_seed(0)
    q = torch.randn(q_shape, generator=g).to(device, dt)
    k = torch.randn(k_shape, generator=g).to(device, dt)
    v = torch.randn(k_shape, generator=g).to(device, dt)
    pin = sdpa_kernel([SDPBackend.MATH]) if backend == "math" else contextlib.nullcontext()
    with torch.inference_mode(), pin:
        torch.nn.functional.scaled_dot_product_attention(q, k, v)
        if reps is None:
            t = time.perf_counter()
            torch.nn.functional.scaled_dot_product_attention(q, k, v)
            _sync(device)
            reps = max(1, min(200, int(MIN_TIMED_S / max(time.perf_counter() - t, 1e-6))))
        t = time.perf_counter()
        for _ in range(reps):
            torch.nn.functional.scaled_dot_product_attention(q, k, v)
        _sync(device)
    return (time.perf_counter() - t) / reps, reps


def compare_attention(shapes: dict[tuple, int], repeats: int = 3) -> AB | None:
    """The run's attention calls timed on SDPA's math kernel (A) and on torch's own choice (B)."""
    chosen = sorted(shapes.items(), key=lambda kv: -kv[1] * math.prod(kv[0][0]) * kv[0][1][-2])[:MAX_SHAPES]
    if not chosen:
        return None
    reps: dict = {}

    def total(backend: str | None) -> float:
        out = 0.0
        for shape, calls in chosen:
            per, reps[shape, backend] = _time_attention(shape, backend, reps.get((shape, backend)))
            out += per * calls
        return out

    covered = sum(c for _, c in chosen) / max(1, sum(shapes.values()))
    return _alternate(lambda: total("math"), lambda: total(None), repeats, 1.0, covered)


_SPIN: dict[int, float] = {}


def pool_spin_s() -> float:
    """CPU seconds torch's intra-op workers burn spinning after a parallel op when the calling thread
    then blocks (they spin a few ms before sleeping). The tracer's idle accounting allows this much of
    other threads' CPU per wait as spinning, not work done in its place. Measured once per thread count."""
    import torch

    from foleyscope.trace.procstat import cpu_seconds, thread_schedstat

    threads = torch.get_num_threads()
    if threads not in _SPIN:
        x = torch.randn(256, 256)
        spins = []
        for _ in range(3):
            x @ x
            sched, cpu = thread_schedstat(), cpu_seconds()
            time.sleep(0.03)
            after, cpu_after = thread_schedstat(), cpu_seconds()
            own = after[0] - sched[0] if after and sched else 0.0
            spins.append(max(0.0, cpu_after - cpu - own))
        _SPIN[threads] = min(0.03, statistics.median(spins))
    return _SPIN[threads]


def stage_shapes(linears: dict, stages: list[str], device: str | None = None) -> dict[Shape, int]:
    """The Linear calls (shape -> calls) the named stages made, optionally on one device only."""
    out: dict[Shape, int] = {}
    for name in stages:
        for shape, calls in (linears.get(name) or {}).items():
            if device is None or shape[3] == device:
                out[shape] = out.get(shape, 0) + calls
    return out
