"""`foleyscope generate`: video (+ text) -> 48 kHz Foley audio, optionally muxed into the video.

Every input and output is checked before any model loads, and the heavy modules (torch,
transformers) are imported only after those checks, so a mistake is answered at once."""

from __future__ import annotations

import argparse
import csv
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from foleyscope.engine.jobs import Job
from foleyscope.engine.modes import add_mode_args, mode_from_args
from foleyscope.errors import FoleyscopeError
from foleyscope.media.atomic import check_output_path
from foleyscope.progress import notice

AUDIO_OUTPUTS = {".wav", ".flac"}  # what -o takes (lossless: the track is the product)
MAX_STEPS = 1000  # the default is 50; far more runs for hours and changes nothing audible
MAX_SEED = 2**63 - 1  # the noise generator takes a signed 64-bit seed


@dataclass
class Plan:
    """The jobs to run; the listed files that are not readable videos (`skipped`), and the videos that
    cannot be done as asked (`refused`: an unmuxable codec), both found before any model loaded."""

    jobs: list[Job]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.jobs) + len(self.refused)


def add_engine_args(p: argparse.ArgumentParser) -> None:
    """The engine options shared by generate and doctor."""
    p.add_argument("--prompt", default=None, help="what the sound should be (text condition)")
    p.add_argument("--negative-prompt", default=None, help='CFG negative prompt (default "noisy, harsh")')
    p.add_argument("--preset", choices=("tiny", "mid", "xl", "xxl"), default=None,
                   help="model size (default: xxl with --weights, tiny without; tiny + --weights loads "
                        "foleyscope_tiny.pth in the official layout; mid: random weights only)")
    p.add_argument("--weights", type=Path, default=None, help="folder with the official checkpoint files")
    p.add_argument("--steps", type=int, default=50, help=f"denoising steps, 1 to {MAX_STEPS} (default 50)")
    p.add_argument("--cfg", type=float, default=4.5, help="classifier-free guidance scale (default 4.5)")
    p.add_argument("--solver", choices=("euler", "heun"), default="euler")
    p.add_argument("--seed", type=int, default=None, help="seed for the initial noise, 0 to 2**63-1")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    add_mode_args(p)  # --dtype, --attention, --encoders, --compile: one flag per field of engine.modes.Mode
    p.add_argument("--frames", choices=("official", "exact"), default="official",
                   help="which frames the models see: the official pipeline's picks (what the released "
                        "checkpoints were made with) or those exactly at each sample time (docs/frames.md)")


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("generate", help="generate Foley audio for a video", description=__doc__)
    p.add_argument("video", nargs="?", type=Path, help="input video")
    add_engine_args(p)
    p.add_argument("-o", "--output", type=Path, default=None, help="output audio, .wav or .flac")
    p.add_argument("--mux", type=Path, default=None,
                   help="also write the video with the generated audio, .mp4/.mov/.m4v/.mkv/.webm "
                        "(with --batch: a folder for them)")
    p.add_argument("--batch", type=Path, default=None,
                   help="a folder (every file that is a video; others are listed as skipped), or a CSV "
                        "with columns video,prompt[,negative_prompt]")
    p.add_argument("--out-dir", type=Path, default=None, help="output folder for --batch")
    return p


def check_engine_args(args: argparse.Namespace) -> str:
    """The engine options, and the --weights files (headers only), before anything is loaded."""
    if not 1 <= args.steps <= MAX_STEPS:
        raise FoleyscopeError(f"--steps must be 1 to {MAX_STEPS}, got {args.steps}")
    if not math.isfinite(args.cfg) or args.cfg < 1.0:
        raise FoleyscopeError("--cfg must be at least 1.0 (1.0 turns guidance off)")
    if args.seed is not None and not 0 <= args.seed <= MAX_SEED:
        raise FoleyscopeError(f"--seed must be 0 to 2**63-1 ({MAX_SEED}), got {args.seed}")
    if args.weights is not None and not args.weights.is_dir():
        raise FoleyscopeError(f"--weights {args.weights}: not a folder")
    preset = args.preset or ("xxl" if args.weights else "tiny")
    if preset == "mid" and args.weights is not None:
        raise FoleyscopeError("--preset mid has no checkpoint (a benchmark size, seeded random weights): "
                              "drop --weights")
    if preset not in ("tiny", "mid") and args.weights is None:
        raise FoleyscopeError(f"--preset {preset} needs --weights DIR (the official checkpoint files)")
    if args.weights is not None:
        from foleyscope.engine.weight_paths import check_weight_files

        check_weight_files(args.weights, preset)
    _check_mode_on_device(args)
    return preset


