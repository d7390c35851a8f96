"""`foleyscope generate`: video (+ text) -> 48 kHz Foley audio, optionally muxed into the video."""

from __future__ import annotations

import argparse
import csv
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from foleyscope.errors import FoleyscopeError
from foleyscope.media.atomic import check_output_path
from foleyscope.media.audio import VIDEO_SUFFIXES as MUX_SUFFIXES

BATCH_INPUTS = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"}  # what --batch FOLDER picks up
AUDIO_OUTPUTS = {".wav", ".flac"}  # what -o takes (lossless: the track is the product)


@dataclass
class Job:
    video: Path
    prompt: str
    negative_prompt: str | None
    out: Path
    mux: Path | None


def add_engine_args(p: argparse.ArgumentParser) -> None:
    """The engine options shared by generate and doctor."""
    p.add_argument("--prompt", default=None, help="what the sound should be (text condition)")
    p.add_argument("--negative-prompt", default=None, help='CFG negative prompt (default "noisy, harsh")')
    p.add_argument("--preset", choices=("tiny", "xl", "xxl"), default=None,
                   help="model size (default: xxl with --weights, tiny without; tiny + --weights loads "
                        "foleyscope_tiny.pth in the official layout)")
    p.add_argument("--weights", type=Path, default=None, help="folder with the official checkpoint files")
    p.add_argument("--steps", type=int, default=50, help="denoising steps (default 50)")
    p.add_argument("--cfg", type=float, default=4.5, help="classifier-free guidance scale (default 4.5)")
    p.add_argument("--solver", choices=("euler", "heun"), default="euler")
    p.add_argument("--seed", type=int, default=None, help="seed for the initial noise")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--dtype", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                   help="model dtype (auto: bf16 on CUDA; on CPU whichever a quick probe measures faster)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the denoiser (the first video pays tens of seconds; for batches/GPUs)")


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("generate", help="generate Foley audio for a video", description=__doc__)
    p.add_argument("video", nargs="?", type=Path, help="input video")
    add_engine_args(p)
    p.add_argument("-o", "--output", type=Path, default=None, help="output audio, .wav or .flac")
    p.add_argument("--mux", type=Path, default=None,
                   help="also write the video with the generated audio (with --batch: a folder for them)")
    p.add_argument("--batch", type=Path, default=None,
                   help="a folder of videos, or a CSV with columns video,prompt[,negative_prompt]")
    p.add_argument("--out-dir", type=Path, default=None, help="output folder for --batch")
    return p


def check_engine_args(args: argparse.Namespace) -> str:
    if args.steps < 1:
        raise FoleyscopeError("--steps must be at least 1")
    if not math.isfinite(args.cfg) or args.cfg < 1.0:
        raise FoleyscopeError("--cfg must be at least 1.0 (1.0 turns guidance off)")
    if args.weights is not None and not args.weights.is_dir():
        raise FoleyscopeError(f"--weights {args.weights}: not a folder")
    preset = args.preset or ("xxl" if args.weights else "tiny")
    if preset != "tiny" and args.weights is None:
        raise FoleyscopeError(f"--preset {preset} needs --weights DIR (the official checkpoint files)")
    return preset


def _jobs(args: argparse.Namespace) -> list[Job]:
    if args.batch is None:
        if args.video is None:
            raise FoleyscopeError("give a VIDEO, or --batch FOLDER|LIST.csv")
        if args.prompt is None:
            raise FoleyscopeError("--prompt is required (use --prompt '' for video-only conditioning)")
        out = args.output or Path("out") / f"{args.video.stem}.wav"
        if out.suffix.lower() not in AUDIO_OUTPUTS:
            raise FoleyscopeError(f"-o {out}: the audio output must end in .wav or .flac")
        if args.mux is not None and args.mux.suffix.lower() not in MUX_SUFFIXES:
            raise FoleyscopeError(f"--mux {args.mux}: must end in {', '.join(MUX_SUFFIXES)}")
        return _checked([Job(args.video, args.prompt, args.negative_prompt, out, args.mux)])
    if args.video is not None:
        raise FoleyscopeError("give either a VIDEO or --batch, not both")
    out_dir = args.out_dir or Path("out")
    if args.batch.is_dir():
        videos = sorted(p for p in args.batch.iterdir() if p.suffix.lower() in BATCH_INPUTS)
        if not videos:
            raise FoleyscopeError(f"--batch {args.batch}: no video files in this folder")
        if args.prompt is None:
            raise FoleyscopeError("--batch FOLDER needs --prompt (or use a CSV with a prompt column)")
        rows = [(v, args.prompt, args.negative_prompt) for v in videos]
    elif args.batch.suffix.lower() == ".csv" and args.batch.is_file():
        rows = _read_csv(args.batch, args.negative_prompt)
    else:
        raise FoleyscopeError(f"--batch {args.batch}: expected a folder or a .csv file")
    if args.mux is not None and args.mux.suffix:
        raise FoleyscopeError(f"--mux {args.mux}: with --batch, give a folder for the muxed videos")
    return _checked([
        Job(v, pr, neg, out_dir / f"{v.stem}.wav", args.mux / f"{v.stem}.mp4" if args.mux else None)
        for v, pr, neg in rows
    ])


