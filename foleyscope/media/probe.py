"""What is in a video file, read from headers so it stays fast on multi-gigabyte files; and the one
judgement every command makes of whether a file is a video it can use.

Besides the headers, `probe` demuxes (without decoding) the packets of the first few seconds to tell
constant from variable frame rate, decodes a single frame (rotation side data is attached to decoded
frames, and it proves the codec actually decodes), and demuxes the last few seconds of packets to
find where the video ends (see span.py) and to catch files cut short of what their header promises.
The work does not grow with the file's length.
"""

from __future__ import annotations

import math
import os
import statistics
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from foleyscope.errors import MediaError
from foleyscope.media.container import _reason, open_input, video_stream
from foleyscope.media.span import SpanTracker, stream_duration

__all__ = ["MediaInfo", "as_fraction", "check_video_stream", "is_video_file", "probe", "stream_duration"]

MAX_DIMENSION = 16384  # larger than any real camera; beyond it a header is broken or hostile
HEAD_SECONDS = 5.0  # packet timestamps read for the variable-frame-rate check...
HEAD_MAX_PACKETS = 1000  # ...or this many packets...
HEAD_MAX_BYTES = 48 << 20  # ...or this much data (lossless 4K would be seconds of reading), whichever first
TAIL_SECONDS = 2.0  # how far before the promised end the tail scan starts reading
TAIL_MAX_PACKETS = 20000
# Demuxers FFmpeg offers for a single picture (every `*_pipe` one is an image format too) ...
STILL_FORMATS = frozenset({"image2", "image2pipe", "ico", "alias_pix", "brender_pix"})
ANIMATION_FORMATS = frozenset({"gif", "apng"})  # ... a still image when they hold one frame
# ... and for text files drawn as pictures (FFmpeg opens any .txt or .nfo as ANSI art "video")
TEXT_FORMATS = frozenset({"tty", "bin", "xbin", "adf", "idf"})


@dataclass
class MediaInfo:
    """The facts about a video that the engine and the doctor act on. Keys documented in docs/probe.md."""

    container: str
    duration_s: float  # the video stream's presentation span (span.py), what audio is sized to
    start_s: float  # when the video's first frame is shown, on the file's clock (MPEG-TS/PS: not 0)
    container_duration_s: float | None  # the container's own duration: may count audio past the video
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
    path: str = ""  # the file probed, as given

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


def is_video_file(path: str | os.PathLike[str]) -> tuple[bool, str]:
    """(True, "") if `path` probes as a video, else (False, why: probe's message without the path).

    For picking the videos out of a folder whatever their suffix (.mpg, .ts, .wmv, .flv, ...). Cheap
    for what is not a video: text, audio and image files fail on the headers, before any packet is
    read; a video costs one probe (bounded work, ~0.2 s on a 2 GB file).
    """
    p = Path(path)
    try:
        probe(p)
    except MediaError as exc:
        return False, str(exc).removeprefix(f"{p}: ")
    return True, ""


def check_video_stream(p: str | os.PathLike[str], container: av.container.InputContainer) -> av.VideoStream:
    """The first video stream of an opened file, after the header-level checks shared by probe,
    extract_frames, prep and mux: not a still image or text, a decoder exists, sane dimensions."""
    stream = video_stream(container)
    fmt = container.format.name
    names = set(fmt.split(","))
    if names & TEXT_FORMATS:
        raise MediaError(f"{p}: a text file ({fmt} format), not a video")
    if names & STILL_FORMATS or any(n.endswith("_pipe") for n in names):
        raise MediaError(f"{p}: a still image ({fmt} format), not a video")
    if names & ANIMATION_FORMATS and stream.frames == 1:
        raise MediaError(f"{p}: a still image ({fmt} with one frame), not a video")
    cc = stream.codec_context
    if cc is None:
        raise MediaError(f"{p}: the video codec has no decoder in this FFmpeg build")
    width, height = cc.width, cc.height
    if not (0 < width <= MAX_DIMENSION and 0 < height <= MAX_DIMENSION):
        raise MediaError(f"{p}: absurd video dimensions {width}x{height} (limit {MAX_DIMENSION})")
    return stream