def _check_mode_on_device(args: argparse.Namespace) -> None:
    """A mode the device cannot run (fp16 or a CUDA-only switch on a CPU) refused before any notice or
    load; torch is imported only when such a mode is asked for."""
    from dataclasses import replace

    from foleyscope.engine.modes import mode_from_args, resolve

    mode = mode_from_args(args)
    if not (mode.dtype == "fp16" or mode.cudagraphs or mode.quant == "fp8" or mode.offload != "none"
            or mode.attention == "efficient"):
        return
    from foleyscope.engine.device import resolve_device

    resolve(replace(mode, dtype="fp32") if mode.dtype == "auto" else mode, resolve_device(args.device))


def job_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The per-video engine options of a Job, from the parsed arguments."""
    return {"steps": args.steps, "cfg": args.cfg, "solver": args.solver, "seed": args.seed}


def _jobs(args: argparse.Namespace) -> Plan:
    if args.batch is None:
        return Plan(_single_job(args))
    if args.video is not None:
        raise FoleyscopeError("give either a VIDEO or --batch, not both")
    if args.mux is not None and args.mux.suffix:
        raise FoleyscopeError(f"--mux {args.mux}: with --batch, give a folder for the muxed videos")
    if args.batch.is_dir():
        if args.prompt is None:
            raise FoleyscopeError("--batch FOLDER needs --prompt (or use a CSV with a prompt column)")
        rows = [(v, args.prompt, args.negative_prompt) for v in _folder_files(args.batch)]
    elif args.batch.suffix.lower() == ".csv" and args.batch.is_file():
        rows = _read_csv(args.batch, args.negative_prompt)
    else:
        raise FoleyscopeError(f"--batch {args.batch}: expected a folder or a .csv file")
    plan = _probed(rows, args.out_dir or Path("out"), args.mux, job_settings(args))
    _report_refused(plan, args.batch, folder=args.batch.is_dir(), listed=len(rows))
    _checked(plan.jobs)
    return plan


def _single_job(args: argparse.Namespace) -> list[Job]:
    if args.video is None:
        raise FoleyscopeError("give a VIDEO, or --batch FOLDER|LIST.csv")
    if args.prompt is None:
        raise FoleyscopeError("--prompt is required (use --prompt '' for video-only conditioning)")
    out = args.output or Path("out") / f"{args.video.stem}.wav"
    if out.suffix.lower() not in AUDIO_OUTPUTS:
        raise FoleyscopeError(f"-o {out}: the audio output must end in .wav or .flac")
    job = Job(args.video, args.prompt, args.negative_prompt, out=out, mux=args.mux, **job_settings(args))
    _checked([job])
    from foleyscope.media.probe import probe

    probe(job.video)
    if job.mux is not None:
        from foleyscope.media.audio import check_mux_target

        try:
            check_mux_target(job.video, job.mux)
        except FoleyscopeError as exc:
            raise FoleyscopeError(f"--mux {exc}") from None
    return [job]


def _folder_files(folder: Path) -> list[Path]:
    """Every visible file in the folder: what is a video is decided by probing, not by its suffix."""
    files = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_file())
    if not files:
        raise FoleyscopeError(f"--batch {folder}: no files in this folder")
    return files


def _probed(rows: list[tuple[Path, str, str | None]], out_dir: Path, mux_dir: Path | None,
            settings: dict[str, Any]) -> Plan:
    """Probe every listed video (and its mux target) now, so a bad one costs no model load."""
    from foleyscope.media.probe import probe

    plan = Plan([])
    for video, prompt, negative in rows:
        try:
            probe(video)
        except FoleyscopeError as exc:
            plan.skipped.append((video, str(exc)))
            continue
        try:
            mux = _batch_mux_path(video, mux_dir) if mux_dir is not None else None
        except FoleyscopeError as exc:
            plan.refused.append(f"{video} -> {exc}")
            continue
        plan.jobs.append(Job(video, prompt, negative, out=out_dir / f"{video.stem}.wav", mux=mux, **settings))
    return plan


def _batch_mux_path(video: Path, folder: Path) -> Path:
    """The muxed video's name: .mp4, else the input's own container, else .mkv (which holds most codecs)."""
    from foleyscope.media.audio import check_mux_target

    first_error: FoleyscopeError | None = None
    for suffix in dict.fromkeys((".mp4", video.suffix.lower(), ".mkv")):
        target = folder / f"{video.stem}{suffix}"
        try:
            check_mux_target(video, target)
            return target
        except FoleyscopeError as exc:
            first_error = first_error or exc
    assert first_error is not None
    raise first_error


def _report_refused(plan: Plan, batch: Path, folder: bool, listed: int) -> None:
    """A folder's files that are not readable videos are listed as skipped (a notice); a CSV's rows were
    asked for, so there they are errors, as is a video whose codec no mux container holds."""
    if folder and plan.skipped:
        notice(f"skipping {len(plan.skipped)} of {listed} files in {batch}:")
        for path, why in plan.skipped:
            notice(f"  {path.name}: {why.removeprefix(f'{path}: ')}")
    elif plan.skipped:
        plan.refused[:0] = [why for _, why in plan.skipped]
    if listed == 1 and plan.refused:
        raise FoleyscopeError(plan.refused[0])
    for why in plan.refused:
        print(f"foleyscope: error: {why}", file=sys.stderr)
    if not plan.jobs:
        what = "no file in this folder can be used" if folder else f"none of its {listed} videos can be used"
        raise FoleyscopeError(f"--batch {batch}: {what}" + (" (see above)" if plan.refused else ""))


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
    """utf-8-sig: spreadsheets save UTF-8 CSV with a byte-order mark, which would hide the `video` column."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            return _csv_rows(path, csv.DictReader(f), default_negative)
    except UnicodeDecodeError:
        raise FoleyscopeError(f"{path}: not UTF-8 text; save the CSV as UTF-8") from None
    except csv.Error as exc:
        raise FoleyscopeError(f"{path}: not a readable CSV ({exc})") from None


