"""Frame extraction at the models' sample rates: one decoding pass feeds every consumer.

The engine needs the same video at several rates and sizes (SigLIP2: 8 fps squashed to 512x512;
Synchformer: 25 fps, short side to 224 then a centre crop). The reference decodes the file once per
rate and converts every frame to full-resolution RGB before resizing in Python. Here one decode
feeds all specs, a frame is converted only if some sample time picks it (once per geometry, however
many consecutive samples pick it), and resizing happens inside swscale during the pixel-format
conversion, so a 4K frame never exists as full-resolution RGB.

Two sampling rules (picking.py; docs/frames.md):
* "official" (default): the frames the HunyuanVideo-Foley release feeds its models, so the released
  checkpoints see what they were trained with: its accumulated float clock on the stream's absolute
  timeline, each sample showing the first frame at or after it, nothing after the last frame; and
  its resizing (PIL bilinear squash; torchvision bicubic-antialias short side + centre crop of the
  resized frame), reproduced in swscale (resize.py). Its 15 s cap is not applied (the engine
  windows long clips); `Frames.official_counts` says how many samples the release would keep. The
  release ignores rotation metadata; here its pixels are turned upright, as for "exact".
* "exact": sample k at t_k = start + k / fps from the video's first frame, showing the frame on
  screen then (the latest frame with pts <= t_k), resized in one swscale pass (crop: centre square
  at a whole-pixel offset, then scaled).
Times come from timestamps, so variable frame rate files sample correctly. The video ends where
span.py says (its last frame's end), the length probe reports and mux writes: the pipeline sizes the
audio from `Frames.duration_s`.
"""

from __future__ import annotations

import math
import mmap
import os
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

import av
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from foleyscope.errors import FoleyscopeError, MediaError
from foleyscope.media.container import open_input
from foleyscope.media.picking import OFFICIAL_MAX_S, RULES, OfficialClock, Rule, count_up_to
from foleyscope.media.probe import check_video_stream
from foleyscope.media.resize import Converter, crop_offsets, official_size
from foleyscope.media.span import SpanTracker, first_shown_pts, stream_duration

# A frame whose pts equals a sample time (up to float rounding) is the one shown at that time.
_EPS = 1e-6
# Scale on a worker thread while the main thread keeps the decoder fed; at most _MAX_PENDING
# conversions (each holding a decoded frame) wait in line. False: convert inline.
THREADED_CONVERSION = True
_MAX_PENDING = 4
_MAX_INITIAL_BYTES = 1 << 30  # per spec, before growing on demand


@dataclass(frozen=True)
class FrameSpec:
    """One consumer's view of the video: sample rate, output size S (S x S) and geometry."""

    fps: float
    size: int
    mode: Literal["squash", "crop"]  # squash: S x S ignoring aspect; crop: short side -> S, centre S x S
    # swscale filter name (av.video.reformatter.Interpolation); with frames="official" BICUBIC is the
    # a = -0.5 cubic of PIL and torch's antialiasing resize (swscale's default is a = -0.6)
    interpolation: str = "BILINEAR"

    def __post_init__(self) -> None:
        if not (self.fps > 0 and math.isfinite(self.fps)):
            raise FoleyscopeError(f"frame rate must be a positive number, got {self.fps}")
        if self.size < 1:
            raise FoleyscopeError(f"frame size must be at least 1, got {self.size}")
        if self.mode not in ("squash", "crop"):
            raise FoleyscopeError(f"frame mode must be 'squash' or 'crop', got {self.mode!r}")
        if self.interpolation.upper() not in Interpolation.__members__:
            names = ", ".join(Interpolation.__members__)
            raise FoleyscopeError(f"unknown interpolation {self.interpolation!r} (choose from {names})")


# The two consumers of the HunyuanVideo-Foley pipeline.
SIGLIP2 = FrameSpec(fps=8.0, size=512, mode="squash", interpolation="BILINEAR")
SYNCHFORMER = FrameSpec(fps=25.0, size=224, mode="crop", interpolation="BICUBIC")