def _probe(p: Path, container: av.container.InputContainer) -> MediaInfo:
    stream = check_video_stream(p, container)
    cc = stream.codec_context
    width, height = cc.width, cc.height

    pts, first = _scan_head(stream)
    if first is None:
        raise MediaError(f"{p}: the video stream has no decodable frame")
    rotation = round(-first.rotation / 90) * 90 % 360

    container_duration = container.duration / 1e6 if container.duration else None
    tracker = _scan_tail(p, container, stream, container_duration, first.pts)
    duration = tracker.duration_s or stream_duration(stream) or container_duration
    if not duration:
        raise MediaError(f"{p}: the file does not say how long it is")

    variable = _is_variable(pts)
    exact = bool(stream.frames)
    sampled = float((len(pts) - 1) / ((pts[-1] - pts[0]) * stream.time_base)) if len(pts) > 10 else None
    header = float(stream.average_rate or 0) or None
    if variable and exact:
        fps = stream.frames / duration
    elif sampled and (variable or not header or abs(header - sampled) > 0.05 * sampled):
        fps = sampled  # timestamps are what a player follows; a header rate can be a guess
    else:
        fps = header or float(stream.guessed_rate or stream.base_rate or 0)
    if fps <= 0:
        raise MediaError(f"{p}: the video stream has no usable frame rate")
    frame_count = stream.frames if exact else max(1, round(duration * fps))

    turned = rotation in (90, 270)
    return MediaInfo(
        container=_container_name(container, p),
        duration_s=duration,
        start_s=tracker.start_s,
        container_duration_s=round(container_duration, 6) if container_duration else None,
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
        path=str(p),
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


def _scan_tail(
    p: Path, container: av.container.InputContainer, stream: av.VideoStream, container_duration: float | None,
    origin: int | None,
) -> SpanTracker:
    """Read the packets near the end: where the video ends, and whether the data keeps its promises.

    The read starts TAIL_SECONDS before the earlier of the two promised ends (the container's and the
    video's header) and, when those are far apart (audio running on long after the picture), reads
    near each instead of everything between. If no video packet turns up, it steps further back.
    """
    tracker = SpanTracker(container, stream, origin)
    start = (container.start_time or 0) / 1e6
    declared = stream_duration(stream)
    promised = start + container_duration if container_duration else None
    video_end = tracker.start_s + declared if declared else promised
    if video_end is None:
        return tracker  # nothing to aim at: the caller falls back on the headers
    promised = promised or video_end
    first, last = min(video_end, promised), max(video_end, promised)
    apart = last - first > 2 * TAIL_SECONDS
    if not _read_from(container, tracker, first - TAIL_SECONDS, first + TAIL_SECONDS if apart else None):
        return tracker  # not seekable: cannot tell cheaply, let decoding find out
    if apart:
        _read_from(container, tracker, last - TAIL_SECONDS, None)
    window = TAIL_SECONDS
    while tracker.end is None and first - window > start:  # the video stops well before its header says
        window *= 4
        _read_from(container, tracker, first - window, first - window / 4 + TAIL_SECONDS)
    tracker.check_complete(p)
    return tracker


def _read_from(container: av.container.InputContainer, tracker: SpanTracker, from_s: float,
               until_s: float | None) -> bool:
    """Feed the packets from `from_s` (container clock, s) to `until_s` (or the end) to `tracker`,
    and on past `until_s` while the video still has packets there; False if the file cannot seek."""
    start = (container.start_time or 0) / 1e6
    try:
        container.seek(int(max(start, from_s) * 1e6), any_frame=True, backward=True)
    except av.error.FFmpegError:
        return False
    try:
        for n, packet in enumerate(container.demux()):
            tracker.add(packet)
            t = packet.dts if packet.dts is not None else packet.pts
            if until_s is not None and t is not None and packet.time_base:
                now = float(t * packet.time_base)
                video_s = float(tracker.end * tracker.time_base) if tracker.end is not None else -math.inf
                if now > max(until_s, video_s + TAIL_SECONDS):
                    break
            if n > TAIL_MAX_PACKETS:
                break
    except av.error.FFmpegError:
        pass  # a damaged tail: judged by how far it got
    return True


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
