"""How long a video is, defined once: its video stream's presentation span.

The span runs from the first frame the decoder shows (its pts: not always the stream's start time,
which AVI takes from the first dts) to the end of the last frame (the largest packet pts plus that
packet's duration), counting only packets the demuxer does not mark as discarded (an MP4 edit list
hides those). It is not the container's duration, which also counts audio that runs on past the
picture and, for MPEG-TS/PS, a start offset (0.54 s from FFmpeg's PS muxer). probe reads the end
from the last seconds of packets; extract_frames and mux see every packet; all of them feed the
packets through one `SpanTracker`, so the audio the pipeline sizes from extract_frames, the duration
probe prints and the video mux writes agree to the tick.
"""

from __future__ import annotations

import os
from fractions import Fraction

import av

from foleyscope.errors import MediaError
from foleyscope.media.container import open_input, video_stream

TRUNCATION_SLACK_S = 1.0  # shortfall (or 5% of the duration, if larger) that counts as truncated


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


class SpanTracker:
    """Accumulates the video span (and how far any stream's data reaches) from demuxed packets."""

    def __init__(
        self, container: av.container.InputContainer, stream: av.video.stream.VideoStream, origin: int | None = None
    ) -> None:
        self.container, self.stream = container, stream
        self.time_base = stream.time_base or Fraction(1, 90000)
        # ticks: the video's start, the first shown frame's pts (`first_shown_pts`); the header's guess until known
        self.origin = origin if origin is not None else stream.start_time if stream.start_time is not None else 0
        rate = stream.guessed_rate or stream.average_rate or Fraction(25)
        # a frame's length when its packet carries none: one period at the stream's rate
        self.fallback = max(1, round(1 / (Fraction(rate) * self.time_base)))
        self.end: int | None = None  # ticks: end of the last frame seen
        self.reached: float | None = None  # seconds: furthest end of any stream's packets

    def add(self, packet: av.Packet) -> None:
        if packet.size == 0:
            return
        t = packet.pts if packet.pts is not None else packet.dts
        if t is None:
            return
        if packet.time_base is not None:
            end_s = float((t + (packet.duration or 0)) * packet.time_base)
            self.reached = end_s if self.reached is None else max(self.reached, end_s)
        if packet.stream_index == self.stream.index and not packet.is_discard:
            end = t + (packet.duration or self.fallback)
            self.end = end if self.end is None else max(self.end, end)

    @property
    def period_s(self) -> float:
        return float(self.fallback * self.time_base)

    @property
    def start_s(self) -> float:
        return float(self.origin * self.time_base)

    @property
    def duration_s(self) -> float | None:
        """The span in seconds (None before any video packet); the same float wherever computed."""
        return None if self.end is None else float((self.end - self.origin) * self.time_base)

    def check_complete(self, path: object, *, strict: bool = False) -> None:
        """Raise MediaError if the data stops well before the end a header promises (a cut-off copy).

        Two promises: the container's duration (any stream must reach it) and the video stream's own
        duration (the video must). probe, which reads only the tail, allows 1 s or 5%; a full decode
        (`strict`) also holds the video to its header within 3 frames or 2%.
        """
        container = self.container
        if container.duration:
            start = (container.start_time or 0) / 1e6
            promised = container.duration / 1e6
            # MPEG-TS/PS count the duration from the start time, Matroska from zero: the data must reach
            # the nearer of the two ends (a stream starting late is not cut short)
            if self.reached is None or self.reached < min(promised, start + promised) - _slack(promised):
                got = f"{self.reached - start:.2f} s" if self.reached is not None else "nothing near the end"
                raise MediaError(f"{path}: truncated file (header says {promised:.2f} s, data stops at {got})")
        declared = stream_duration(self.stream)
        span = self.duration_s
        if declared and span is not None:
            slack = _slack(declared)
            if strict:
                slack = min(slack, max(3 * self.period_s, 0.02 * declared))
            if max(span, span + self.start_s) < declared - slack:  # a DURATION tag may count from zero
                raise MediaError(f"{path}: truncated file (header says {declared:.2f} s of video, "
                                 f"data stops at {span:.2f} s)")


def first_shown_pts(path: str | os.PathLike[str]) -> int | None:
    """pts of the first frame the decoder puts out (presentation order) of `path`'s video stream: where
    the video starts. Opens the file on its own and decodes that one frame."""
    container = open_input(path)
    try:
        for packet in container.demux(video_stream(container)):
            frames = packet.decode()  # the flush packet at the end returns the held-back frames
            if frames:
                return frames[0].pts
    except av.error.FFmpegError:
        return None  # the caller's own decoding reports it
    finally:
        container.close()
    return None


def _slack(duration: float) -> float:
    return max(TRUNCATION_SLACK_S, 0.05 * duration)
