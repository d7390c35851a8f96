"""Acceleration modes side by side: each mode's speed-up over fp32 and its drift from the fp32 output.

    .venv/bin/python benchmarks/modes.py [--preset mid|tiny] [--seconds 5] [--steps 8] [--device cpu]
                                         [--modes fp32,bf16,compile]

Every mode runs the same clip, prompt and seed through the whole pipeline; the fp32 run is the
reference. Drift is the relative L2 error of the generated audio, and of the final latents (the
denoiser's output before the VAE), against the reference. Weights are seeded random, so the drift
measures numerics, not perceived quality. `compile` is timed on its second call (the first pays the
compile). Modes that cannot run on the device (fp16 on a CPU is emulated and very slow) are skipped
with a reason."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from foleyscope.engine.device import resolve_device, synchronize
from foleyscope.engine.modes import Mode
from foleyscope.engine.pipeline import FoleyPipeline
from foleyscope.engine.presets import PRESETS
from foleyscope.media.synth import SynthSpec, make_video

sys.path.insert(0, str(Path(__file__).parent))
from engine import MID  # noqa: E402

MODES = {"fp32": Mode("fp32"), "bf16": Mode("bf16"), "fp16": Mode("fp16"), "compile": Mode("fp32", compile=True),
         "math": Mode("fp32", attention="math")}


def run_mode(name: str, preset, device: torch.device, clip: Path, steps: int) -> tuple[float, np.ndarray, torch.Tensor]:
    pipe = FoleyPipeline.load(preset, device=str(device), mode=MODES[name])
    if MODES[name].compile:
        pipe(clip, "footsteps on gravel", steps=steps, seed=0)  # pays the compile
    synchronize(device)
    start = time.perf_counter()
    cond = pipe.prepare(clip, "footsteps on gravel")
    latents = pipe.denoise(cond, steps=steps, seed=0)
    audio = pipe.decode(cond, latents).audio
    synchronize(device)
    return time.perf_counter() - start, audio, latents.cpu()


def rel(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=("tiny", "mid"), default="mid")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--modes", default="fp32,bf16,compile", help=f"comma-separated, from {', '.join(MODES)}")
    args = ap.parse_args()
    device = resolve_device(args.device)
    preset = MID if args.preset == "mid" else PRESETS["tiny"]
    clip = make_video(Path(tempfile.mkdtemp()) / "modes.mp4", SynthSpec(width=640, height=360, seconds=args.seconds))
    print(f"{preset.name} preset, {device}, {args.seconds:g} s clip, {args.steps} steps, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    ref = None
    rows = []
    for mode in args.modes.split(","):
        if mode == "fp16" and device.type == "cpu":
            rows.append((mode, None, None, None, "skipped: fp16 on a CPU is emulated"))
            continue
        seconds, audio, latents = run_mode(mode, preset, device, clip, args.steps)
        if ref is None:
            ref = (seconds, audio, latents)
        rows.append((mode, seconds, rel(latents, ref[2]), rel(audio, ref[1]), ""))
    print("\n| mode | pipeline s | speed-up vs fp32 | latent drift (rel L2) | audio drift (rel L2) | note |")
    print("|---|---|---|---|---|---|")
    for mode, s, dl, da, note in rows:
        if s is None:
            print(f"| {mode} | - | - | - | - | {note} |")
        else:
            print(f"| {mode} | {s:.2f} | {ref[0] / s:.2f}x | {dl:.2e} | {da:.2e} | {note} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
