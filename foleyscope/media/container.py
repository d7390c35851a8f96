"""Open a media file for reading, turning every PyAV/FFmpeg failure into one clear MediaError."""

from __future__ import annotations

import os
from pathlib import Path

import av

from foleyscope.errors import MediaError


def open_input(path: str | os.PathLike[str], *, need_video: bool = True) -> av.container.InputContainer:
    """Open `path`; raise MediaError if it is missing, empty, not media, or (by default) has no video."""
    p = Path(path)
    if not p.exists():
        raise MediaError(f"{p}: no such file")
    if p.is_dir():
        raise MediaError(f"{p}: is a directory, not a media file")
    if p.stat().st_size == 0:
        raise MediaError(f"{p}: file is empty")
    try:
        container = av.open(str(p), "r")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise MediaError(f"{p}: not a readable media file ({_reason(exc)})") from None
    if need_video and not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["no streams"]
        container.close()
        raise MediaError(f"{p}: has no video stream (found: {', '.join(kinds)})")
    return container


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.splitlines()[0].strip() if text else type(exc).__name__
