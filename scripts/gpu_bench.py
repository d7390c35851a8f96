"""The bench part of the GPU check (issue 11, item 5): `foleyscope bench` on a generated 10 s 1280x720
25 fps clip for `xxl` with random weights at 50 steps, for fp32 (TF32), bf16, bf16+cache, fp8,
bf16+cudagraphs and bf16+compile (cheapest first: a run cut at its time budget keeps every mode
finished before it), then `plan`'s estimate for each mode that ran against its measured peak (CUDA
max allocated). Writes gpu_bench.json (bench's own JSON), gpu_bench.log and gpu_plan.json under --out.

--dry-run (or no CUDA): the tiny preset, 2 steps, the CPU modes, a 2 s clip; the plan comparison is
recorded, not judged (RSS growth in a process whose allocator keeps freed memory). Exit status: 0 when
bench ran every mode without error and, on CUDA, every estimate is within 15% of its measured peak."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

GPU_MODES = "fp32,bf16,bf16+cache,fp8,bf16+cudagraphs,bf16+compile"
CPU_MODES = "fp32,bf16,bf16+cache,int8wo"
TOLERANCE = 0.15


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-results")))
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--budget-s", type=float, default=270.0, help="wall time for the bench itself")
    args = ap.parse_args()
    import torch

    cuda = torch.cuda.is_available() and not args.dry_run
    args.out.mkdir(parents=True, exist_ok=True)
    clip = make_clip(cuda)
    bench_json = args.out / "gpu_bench.json"
    finished = run_bench(clip, bench_json, args.out / "gpu_bench.log", cuda, args.budget_s)
    if not bench_json.exists():
        print("gpu_bench: bench wrote no JSON (see gpu_bench.log)")
        return 1
    result = json.loads(bench_json.read_text())
    comparison = compare_plan(result, cuda)
    (args.out / "gpu_plan.json").write_text(json.dumps(comparison, indent=2) + "\n")
    for spec, row in comparison["modes"].items():
        print(f"plan vs measured  {spec:24s} estimate {row['estimate_bytes'] / 2**30:7.2f} GiB  measured "
              f"{row['measured_bytes'] / 2**30:7.2f} GiB  ratio {row['ratio']:.3f}")
    wanted = (GPU_MODES if cuda else CPU_MODES).count(",") + 1
    ran = [s for s, r in result["modes"].items() if not r["error"]]
    ok = finished and len(ran) == wanted and (comparison["within_tolerance"] or not cuda)
    print(f"gpu_bench: {len(ran)}/{wanted} modes ran, plan within {TOLERANCE:.0%}: "
          f"{comparison['within_tolerance']}{'' if cuda else ' (not judged on the CPU)'} -> {'ok' if ok else 'FAILED'}")
    return 0 if ok else 1


def make_clip(cuda: bool) -> Path:
    """The issue's 10 s 1280x720 25 fps H.264 clip on a GPU; 2 s at 320x180 for the dry run."""
    from foleyscope.media.synth import SynthSpec, make_video

    spec = SynthSpec(width=1280, height=720, fps=25, seconds=10.0) if cuda else SynthSpec(seconds=2.0)
    start = time.perf_counter()
    path = make_video(Path(os.environ.get("TMPDIR", "/tmp")) / f"gpu_bench_{spec.width}x{spec.height}.mp4", spec)
    print(f"gpu_bench: clip {path} ({spec.width}x{spec.height}, {spec.seconds:g} s) in "
          f"{time.perf_counter() - start:.1f} s")
    return path


def run_bench(clip: Path, json_path: Path, log_path: Path, cuda: bool, budget_s: float) -> bool:
    """`foleyscope bench` in its own process (its JSON is rewritten after every mode, so a run stopped
    at the budget keeps the modes it finished); True when it ended by itself with status 0."""
    if cuda:
        extra = ["--preset", "xxl", "--random-weights", "--steps", "50", "--repeat", "2", "--modes", GPU_MODES,
                 "--device", "cuda"]
    else:
        extra = ["--preset", "tiny", "--steps", "2", "--repeat", "1", "--modes", CPU_MODES, "--device", "cpu"]
    cmd = [sys.executable, "-m", "foleyscope", "bench", str(clip), "--prompt", "footsteps on gravel",
           "--json", str(json_path), *extra]
    print(f"gpu_bench: {' '.join(cmd)} (budget {budget_s:.0f} s)", flush=True)
    start = time.perf_counter()
    # on the CPU, glibc returns freed blocks at once, so RSS growth is the run's need (engine/memory.py)
    env = os.environ if cuda else {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    with log_path.open("w") as log:
        try:
            done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=budget_s, cwd=ROOT, env=env)
            rc = done.returncode
        except subprocess.TimeoutExpired:
            rc = None
    took = time.perf_counter() - start
    print(log_path.read_text()[-6000:], end="")
    print(f"gpu_bench: bench {'stopped at its budget' if rc is None else f'exit {rc}'} after {took:.0f} s")
    return rc == 0


def compare_plan(result: dict[str, Any], cuda: bool) -> dict[str, Any]:
    """engine.memory's estimate for each mode that ran, against its measured peak: CUDA max allocated
    on a GPU, the RSS growth on a CPU."""
    from foleyscope.engine.memory import estimate
    from foleyscope.engine.modes import parse_mode
    from foleyscope.engine.presets import get_preset
    from foleyscope.media.probe import probe

    preset = get_preset(result["preset"])
    seconds = probe(result["video"]).duration_s
    device = "cuda" if cuda else "cpu"
    rows = {}
    for spec, row in result["modes"].items():
        if row["error"]:
            continue
        est = estimate(preset, parse_mode(spec), seconds, device, stand_in_encoders=True, cfg=result["cfg"])
        measured = row["peak_bytes"] if cuda else row["growth_bytes"]
        rows[spec] = {"estimate_bytes": est.peak, "peak_stage": est.peak_stage, "measured_bytes": measured,
                      "memory_kind": row["memory_kind"], "ratio": est.peak / measured if measured else None}
    within = all(r["ratio"] is not None and abs(r["ratio"] - 1) <= TOLERANCE for r in rows.values())
    return {"preset": result["preset"], "device": device, "seconds": seconds, "tolerance": TOLERANCE,
            "within_tolerance": within, "modes": rows}


if __name__ == "__main__":
    sys.exit(main())
