"""What is in a video file, read from headers so it stays fast on multi-gigabyte files.

Besides the headers, `probe` demuxes (without decoding) the packets of the first few seconds to tell
constant from variable frame rate, decodes a single frame (rotation side data is attached to decoded
frames, and it proves the codec actually decodes), and demuxes the last few seconds to catch files
cut short of what their header promises. The work does not grow with the file's length.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from foleyscope.errors import MediaError
from foleyscope.media.container import _reason, open_input, video_stream

MAX_DIMENSION = 16384  # larger than any real camera; beyond it a header is broken or hostile
HEAD_SECONDS = 5.0  # packet timestamps read for the variable-frame-rate check...
HEAD_MAX_PACKETS = 1000  # ...or this many packets...
HEAD_MAX_BYTES = 48 << 20  # ...or this much data (lossless 4K would be seconds of reading), whichever first
TAIL_SECONDS = 2.0  # how far before the promised end the truncation check starts reading
TRUNCATION_SLACK_S = 1.0  # shortfall (or 5% of the duration, if larger) that counts as truncated


@dataclass
class MediaInfo:
    """The facts about a video that the engine and the doctor act on. Keys documented in docs/probe.md."""

    container: str
    duration_s: float
    video_codec: str
    width: int  # stored (coded) size
    height: int
    display_width: int  # after applying rotation
    display_height: int
    fps: float  # average
    fps_is_variable: bool
    frame_count: int
    frame_count_exact: bool  # True: from the header's frame count; False: duration x fps estimate
    bit_rate: int | None  # bits/s, whole file
    pix_fmt: str
    rotation: int  # clockwise degrees a player turns the stored picture: 0, 90, 180 or 270
    audio_streams: list[dict[str, Any]] = field(default_factory=list)  # codec, sample_rate, channels
    size_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def probe(path: str | os.PathLike[str]) -> MediaInfo:
    """Describe `path`; raise MediaError if it is not a complete, decodable video."""
    p = Path(path)
    container = open_input(p)
    try:
        return _probe(p, container)
    except av.error.FFmpegError as exc:
        raise MediaError(f"{p}: unreadable media ({_reason(exc)})") from None
    finally:
        container.close()


def _probe(p: Path, container: av.container.InputContainer) -> MediaInfo:
    stream = video_stream(container)
    cc = stream.codec_context
    if cc is None:
        raise MediaError(f"{p}: the video codec has no decoder in this FFmpeg build")
    width, height = cc.width, cc.height
    if not (0 < width <= MAX_DIMENSION and 0 < height <= MAX_DIMENSION):
        raise MediaError(f"{p}: absurd video dimensions {width}x{height} (limit {MAX_DIMENSION})")

    pts, first = _scan_head(stream)
    if first is None:
        raise MediaError(f"{p}: the video stream has no decodable frame")
    rotation = round(-first.rotation / 90) * 90 % 360

    duration = container.duration / 1e6 if container.duration else None
    video_duration = stream_duration(stream) or duration
    duration = duration or video_duration
    _check_complete(p, container, duration)
    if not duration:
        raise MediaError(f"{p}: the file does not say how long it is")

    variable = _is_variable(pts)
    exact = bool(stream.frames)
    sampled = float((len(pts) - 1) / ((pts[-1] - pts[0]) * stream.time_base)) if len(pts) > 10 else None
    header = float(stream.average_rate or 0) or None
    if variable and exact and video_duration:
        fps = stream.frames / video_duration
    elif sampled and (variable or not header or abs(header - sampled) > 0.05 * sampled):
        fps = sampled  # timestamps are what a player follows; a header rate can be a guess
    else:
        fps = header or float(stream.guessed_rate or stream.base_rate or 0)
    if fps <= 0:
        raise MediaError(f"{p}: the video stream has no usable frame rate")
    frame_count = stream.frames if exact else max(1, round(video_duration * fps))

    turned = rotation in (90, 270)
    return MediaInfo(
        container=_container_name(container, p),
        duration_s=round(duration, 6),
        video_codec=cc.codec.canonical_name,
        width=width,
        height=height,
        display_width=height if turned else width,
        display_height=width if turned else height,
        fps=round(fps, 6),
        fps_is_variable=variable,
        frame_count=frame_count,
        frame_count_exact=exact,
        bit_rate=container.bit_rate or None,
        pix_fmt=cc.pix_fmt or first.format.name,
        rotation=rotation,
        audio_streams=[_audio_dict(s) for s in container.streams.audio],
        size_bytes=p.stat().st_size,
    )


def _scan_head(stream: av.video.stream.VideoStream) -> tuple[list[int], av.VideoFrame | None]:
    """Packet pts (sorted, stream time base) of the first HEAD_SECONDS, and the first decoded frame."""
    container, cc = stream.container, stream.codec_context
    limit = int(HEAD_SECONDS / stream.time_base) if stream.time_base else None
    pts: list[int] = []
    first: av.VideoFrame | None = None
    read, last_dts, stopped_early = 0, None, False
    for n, packet in enumerate(container.demux(stream)):
        if first is None:
            frames = cc.decode(packet)  # the flush packet at the end returns the held-back frames
            first = frames[0] if frames else None
        if packet.size == 0:
            continue
        if packet.pts is not None:
            pts.append(packet.pts)
        last_dts = packet.dts if packet.dts is not None else last_dts
        read += packet.size
        enough = limit is None or (len(pts) > 1 and max(pts) - min(pts) >= limit)
        if first is not None and (enough or n >= HEAD_MAX_PACKETS or read >= HEAD_MAX_BYTES):
            stopped_early = True
            break
        if n >= 4 * HEAD_MAX_PACKETS:  # no frame after this many packets: give up
            break
    pts = sorted(set(pts))
    if stopped_early:
        # With B-frames, frames shown soon after the last one read may still be unread. A frame is
        # shown no earlier than it is decoded (pts >= dts), so all frames shown up to the last dts
        # read are in the sample: keep those (without dts, drop the decoder's reorder depth).
        if last_dts is not None:
            pts = [t for t in pts if t <= last_dts]
        else:
            pts = pts[: len(pts) - (cc.has_b_frames or 0)]
    return pts, first


def _is_variable(pts: list[int]) -> bool:
    """True if frame gaps keep changing: more than 5% of them (and at least 2) differ from the usual
    gap by more than timestamp rounding (1.5 ticks) or 2%. One odd gap, e.g. a dropped frame or
    B-frames lost where a stream copy was cut, does not make a constant-rate file variable."""
    gaps = [b - a for a, b in zip(pts, pts[1:], strict=False)]
    if len(gaps) < 3:
        return False
    typical = statistics.median(gaps)
    tolerance = max(1.5, 0.02 * typical)
    odd = sum(abs(g - typical) > tolerance for g in gaps)
    return odd >= 2 and odd > 0.05 * len(gaps)


def stream_duration(stream: av.stream.Stream) -> float | None:
    """The stream's own duration from the header (MP4 track duration, Matroska DURATION tag)."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")  # Matroska per-track tag
    if tag:
        try:
            h, m, s = tag.split(":")
            return int(h) * 3600 + int(m) * 60 + float(s)
        except ValueError:
            return None
    return None


