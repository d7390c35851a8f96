"""Engine benchmark on this machine: per-stage wall times for the tiny preset and a mid-size
denoiser, the denoiser's step time with and without the step-invariant caching, and the cost of
joint denoising of long clips (overlapping latents averaged after every step).

    .venv/bin/python benchmarks/engine.py [--seconds 10] [--steps 10] [--device cpu] [--dtype fp32]

Weights are seeded random (the cost of a network does not depend on its values). `mid` (a preset of
engine/presets.py) is the XL denoiser's structure at a width and depth a 2-core CPU can run (768 wide,
4 dual + 8 single blocks, 6 heads) with a 512-wide DAC decoder; its encoders are the tiny ones, because SigLIP2 and
Synchformer at full size cost tens of seconds per clip on such a CPU and are measured by the doctor
on real weights instead. Stage times come from the doctor's tracer, which synchronises the device
at each stage boundary."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from foleyscope.engine.device import resolve_device, synchronize
from foleyscope.engine.modes import Mode
from foleyscope.engine.pipeline import FoleyPipeline
from foleyscope.engine.presets import PRESETS
from foleyscope.engine.windows import LatentLayout
from foleyscope.media.synth import SynthSpec, make_video
from foleyscope.stages import STAGES
from foleyscope.trace import Tracer


def stage_times(pipe: FoleyPipeline, clip: Path, steps: int) -> dict[str, float]:
    pipe(clip, "warm-up", steps=1, seed=0)
    with Tracer() as tracer:
        pipe(clip, "footsteps on gravel", steps=steps, seed=0)
    out = {name: 0.0 for name in STAGES}
    for rec in tracer.stages:
        if rec.parent is None:
            out[rec.name] += rec.end_s - rec.start_s
    out["total"] = tracer.total_s
    return out


def step_time(pipe: FoleyPipeline, seconds: float, cached: bool, reps: int) -> float:
    """One CFG step (batch 2) of the denoiser; uncached = prepare() inside every step, as a naive
    port that passes raw features into forward() would do."""
    p, den = pipe.preset, pipe.components.denoiser
    latent_len = int(seconds * p.latent_rate)
    dt = pipe.dtype
    clip = torch.randn(2, int(seconds * p.clip_fps), p.denoiser.clip_dim, dtype=dt, device=pipe.device)
    sync = torch.randn(2, int(seconds * p.sync_fps) // 8 * 8, p.denoiser.sync_dim, dtype=dt, device=pipe.device)
    text = torch.randn(2, 12, p.denoiser.text_dim, dtype=dt, device=pipe.device)
    x = torch.randn(2, p.denoiser.latent_channels, latent_len, dtype=dt, device=pipe.device)
    t = torch.full((2,), 500.0, device=pipe.device)
    times = []
    with torch.inference_mode():
        cond = den.prepare(clip, sync, text, latent_len)
        for _ in range(reps + 1):
            start = time.perf_counter()
            if not cached:
                cond = den.prepare(clip, sync, text, latent_len)
            den(x, t, cond)
            synchronize(pipe.device)
            times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def joint_cost(pipe: FoleyPipeline, clip: Path, steps: int, reps: int) -> tuple[int, float, float]:
    """(windows, denoise seconds per step, averaging seconds per step) on a multi-window clip: the
    averaging is timed on its own, on latents of the run's shape, so both numbers come from this run."""
    pipe(clip, "warm-up", steps=1, seed=0)
    with Tracer() as tracer:
        result = pipe(clip, "footsteps on gravel", steps=steps, seed=0)
    denoise = sum(r.end_s - r.start_s for r in tracer.stages if r.name == "denoise") / steps
    p = pipe.preset
    latent_len = round(result.windows[0].length_s * p.latent_rate)
    layout = LatentLayout(result.windows, latent_len, p.latent_rate)
    x = torch.randn(len(result.windows), p.denoiser.latent_channels, latent_len, device=pipe.device)
    times = []
    for _ in range(reps * 20 + 1):
        start = time.perf_counter()
        layout.average(x)
        synchronize(pipe.device)
        times.append(time.perf_counter() - start)
    return len(result.windows), denoise, statistics.median(times[1:])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--long-seconds", type=float, default=40.0, help="clip for the joint-denoising cost (tiny)")
    args = ap.parse_args()
    device = resolve_device(args.device)
    mode = Mode(args.dtype)
    clip = make_video(Path(tempfile.mkdtemp()) / "bench.mp4",
                      SynthSpec(width=640, height=360, seconds=args.seconds, fps=25))
    print(f"device {device} ({torch.get_num_threads()} threads), dtype {mode.dtype}, {args.seconds:g} s 640x360 "
          f"25 fps clip, {args.steps} steps, torch {torch.__version__}")
    rows = {}
    for preset in (PRESETS["tiny"], PRESETS["mid"]):
        pipe = FoleyPipeline.load(preset, device=str(device), mode=mode)
        rows[preset.name] = (stage_times(pipe, clip, args.steps),
                             step_time(pipe, args.seconds, True, args.reps),
                             step_time(pipe, args.seconds, False, args.reps))
    names = [s for s in STAGES if s not in ("load", "postprocess")] + ["total"]
    print(f"\n| stage (s) | {' | '.join(rows)} |\n|---|{'---|' * len(rows)}")
    for name in names:
        print(f"| {name} | " + " | ".join(f"{r[0][name]:.3f}" for r in rows.values()) + " |")
    print("\n| denoiser step, CFG batch 2 | cached prepare (ms) | prepare every step (ms) | speed-up |")
    print("|---|---|---|---|")
    for name, (_, cached, uncached) in rows.items():
        print(f"| {name} | {cached * 1e3:.1f} | {uncached * 1e3:.1f} | {uncached / cached:.2f}x |")

    long_clip = make_video(Path(tempfile.mkdtemp()) / "long.mp4",
                           SynthSpec(width=160, height=90, seconds=args.long_seconds, fps=25))
    tiny = PRESETS["tiny"]
    pipe = FoleyPipeline.load(tiny, device=str(device), mode=mode)
    n, step_s, avg_s = joint_cost(pipe, long_clip, args.steps, args.reps)
    print(f"\n| joint denoising, tiny, {args.long_seconds:g} s clip | windows | denoise per step (ms) "
          "| overlap averaging per step (ms) | overhead |\n|---|---|---|---|---|")
    print(f"| tiny | {n} | {step_s * 1e3:.2f} | {avg_s * 1e3:.3f} | {avg_s / step_s:.2%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