@dataclass
class Frames:
    specs: tuple[FrameSpec, ...]
    arrays: list[np.ndarray]  # per spec, uint8 [N, S, S, 3] RGB, upright
    # Per spec, sample times (s) from the video's first frame. "official": the release's clock minus
    # `origin_s`, so negative for the samples a stream starting after 0 s gives its first frame.
    times: list[np.ndarray]
    duration_s: float  # length of the video actually covered, from `start` (all of it: probe's duration_s)
    # Per spec, presentation-order index of the decoded frame picked for each sample, counted from
    # the first frame this call decoded: the file's first frame when start == 0, otherwise the
    # keyframe the seek landed on.
    source_indices: list[np.ndarray]
    source_times: list[np.ndarray] = field(default_factory=list)  # per spec, pts (s) of the picked frame, as `times`
    rule: Rule = "official"
    origin_s: float = 0.0  # the first frame's timestamp on the stream's own timeline (absolute = times + origin_s)
    # Per spec, how many samples the release's sampler returns for this file at that rate (its 15 s
    # cap applied: frames after 15 s absolute are dropped): for the official rule, arrays[i][:n] are
    # exactly its frames, and the 25 fps count fixes its audio length (n / 25 s). Known after a decode
    # from the start with no `end`; None otherwise.
    official_counts: list[int] | None = None


class _Geometry:
    """Resize + convert for one (size, mode, interpolation), with its own cached swscale context.

    crop: the centred square of side min(w, h) is cut out first by libavfilter's crop (which only
    moves plane pointers, no copy), then swscale scales just that square to S x S. Same picture as
    "short side -> S, then centre crop" up to sub-pixel rounding, without scaling the discarded
    sides (44% of a 16:9 frame's work). The yuv -> rgb step is PyAV's reformat in both modes, so
    colours match what `frame.to_ndarray(format="rgb24")` gives the reference pipeline.
    """

    def __init__(self, size: int, mode: str, interpolation: str) -> None:
        self.size, self.mode = size, mode
        self.interpolation = Interpolation[interpolation.upper()]
        self.reformatter = VideoReformatter()
        self.cropper: av.filter.Graph | None = None
        self.cropper_input: tuple[int, int, str] | None = None

    def _crop(self, frame: av.VideoFrame) -> av.VideoFrame:
        shape = (frame.width, frame.height, frame.format.name)
        if shape != self.cropper_input:  # (re)built on the first frame and on any size change
            w, h, fmt = shape
            side = min(w, h)
            graph = av.filter.Graph()
            tb = frame.time_base or Fraction(1, 1000)
            src = graph.add_buffer(width=w, height=h, format=fmt, time_base=tb)
            crop = graph.add("crop", f"{side}:{side}:{(w - side) // 2}:{(h - side) // 2}")
            sink = graph.add("buffersink")
            src.link_to(crop)
            crop.link_to(sink)
            graph.configure()
            self.cropper, self.cropper_input = graph, shape
        self.cropper.push(frame)
        return self.cropper.pull()

    def convert(self, frame: av.VideoFrame, quarter_turns: int) -> tuple[list[np.ndarray], int]:
        """The upright S x S picture as R, G, B views into the scaler's RGBA output, and no level offset.

        RGBA rather than rgb24 because swscale's scaled rgb24 writer is much slower than its
        32-bit one (1.3 vs 0.8 ms for 720p -> 512x512 here); copying three channels out is cheap.
        """
        if self.mode == "crop" and frame.width != frame.height:
            frame = self._crop(frame)
        s = self.size
        small = self.reformatter.reformat(frame, width=s, height=s, format="rgba", interpolation=self.interpolation)
        plane = small.planes[0]
        rows = np.frombuffer(plane, np.uint8).reshape(s, plane.line_size)  # lines may be padded
        rgba = rows[:, : 4 * s].reshape(s, s, 4)
        rgba = np.rot90(rgba, quarter_turns) if quarter_turns else rgba
        return [rgba[:, :, c] for c in range(3)], 0


class _OfficialGeometry:
    """The release's resize for one (size, mode, interpolation) (resize.py): squash to S x S, or
    short side to S then the centre S x S of the resized frame; planar RGB, then turned upright."""

    def __init__(self, size: int, mode: str, interpolation: str) -> None:
        self.size, self.mode, self.interpolation = size, mode, interpolation.upper()
        self.converter: Converter | None = None
        self.box: tuple[int, int] | None = None

    def convert(self, frame: av.VideoFrame, quarter_turns: int) -> tuple[list[np.ndarray], int]:
        if self.converter is None or not self.converter.matches(frame):  # first frame, or a size change
            w, h = official_size(frame.width, frame.height, self.size, self.mode)
            self.converter = Converter(frame, w, h, self.interpolation)
            self.box = crop_offsets(w, h, self.size) if self.mode == "crop" else None
        planes, _ = self.converter(frame)
        if self.box is not None:  # crop in the stored orientation, as the release (which ignores rotation) does
            left, top = self.box
            planes = [p[top : top + self.size, left : left + self.size] for p in planes]
        if quarter_turns:
            planes = [np.rot90(p, quarter_turns) for p in planes]
        return planes, self.converter.offset


