"""`foleyscope probe`: what is in a video file (headers only, so it is fast on large files)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from foleyscope.media.probe import MediaInfo, probe


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("probe", help="describe a video file (container, codec, size, rate, audio)",
                       description=__doc__)
    p.add_argument("video", type=Path, help="input video")
    p.add_argument("--json", action="store_true", help="print the facts as JSON (keys: docs/probe.md)")
    return p


def run(args: argparse.Namespace) -> int:
    info = probe(args.video)
    if args.json:
        print(json.dumps(info.to_dict(), indent=2))
    else:
        Console().print(table(info, str(args.video)))
    return 0


def table(info: MediaInfo, title: str) -> Table:
    """The facts as a two-column table, in words and units a person reads."""
    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column("field", style="bold")
    t.add_column("value")
    size = f"{info.width} x {info.height}"
    if (info.display_width, info.display_height) != (info.width, info.height):
        size += f" (shown as {info.display_width} x {info.display_height})"
    rows = [
        ("container", info.container),
        ("duration", _duration(info)),
        ("video codec", info.video_codec),
        ("size", size),
        ("rotation", f"{info.rotation} degrees" if info.rotation else "none"),
        ("frame rate", f"{info.fps:.3f} fps, {'variable' if info.fps_is_variable else 'constant'}"),
        ("frames", f"{info.frame_count}" + ("" if info.frame_count_exact else " (estimate)")),
        ("bit rate", f"{info.bit_rate / 1000:.0f} kb/s" if info.bit_rate else "unknown"),
        ("pixel format", info.pix_fmt),
        ("file size", _bytes(info.size_bytes)),
    ]
    for i, a in enumerate(info.audio_streams):
        rows.append((f"audio #{i}", f"{a['codec']}, {a['sample_rate']} Hz, {a['channels']} ch"))
    if not info.audio_streams:
        rows.append(("audio", "none"))
    for name, value in rows:
        t.add_row(name, value)
    return t


def _duration(info: MediaInfo) -> str:
    """The video's span; the container's clock and length too when they say something else."""
    text = f"{info.duration_s:.3f} s"
    notes = [f"starts at {info.start_s:.3f} s"] if abs(info.start_s) >= 0.0005 else []
    if info.container_duration_s is not None and abs(info.container_duration_s - info.duration_s) >= 0.0005:
        notes.append(f"container says {info.container_duration_s:.3f} s")
    return text + (f" of video ({'; '.join(notes)})" if notes else "")


def _bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
