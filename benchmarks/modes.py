"""`foleyscope bench --preset mid --random-weights` on a generated 640x360 clip, printing also the
markdown table RESULTS.md records: the CPU numbers of each mode.

    .venv/bin/python benchmarks/modes.py [--seconds 5] [--steps 8] [--repeat 3] [--device cpu]
        [--modes fp32,bf16,bf16+compile,int8wo,int8dq,bf16+cache] [--batch 1] [--json out/modes.json]

The same measurement as the command (engine/bench.py): a warm-up per mode, medians over repeats with
device-synchronised stage boundaries, the same noise for every mode, drift against the first."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from foleyscope.commands.bench import BenchProgress, machine, render, to_json
from foleyscope.engine.bench import BenchSpec, bench
from foleyscope.engine.device import resolve_device
from foleyscope.engine.modes import parse_mode, resolve
from foleyscope.media.synth import SynthSpec, make_video

MODES = "fp32,bf16,bf16+compile,int8wo,int8dq,bf16+cache"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--modes", default=MODES)
    ap.add_argument("--batch", default="1")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    device = resolve_device(args.device)
    modes = [(name, resolve(parse_mode(name), device)) for name in args.modes.split(",")]
    clip = make_video(Path(tempfile.mkdtemp()) / "modes.mp4", SynthSpec(width=640, height=360, seconds=args.seconds))
    batches = tuple(int(b) for b in args.batch.split(","))
    spec = BenchSpec(clip, "footsteps on gravel", preset="mid", device=str(device), steps=args.steps,
                     repeat=args.repeat, batches=batches)
    info = machine(str(device))
    print(f"mid preset, {device}, {args.seconds:g} s 640x360 clip, {args.steps} steps, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {info['cpu']} ({' '.join(info['cpu_flags']) or 'no bf16/int8 flags'})")
    write = None
    if args.json:
        import json

        def write(results):  # after every mode, like the command
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(to_json(spec, results), indent=2) + "\n")

    with BenchProgress(1 + len(modes) * (1 + len(batches) * (1 + args.repeat))) as progress:
        results = bench(spec, modes, phase=progress.phase, listener=progress, on_result=write)
    render(results, spec)
    print(markdown(results))
    return 0


def markdown(results) -> str:
    """The table RESULTS.md records: stage medians, total with its range, speed-up, memory, drift."""
    lines = ["| mode | decode+encoders s | denoise s | vae s | total s (range) | speed-up | peak RSS GB "
             "(growth) | clips/min | latents rel L2 | audio rel L2 | log-mel dB |", "|---" * 11 + "|"]
    for r in results:
        if r.error:
            lines.append(f"| {r.spec} | failed: {r.error} |" + " |" * 9)
            continue
        prep = sum(r.stages[s].median for s in ("decode", "visual_encode", "text_encode", "sync_encode"))
        d = r.drift
        den, vae = r.stages["denoise"].median, r.stages["vae_decode"].median
        total = f"{r.total.median:.2f} ({min(r.total.values):.2f}-{max(r.total.values):.2f})"
        lines.append(f"| {r.spec} | {prep:.2f} | {den:.2f} | {vae:.2f} | {total} | "
                     f"{r.speedup:.2f}x | {r.peak_bytes / 2**30:.2f} ({r.growth_bytes / 2**30:.2f}) | "
                     f"{r.throughput[1].median:.1f} | {d['latents_rel_l2']:.1e} | {d['audio_rel_l2']:.1e} | "
                     f"{d['log_mel_db']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