def _output_buffer(shape: tuple[int, ...]) -> np.ndarray:
    """Uninitialised uint8 memory, mapped and faulted in by one mmap call on Linux.

    numpy's default (huge pages via madvise) stalled on page compaction and zeroing: about 0.14 s of
    system time for the 100 MB of a 10 s extraction here, ~25% of the whole call at 720p.
    """
    if not sys.platform.startswith("linux"):
        return np.empty(shape, np.uint8)
    nbytes = math.prod(shape)
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)
    memory = mmap.mmap(-1, max(1, nbytes), flags=flags)  # freed when the last array view goes
    return np.frombuffer(memory, np.uint8)[:nbytes].reshape(shape)


class _Output:
    """One spec's sample clock and its [N, S, S, 3] result, filled in place (no final stack)."""

    def __init__(self, spec: FrameSpec, start: float, expected_s: float, clock: OfficialClock | None) -> None:
        self.spec, self.start, self.k, self.clock = spec, start, 0, clock
        capacity = max(1, math.ceil(expected_s * spec.fps + _EPS) + 1)
        capacity = min(capacity, max(1, _MAX_INITIAL_BYTES // (3 * spec.size**2)))  # header may lie
        self.buf = _output_buffer((capacity, spec.size, spec.size, 3))
        self.indices: list[int] = []
        self.times: list[float] = []  # pts of the picked frames
        self.clock_times: list[float] = []  # official: the release's sample times (absolute)

    def due(self, until: float) -> int:
        """exact: how many of the next samples fall strictly before `until`."""
        n = 0
        while self.start + (self.k + n) / self.spec.fps + _EPS < until:
            n += 1
        return n

    def reserve(self, n: int, index: int, time: float, drain: Callable[[], None]) -> tuple[int, int]:
        """Slots for the next n samples (all showing frame `index`); grows if the header lied."""
        if self.k + n > len(self.buf):
            drain()  # no conversion may still be writing into the old buffer
            grown = _output_buffer((max(self.k + n, len(self.buf) * 3 // 2),) + self.buf.shape[1:])
            grown[: self.k] = self.buf[: self.k]
            self.buf = grown
        self.indices.extend([index] * n)
        self.times.extend([time] * n)
        self.k += n
        return self.k - n, self.k

    def sample_times(self, origin_s: float) -> np.ndarray:
        if self.clock is None:
            return self.start + np.arange(self.k, dtype=np.float64) / self.spec.fps
        return np.asarray(self.clock_times, dtype=np.float64) - origin_s

    def array(self) -> np.ndarray:
        return self.buf[: self.k] if self.k > 0.8 * len(self.buf) else self.buf[: self.k].copy()


def _convert_into(geometry: _Geometry | _OfficialGeometry, frame: av.VideoFrame, turns: int, targets: list) -> None:
    channels, offset = geometry.convert(frame, turns)
    for buf, a, b in targets:
        slot = buf[a]
        for c in range(3):  # channel by channel: numpy copies a strided plane fast, an RGBA->RGB view slowly
            slot[:, :, c] = channels[c]
        if offset > 0:  # saturating subtract, on contiguous memory
            np.maximum(slot, offset, out=slot)
            np.subtract(slot, offset, out=slot)
        elif offset < 0:
            np.minimum(slot, 255 + offset, out=slot)
            np.add(slot, -offset, out=slot)
        if b - a > 1:
            buf[a + 1 : b] = slot


class _Converter:
    """Runs conversions on one worker thread so scaling overlaps decoding (swscale, libavfilter and
    the decoder all drop the GIL). One thread per geometry measured no faster on 2 cores."""

    def __init__(self, threaded: bool) -> None:
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="foleyscope-scale") if threaded else None
        self.pending: deque[Future[None]] = deque()

    def submit(self, geometry: _Geometry | _OfficialGeometry, frame: av.VideoFrame, turns: int, targets: list) -> None:
        if self.pool is None:
            _convert_into(geometry, frame, turns, targets)
            return
        while len(self.pending) >= _MAX_PENDING:  # bounds the decoded frames held in memory
            self.pending.popleft().result()
        self.pending.append(self.pool.submit(_convert_into, geometry, frame, turns, targets))

    def drain(self) -> None:
        while self.pending:
            self.pending.popleft().result()

    def close(self) -> None:
        if self.pool is not None:
            for job in self.pending:
                job.cancel()
            self.pool.shutdown(wait=True)


def extract_frames(
    path: str | os.PathLike[str],
    specs: Sequence[FrameSpec],
    start: float = 0.0,
    end: float | None = None,
    *,
    frames: Rule = "official",
    progress: Callable[[float, float], None] | None = None,
) -> Frames:
    """Sample every spec over [start, end) from ONE decode of `path`'s first video stream.

    `frames`: "official" picks and resizes the frames the HunyuanVideo-Foley release would (its
    clock, first frame at or after each sample, its filters; not its 15 s cap); "exact" samples at
    start + k / fps showing the frame on screen then (module docstring). `end` defaults to the
    stream's end (last frame's pts + its duration); an `end` past the stream is clipped to it.
    With start == 0 the official rule also takes the samples before the first frame of a stream
    that starts after 0 s (the release does). `progress(done_s, total_s)` is called as decoding
    advances.
    """
    specs = tuple(specs)
    if not specs:
        raise FoleyscopeError("extract_frames needs at least one FrameSpec")
    if frames not in RULES:
        raise FoleyscopeError(f"frames must be one of {', '.join(RULES)}, got {frames!r}")
    if not (start >= 0 and math.isfinite(start)):
        raise FoleyscopeError(f"start must be a finite time >= 0, got {start}")
    if end is not None and not end > start:
        raise FoleyscopeError(f"end ({end}) must be after start ({start})")

    official = frames == "official"
    keys = [(s.size, s.mode, s.interpolation.upper()) for s in specs]
    make = _OfficialGeometry if official else _Geometry
    geometries = {key: make(*key) for key in keys}
    container = open_input(path)
    try:
        stream = check_video_stream(path, container)  # refuses what probe refuses, in the same words
    except MediaError:
        container.close()
        raise
    stream.codec_context.thread_type = "AUTO"  # frame/slice threads inside FFmpeg
    # the video starts at its first shown frame: seen first when decoding from 0, else looked up
    tracker = SpanTracker(container, stream, first_shown_pts(path) if start > 0 else None)
    decoded = _decode(container, stream, tracker, path, start)
    converter = _Converter(threaded=THREADED_CONVERSION)
    try:
        total = max(_expected_end(container, stream, end) - start, 1e-3)
        first = tracker.start_s + start if start > 0 else None  # official: skip the clock's earlier samples
        outputs = [_Output(spec, start, total, OfficialClock(spec.fps, first) if official else None) for spec in specs]
        turns = 0
        current: av.VideoFrame | None = None
        cur_time, cur_index, index = 0.0, 0, -1
        origin_s, stop = 0.0, None
        last_capped = -1.0  # the latest absolute frame time within the release's cap
        last_report = -math.inf
        window_end: float | None = None

        def submit(demand: list[tuple[_Output, int]], frame: av.VideoFrame, frame_index: int, time: float) -> None:
            """Reserve each output's n samples for `frame` and convert it once per geometry."""
            jobs: dict[tuple[int, str, str], list] = {}
            for (out, n), key in zip(demand, keys, strict=True):
                if n:
                    a, b = out.reserve(n, frame_index, time, converter.drain)
                    jobs.setdefault(key, []).append((out.buf, a, b))
            for key, targets in jobs.items():
                converter.submit(geometries[key], frame, turns, targets)

        def hand_out(until: float) -> None:
            """exact: give the current frame to every sample due before `until`."""
            submit([(out, out.due(until)) for out in outputs], current, cur_index, cur_time)

        for frame, t in decoded:
            index += 1
            if current is None:
                turns = round((frame.rotation or 0) / 90) % 4  # rotation: degrees counter-clockwise
                origin_s = tracker.start_s  # set from this frame when decoding from 0
                stop = None if end is None else origin_s + end
            elif not official:
                hand_out(t if end is None else min(t, end))
            abs_time = frame.time if frame.time is not None else origin_s + t  # the release's frame.time
            if 0 <= abs_time <= OFFICIAL_MAX_S:
                last_capped = max(last_capped, abs_time)
            if official and abs_time >= 0:  # this frame is the first at or after the pending samples
                demand = []
                for out in outputs:
                    taken = out.clock.take(abs_time, stop)
                    out.clock_times.extend(taken)
                    demand.append((out, len(taken)))
                submit(demand, frame, index, t)
            if end is not None and t + _EPS >= end:
                window_end = end if current is not None else None
                break
            current, cur_time, cur_index = frame, t, index
            if progress is not None and t - last_report >= 0.1:
                progress(max(0.0, min(t - start, total)), total)
                last_report = t
        if current is None:
            where = "" if index < 0 else f" in [{start:g}, {end:g}) s"
            raise MediaError(f"{path}: no video frames could be decoded{where}")
        if window_end is None:
            span = tracker.duration_s  # the last frame's end, from the packets as probe reads them
            stream_end = span if span is not None else cur_time + _frame_duration(current, stream)
            if end is None or end > stream_end:
                tracker.check_complete(path, strict=True)  # FFmpeg ends a truncated file quietly
            window_end = stream_end if end is None else min(end, stream_end)
            if window_end <= start + _EPS:
                raise MediaError(
                    f"{path}: no video in the requested window (starts at {start:g} s, "
                    f"video ends at {stream_end:.3f} s)"
                )
            if not official:  # the official rule emits nothing past the last frame
                hand_out(window_end)
        converter.drain()
    finally:
        converter.close()
        decoded.close()
        container.close()

    duration = window_end - start
    if progress is not None:
        progress(duration, duration)
    counts = None
    if start == 0 and end is None:
        counts = [count_up_to(spec.fps, last_capped) for spec in specs]
    return Frames(
        specs=specs,
        arrays=[out.array() for out in outputs],
        times=[out.sample_times(origin_s) for out in outputs],
        duration_s=duration,
        source_indices=[np.asarray(out.indices, dtype=np.int64) for out in outputs],
        source_times=[np.asarray(out.times, dtype=np.float64) for out in outputs],
        rule=frames,
        origin_s=origin_s,
        official_counts=counts,
    )


def _decode(
    container: av.container.InputContainer, stream: av.VideoStream, tracker: SpanTracker, path: object,
    start: float,
) -> Iterator[tuple[av.VideoFrame, float]]:
    """Decoded frames in presentation order with their time (s) from the video's first frame; every
    packet (of every stream: the truncation check wants how far any reaches) goes past `tracker`."""
    tb, origin = tracker.time_base, tracker.origin
    t, index = 0.0, -1
    try:
        if start > 0:  # keyframe at or before `start`, then decode forward
            frames = _seek(container, stream, tracker, origin + int(start / tb))
        else:
            frames = _frames(container, stream, tracker)
        for frame in frames:
            if start == 0 and index < 0 and frame.pts is not None:
                tracker.origin = origin = frame.pts
            index += 1
            if frame.pts is not None:
                t = float((frame.pts - origin) * tb)
            else:  # no timestamp: assume it follows the previous frame
                t += _frame_duration(frame, stream)
            yield frame, t
    except av.error.FFmpegError as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise MediaError(f"{path}: video decoding failed near {t:.2f} s ({reason})") from None


def _seek(
    container: av.container.InputContainer, stream: av.VideoStream, tracker: SpanTracker, target: int
) -> Iterator[av.VideoFrame]:
    """Frames from a keyframe at or before `target` (ticks) on. Some demuxers (MPEG-TS, which has no
    index) can land on a keyframe past it: then seek again 1, 2, 4 ... s further back, at worst to
    the stream's start."""
    back, second = 0, max(1, round(1 / tracker.time_base))
    while True:
        pos = max(target - back, tracker.origin)
        container.seek(pos, stream=stream, backward=True, any_frame=False)
        frames = _frames(container, stream, tracker)
        first = next(frames, None)
        if first is None or first.pts is None or first.pts <= target or pos == tracker.origin:
            break
        frames.close()
        back = back * 2 or second
    if first is not None:
        yield first
    yield from frames


def _frames(
    container: av.container.InputContainer, stream: av.VideoStream, tracker: SpanTracker
) -> Iterator[av.VideoFrame]:
    for packet in container.demux():
        tracker.add(packet)
        if packet.stream_index == stream.index:
            yield from packet.decode()


def _frame_duration(frame: av.VideoFrame, stream: av.VideoStream) -> float:
    if frame.duration and frame.time_base:
        return float(frame.duration * frame.time_base)
    rate = stream.guessed_rate or stream.average_rate
    return float(1 / rate) if rate else 0.04


def _expected_end(container: av.container.InputContainer, stream: av.VideoStream, end: float | None) -> float:
    """Best header guess of where decoding will stop: sizes the outputs and the progress total."""
    if end is not None:
        return end
    declared = stream_duration(stream)
    if declared:
        return declared
    if container.duration:
        return container.duration / av.time_base
    return 1.0
