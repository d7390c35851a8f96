"""Which containers `mux` can write a given video into, known before any model loads.

The rule is not a codec table copied from somewhere: it asks this FFmpeg build by writing the real
output's header (a stream copy of the input's video plus the audio stream mux adds) into memory,
which takes milliseconds. What that found, so a reader knows what to expect (FFmpeg 8): VP8 goes
only in .mkv/.webm; VP9 and AV1 in .mp4/.mkv/.webm (QuickTime has no mapping for them); H.264 in all
but .webm; HEVC, MPEG-2 and MJPEG in .mp4/.mov/.mkv; .m4v (FFmpeg's iPod flavour of MP4) only takes
H.264 and MPEG-4 Part 2; WMV and FLV1 video fit none. WebM holds only Opus or Vorbis audio, so the
muxed audio is Opus there and AAC everywhere else. `mux` runs the same check before it writes.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import av
import av.codec.codec

from foleyscope.errors import FoleyscopeError
from foleyscope.media.container import _reason, open_input
from foleyscope.media.probe import MediaInfo, check_video_stream

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm")
HIDDEN_SCAN_PACKETS = 2000  # an edit list hides at most a GOP: frames back to the keyframe before the cut


@dataclass(frozen=True)
class MuxTarget:
    format: str  # FFmpeg muxer
    audio_codec: str
    audio_bit_rate: int  # per stream (mono or stereo)


_TARGETS = {
    ".mp4": MuxTarget("mp4", "aac", 192_000),  # AAC 192k, as the reference's ffmpeg mux (-c:a aac -b:a 192k)
    ".mov": MuxTarget("mov", "aac", 192_000),
    ".m4v": MuxTarget("ipod", "aac", 192_000),
    ".mkv": MuxTarget("matroska", "aac", 192_000),
    ".webm": MuxTarget("webm", "libopus", 128_000),  # WebM allows only Opus or Vorbis audio
}


def mux_target(out_path: str | os.PathLike[str]) -> MuxTarget:
    """The muxer and audio codec for `out_path`'s suffix; FoleyscopeError if it is not one we write."""
    out = Path(out_path)
    target = _TARGETS.get(out.suffix.lower())
    if target is None:
        raise FoleyscopeError(
            f"{out}: unsupported output format {out.suffix or '(no suffix)'}; use one of {', '.join(VIDEO_SUFFIXES)}"
        )
    return target


def add_copy_stream(out: av.container.OutputContainer, template: av.VideoStream) -> av.VideoStream:
    """An output stream that takes `template`'s packets unchanged (a stream copy).

    PyAV looks the codec up among encoders by the decoder's name; when that name is not an encoder's
    (AV1 decodes with libdav1d) the decoder's own codec entry serves, which is all a copy needs.
    """
    try:
        return out.add_stream_from_template(template)
    except av.codec.codec.UnknownCodecError:
        return out.add_stream_from_template(template, opaque=True)


def header_problem(video: av.VideoStream, suffix: str) -> str | None:
    """None if the `suffix` container takes a copy of `video` plus mux's audio, else FFmpeg's reason."""
    target = _TARGETS[suffix]
    out = av.open(io.BytesIO(), "w", format=target.format)
    try:
        add_copy_stream(out, video)
        audio = out.add_stream(target.audio_codec, rate=48000)
        audio.layout = "mono"
        out.start_encoding()  # writes the header: where codec tags and sample entries are checked
    except (ValueError, av.error.FFmpegError) as exc:
        return _reason(exc)
    finally:
        try:
            out.close()
        except (ValueError, av.error.FFmpegError):
            pass
    return None


def hidden_frames(video: av.VideoStream) -> int:
    """How many frames at the start an MP4/MOV edit list hides (a stream copy cut with `ffmpeg -ss`
    keeps the frames back to the keyframe and hides them); they must be copied, since later frames
    are decoded from them. Reads packets from the start of the file (not the pictures), so it leaves
    the container's read position moved."""
    container = video.container
    if "mov" not in container.format.name.split(","):
        return 0  # only the MP4/MOV demuxer marks packets discarded
    hidden = shown = 0
    for n, packet in enumerate(container.demux(video)):
        if packet.size == 0 or n >= HIDDEN_SCAN_PACKETS or shown >= 32:
            break
        hidden += packet.is_discard
        shown = 0 if packet.is_discard else shown + 1  # B-frames mix the last hidden ones with shown ones
    return hidden


def check_codec(video: av.VideoStream, out_path: str | os.PathLike[str]) -> None:
    """FoleyscopeError in one line, naming the suffixes that would work, if `out_path`'s container
    cannot hold a copy of `video` (or, Matroska and WebM having no edit lists, the frames it hides)."""
    out = Path(out_path)
    suffix = out.suffix.lower()
    target = mux_target(out)
    if target.format in ("matroska", "webm") and (hidden := hidden_frames(video)):
        raise FoleyscopeError(f"{out}: the input hides its first {hidden} frames with an edit list, which "
                              f"{suffix} cannot express (they would show); use .mp4 or .mov")
    if header_problem(video, suffix) is None:
        return
    name = video.codec_context.codec.canonical_name  # check_video_stream made sure there is a decoder
    label = _LABELS.get(name, name.upper())
    works = [s for s in VIDEO_SUFFIXES if s != suffix and header_problem(video, s) is None]
    if works:
        alternatives = works[0] if len(works) == 1 else f"{', '.join(works[:-1])} or {works[-1]}"
        raise FoleyscopeError(f"{out}: {label} video cannot go in {suffix}; use {alternatives}")
    raise FoleyscopeError(f"{out}: {label} video cannot be copied into any of {', '.join(VIDEO_SUFFIXES)}; "
                          "make an H.264 copy first with `foleyscope prep`")


def check_mux_target(video: str | os.PathLike[str] | MediaInfo, out_path: str | os.PathLike[str]) -> None:
    """Everything that would make `mux(video, ..., out_path)` fail, checked before any model loads.

    Raises FoleyscopeError (one line, starting with `out_path`) if the output is the input itself, its
    suffix is not one of VIDEO_SUFFIXES, or that container cannot hold the input's video codec; and
    MediaError if the input fails probe's header-level checks, in probe's words. Reads the input's
    headers (and, for .mkv/.webm from an MP4/MOV, the packets of its first GOP), no pictures.
    """
    if isinstance(video, MediaInfo) and not video.path:
        raise FoleyscopeError(f"{out_path}: the MediaInfo given for the input video has no path")
    src = Path(video.path) if isinstance(video, MediaInfo) else Path(video)
    out = Path(out_path)
    mux_target(out)
    if out.resolve() == src.resolve():
        raise FoleyscopeError(f"{out}: output would overwrite the input video")
    container = open_input(src)
    try:
        check_codec(check_video_stream(src, container), out)
    finally:
        container.close()


_LABELS = {"h264": "H.264", "hevc": "HEVC", "mpeg4": "MPEG-4", "mpeg2video": "MPEG-2", "mpeg1video": "MPEG-1",
           "msmpeg4v3": "MS-MPEG4", "flv1": "FLV1 (Sorenson)"}