def _check_complete(p: Path, container: av.container.InputContainer, duration: float | None) -> None:
    """Raise MediaError if the packets stop well before the end the header promises (a cut-off copy)."""
    if not duration:
        return
    start = (container.start_time or 0) / 1e6
    promised = start + duration
    try:
        container.seek(int(max(start, promised - TAIL_SECONDS) * 1e6), any_frame=True, backward=True)
    except av.error.FFmpegError:
        return  # not seekable: cannot tell cheaply, let decoding find out
    reached = None
    try:
        for n, packet in enumerate(container.demux()):
            if packet.pts is not None and packet.time_base is not None:
                end = float((packet.pts + (packet.duration or 0)) * packet.time_base)
                reached = end if reached is None else max(reached, end)
            if n > 20000:
                break
    except av.error.FFmpegError:
        pass  # a damaged tail: judged by how far it got
    if reached is None or reached < promised - max(TRUNCATION_SLACK_S, 0.05 * duration):
        got = f"{reached - start:.2f} s" if reached is not None else "nothing near the end"
        raise MediaError(f"{p}: truncated file (header says {duration:.2f} s, data stops at {got})")


def _container_name(container: av.container.InputContainer, p: Path) -> str:
    names = container.format.name.split(",")
    if "mov" in names:
        return "mov" if container.metadata.get("major_brand", "").strip() == "qt" else "mp4"
    if "matroska" in names:
        with open(p, "rb") as f:
            return "webm" if b"\x42\x82\x84webm" in f.read(64) else "matroska"
    return names[0]


def _audio_dict(stream: av.audio.stream.AudioStream) -> dict[str, Any]:
    cc = stream.codec_context
    if cc is None:
        return {"codec": "unknown", "sample_rate": 0, "channels": 0}
    return {"codec": cc.codec.canonical_name, "sample_rate": cc.sample_rate, "channels": cc.channels}


def as_fraction(fps: float) -> Fraction:
    """A frame rate as an exact ratio: 29.97 -> 30000/1001, 25.0 -> 25."""
    return Fraction(fps).limit_denominator(1001)
