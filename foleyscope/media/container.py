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
        raise MediaError(f"{p}: not a readable media file ({_hint(p) or _reason(exc)})") from None
    if need_video and not any(not is_cover_art(s) for s in container.streams.video):
        kinds = sorted({"cover picture" if is_cover_art(s) else s.type for s in container.streams})
        container.close()
        raise MediaError(f"{p}: has no video stream (found: {', '.join(kinds or ['no streams'])})")
    return container


def is_cover_art(stream: av.stream.Stream) -> bool:
    """A still picture attached to an audio file (album art) shows up as a one-frame video stream."""
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def _hint(p: Path) -> str | None:
    """Name the usual cause when FFmpeg's own message would not: an MP4 cut before its index."""
    size = p.stat().st_size
    with open(p, "rb") as f:
        if f.read(8)[4:8] != b"ftyp":
            return None
        pos = 0
        while pos + 8 <= size:  # walk the top-level boxes by their headers only
            f.seek(pos)
            head = f.read(16)
            box_size, kind = int.from_bytes(head[:4], "big"), head[4:8]
            if kind == b"moov":
                return None
            if box_size == 1 and len(head) == 16:
                box_size = int.from_bytes(head[8:16], "big")
            if box_size < 8:
                break
            pos += box_size
    return "an MP4/MOV whose index (moov box) is missing: the file is truncated or was never finished"


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.splitlines()[0].strip() if text else type(exc).__name__


def video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    """The first real video stream (cover pictures skipped); open_input guarantees there is one."""
    for stream in container.streams.video:
        if not is_cover_art(stream):
            return stream
    raise MediaError(f"{container.name}: has no video stream")