def _checked(jobs: list[Job]) -> list[Job]:
    """Every output writable, and no two jobs writing the same file, before any model is loaded."""
    seen: dict[Path, Path] = {}
    for job in jobs:
        for out in filter(None, (job.out, job.mux)):
            check_output_path(out)
            if out.resolve() in seen:
                raise FoleyscopeError(f"{seen[out.resolve()]} and {job.video} would both write {out}; "
                                      "rename one of the videos")
            seen[out.resolve()] = job.video
    return jobs


def _read_csv(path: Path, default_negative: str | None) -> list[tuple[Path, str, str | None]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"video", "prompt"} <= set(reader.fieldnames):
            raise FoleyscopeError(f"{path}: the CSV needs a header with columns video,prompt")
        rows = []
        for n, row in enumerate(reader, start=2):
            video = Path(row["video"] or "")
            if not video.is_absolute() and (path.parent / video).exists():
                video = path.parent / video  # relative to the CSV first, then to the current folder
            if not row["video"]:
                raise FoleyscopeError(f"{path}:{n}: empty video column")
            rows.append((video, row["prompt"] or "", row.get("negative_prompt") or default_negative))
    if not rows:
        raise FoleyscopeError(f"{path}: no rows")
    return rows


def run(args: argparse.Namespace) -> int:
    preset = check_engine_args(args)
    jobs = _jobs(args)
    from rich.console import Console

    from foleyscope.doctor.trace import stage
    from foleyscope.media.audio import mux, write_audio
    from foleyscope.pipeline import DEFAULT_NEGATIVE_PROMPT, FoleyPipeline
    from foleyscope.progress import StageProgress
    from foleyscope.stages import Stage

    console = Console(stderr=True)
    if args.weights is None:
        console.print("[yellow]No --weights given: using the tiny preset with seeded random weights. "
                      "The sound is untrained noise until real weights are given.[/]")
    pipe = FoleyPipeline.load(preset, args.weights, args.device, args.dtype, seed=0, compile=args.compile)
    console.print(f"model: {preset} on {pipe.device} ({str(pipe.dtype).removeprefix('torch.')})")
    if pipe.device.type == "cpu" and args.dtype == "fp16":
        console.print("[yellow]fp16 on a CPU is emulated and very slow; --dtype auto picks fp32 or bf16.[/]")
    failed = 0
    for i, job in enumerate(jobs):
        label = f"[{i + 1}/{len(jobs)}] " if len(jobs) > 1 else ""
        try:
            with StageProgress(console, label) as progress:
                negative = DEFAULT_NEGATIVE_PROMPT if job.negative_prompt is None else job.negative_prompt
                result = pipe(job.video, job.prompt, negative_prompt=negative,
                              steps=args.steps, cfg=args.cfg, solver=args.solver, seed=args.seed, progress=progress)
                with stage(Stage.POSTPROCESS):
                    progress(Stage.POSTPROCESS.value, 0, 1)
                    write_audio(job.out, result.audio, result.sample_rate)
                    if job.mux:
                        mux(job.video, result.audio, result.sample_rate, job.mux)
                    progress(Stage.POSTPROCESS.value, 1, 1)
        except FoleyscopeError as exc:
            if len(jobs) == 1:
                raise
            failed += 1
            where = "" if str(exc).startswith(str(job.video)) else f"{job.video}: "
            print(f"foleyscope: error: {where}{exc}", file=sys.stderr)
            continue
        muxed = f" and {job.mux}" if job.mux else ""
        console.print(f"{label}wrote {job.out}{muxed} ({result.duration_s:.2f} s at {result.sample_rate} Hz, "
                      f"{len(result.windows)} window{'s' if len(result.windows) > 1 else ''})")
    if failed:
        raise FoleyscopeError(f"{failed} of {len(jobs)} videos failed (see above)")
    return 0