def _csv_rows(path: Path, reader: csv.DictReader, default_negative: str | None) -> list[tuple[Path, str, str | None]]:
    if not reader.fieldnames or not {"video", "prompt"} <= {name.strip() for name in reader.fieldnames}:
        raise FoleyscopeError(f"{path}: the CSV needs a header with columns video,prompt")
    reader.fieldnames = [name.strip() for name in reader.fieldnames]
    rows = []
    for n, row in enumerate(reader, start=2):
        if not row["video"]:
            raise FoleyscopeError(f"{path}:{n}: empty video column")
        video = Path(row["video"])
        if not video.is_absolute() and (path.parent / video).exists():
            video = path.parent / video  # relative to the CSV first, then to the current folder
        rows.append((video, row["prompt"] or "", row.get("negative_prompt") or default_negative))
    if not rows:
        raise FoleyscopeError(f"{path}: no rows")
    return rows


def run(args: argparse.Namespace) -> int:
    preset = check_engine_args(args)
    mode = mode_from_args(args)
    plan = _jobs(args)
    from foleyscope.engine.pipeline import FoleyPipeline

    if args.weights is None:
        notice("No --weights: tiny preset with random weights, so the sound is untrained noise.")
    pipe = FoleyPipeline.load(preset, args.weights, args.device, mode, frames=args.frames)
    notice(f"model: {preset} on {pipe.device} ({pipe.mode.describe()})")
    failed = len(plan.refused)
    for i, job in enumerate(plan.jobs):
        label = f"[{i + 1}/{len(plan.jobs)}] " if len(plan.jobs) > 1 else ""
        try:
            _generate_one(pipe, job, label)
        except FoleyscopeError as exc:
            if plan.total == 1:
                raise
            failed += 1
            where = "" if str(exc).startswith(str(job.video)) else f"{job.video}: "
            print(f"foleyscope: error: {where}{exc}", file=sys.stderr)
    if failed:
        raise FoleyscopeError(f"{failed} of {plan.total} videos failed (see above)")
    return 0


def _generate_one(pipe, job: Job, label: str) -> None:
    """One video through the loaded pipeline; progress is cleared before any error line is printed."""
    from foleyscope.engine.jobs import run_job
    from foleyscope.progress import StageProgress

    with StageProgress(label=label) as progress:
        done = run_job(pipe, job, progress)
    result = done.result
    muxed = f" and {job.mux}" if job.mux else ""
    windows = len(result.windows)
    notice(f"{label}wrote {job.out}{muxed} ({result.duration_s:.2f} s at {result.sample_rate} Hz, "
           f"{windows} window{'s' if windows > 1 else ''})")
