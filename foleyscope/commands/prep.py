"""`foleyscope prep`: normalise a video for fast Foley inference (upright H.264 MP4, fixed height,
constant frame rate, trimmed, AAC audio), the input step of the slowness diagnosis."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from foleyscope.commands.probe import _bytes
from foleyscope.media.prep import X264_PRESETS, prep
from foleyscope.progress import is_quiet


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("prep", help="normalise a video: 720p, 25 fps, H.264 MP4, at most 15 s",
                       description=__doc__)
    p.add_argument("video", type=Path, help="input video")
    p.add_argument("-o", "--output", type=Path, required=True, help="output file, must end in .mp4")
    p.add_argument("--height", type=int, default=720, help="output height, never upscaled (default 720)")
    p.add_argument("--fps", type=float, default=25.0, help="constant output frame rate (default 25)")
    p.add_argument("--max-seconds", type=float, default=15.0, help="trim to this length (default 15)")
    p.add_argument("--crf", type=int, default=23, help="x264 quality, 0-51, lower is better (default 23)")
    p.add_argument("--preset", choices=X264_PRESETS, default="fast", help="x264 speed preset (default fast)")
    return p


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    start = time.perf_counter()
    options = dict(height=args.height, fps=args.fps, max_seconds=args.max_seconds, crf=args.crf,
                   preset=args.preset)
    if console.is_terminal and not is_quiet():
        bar = Progress(TextColumn("prep"), BarColumn(), TextColumn("{task.fields[at]}"), TimeElapsedColumn(),
                       TimeRemainingColumn(), console=console, transient=True)
        task = bar.add_task("prep", total=None, at="")

        def progress(done: float, total: float) -> None:
            bar.update(task, completed=done, total=total, at=f"{done:.1f}/{total:.1f} s")

        with bar:
            info = prep(args.video, args.output, progress=progress, **options)
    else:  # a pipe, a log or --quiet gets only the summary line (or the one error line)
        info = prep(args.video, args.output, **options)
    audio = f" + {info.audio_streams[0]['codec']}" if info.audio_streams else ", no audio"
    print(f"wrote {args.output}: {info.width}x{info.height} {info.fps:g} fps {info.video_codec}{audio}, "
          f"{info.duration_s:.2f} s, {info.frame_count} frames, {_bytes(info.size_bytes)} "
          f"in {time.perf_counter() - start:.1f} s")
    return 0
