"""How much does the doctor slow down what it measures?

A fixed CPU workload (a set number of torch matmuls, about --seconds long) is timed alternately without
and with the ResourceSampler at --hz, several times; the table shows each pair and the medians. Wall-time
differences on a shared machine are noisy, so the sampler's own measured time per tick is shown too: it
is the cost it adds, free of that noise. Also measured: stage()/step() per call, inactive and active.
Target: sampler overhead < 3%.

    .venv/bin/python benchmarks/sampler_overhead.py [--seconds 5] [--repeats 3] [--hz 10]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from foleyscope.doctor.resources import ResourceSampler
from foleyscope.trace import Tracer, stage, step


def workload(n_iter: int, a: torch.Tensor, b: torch.Tensor) -> None:
    for _ in range(n_iter):
        a @ b


def calibrate(seconds: float, a: torch.Tensor, b: torch.Tensor) -> int:
    workload(3, a, b)
    t = time.perf_counter()
    workload(20, a, b)
    per = (time.perf_counter() - t) / 20
    return max(20, int(seconds / per))


def timed(n_iter: int, a: torch.Tensor, b: torch.Tensor, hz: float | None
          ) -> tuple[float, float, float, int]:
    """(wall seconds, process CPU seconds, seconds the sampler spent sampling, samples)."""
    sampler = ResourceSampler(hz) if hz else None
    if sampler:
        sampler.start()
    t, c = time.perf_counter(), time.process_time()
    workload(n_iter, a, b)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    if sampler:
        sampler.stop()
        return wall, cpu, sampler.tick_seconds, len(sampler.samples)
    return wall, cpu, 0.0, 0


def per_call_us(active: bool, calls: int = 20000) -> tuple[float, float]:
    """(stage enter+exit, step enter+exit) microseconds per call."""
    tracer = Tracer(observe_modules=False, watch_loads=False).start() if active else None
    try:
        t = time.perf_counter()
        for _ in range(calls):
            with stage("x"):
                pass
        s = (time.perf_counter() - t) / calls * 1e6
        t = time.perf_counter()
        for i in range(calls):
            with step(i, calls):
                pass
        p = (time.perf_counter() - t) / calls * 1e6
    finally:
        if tracer:
            tracer.stop()
    return s, p


def _row(label: str, w0: float, w1: float, c0: float, c1: float, tick: float, samples: str) -> str:
    return (f"{label:>6} {w0:>9.3f} {w1:>9.3f} {w1 / w0 - 1:>9.2%} {c0:>8.3f} {c1:>8.3f} "
            f"{c1 / c0 - 1:>8.2%} {samples:>7} {tick:>9.3%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--hz", type=float, default=10.0)
    ap.add_argument("--n", type=int, default=512, help="matmul size")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    a, b = torch.randn(args.n, args.n), torch.randn(args.n, args.n)
    n_iter = calibrate(args.seconds, a, b)
    print(f"workload: {n_iter} matmuls of {args.n}x{args.n} fp32, torch threads {torch.get_num_threads()}, "
          f"sampler {args.hz:g} Hz")
    print(f"{'repeat':>6} {'wall w/o':>9} {'wall with':>9} {'wall diff':>9} {'cpu w/o':>8} {'cpu with':>8} "
          f"{'cpu diff':>8} {'samples':>7} {'tick cost':>9}")
    rows = []
    for r in range(args.repeats):
        w0, c0, _, _ = timed(n_iter, a, b, None)
        w1, c1, tick_s, n = timed(n_iter, a, b, args.hz)
        rows.append((w0, w1, c0, c1, tick_s / w1))
        print(_row(str(r + 1), w0, w1, c0, c1, tick_s / w1, str(n)))
    med = [statistics.median(col) for col in zip(*rows, strict=True)]
    best = [min(col) for col in zip(*rows, strict=True)]
    for label, (w0, w1, c0, c1, tick) in (("median", med), ("best", best)):
        print(_row(label, w0, w1, c0, c1, tick, ""))
    print("wall diff: noisy where other processes share the cores; cpu diff: extra process CPU time with "
          "the sampler;\ntick cost: time the sampler spent taking samples, as a share of the run.")
    overhead = max(med[4], med[3] / med[2] - 1)
    print(f"overhead (max of median tick cost and median cpu diff): {overhead:.2%}; target < 3%: "
          f"{'PASS' if overhead < 0.03 else 'over target'}")
    print()
    print(f"{'per call':>10} {'stage() us':>11} {'step() us':>10}")
    for label, active in (("inactive", False), ("active", True)):
        s, p = per_call_us(active)
        print(f"{label:>10} {s:>11.2f} {p:>10.2f}")


if __name__ == "__main__":
    main()
