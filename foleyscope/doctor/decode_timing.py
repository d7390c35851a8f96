"""Step 4's one measurement: a short timed decode of the input, extrapolated to the whole file (used when
the diagnosed run has no decode stage to read it from). http_timing.py is step 5's counterpart."""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass

from foleyscope.media.container import open_input, video_stream


@dataclass(frozen=True)
class DecodeSample:
    """A short measured decode, extrapolated to the whole file."""

    media_s: float  # seconds of video decoded
    frames: int
    wall_s: float
    est_full_s: float


def measure_decode(video_path: str, total_frames: int, *, sample_seconds: float = 1.0,
                   max_wall_s: float = 3.0) -> DecodeSample:
    """Decode up to `sample_seconds` of the file (never more than `max_wall_s` of wall time) and
    extrapolate: first-frame cost (open, decoder start-up) once, then the per-frame rate."""
    t0 = time.perf_counter()
    container = open_input(video_path)
    try:
        stream = video_stream(container)
        stream.thread_type = "AUTO"
        first_pts = None
        t_first = t_last = 0.0
        frames = 0
        media_s = 0.0
        for frame in container.decode(stream):
            now = time.perf_counter() - t0
            frames += 1
            if frames == 1:
                t_first = now
            t_last = now
            if frame.time is not None:
                first_pts = frame.time if first_pts is None else first_pts
                media_s = frame.time - first_pts
            if frames >= 2 and (media_s >= sample_seconds or now >= max_wall_s):
                break
    finally:
        container.close()
    if frames == 0:
        return DecodeSample(0.0, 0, t_last, 0.0)
    per_frame = (t_last - t_first) / (frames - 1) if frames > 1 else t_first
    est = t_first + per_frame * max(0, total_frames - 1)
    return DecodeSample(media_s, frames, t_last, max(est, t_last))


def sampled_decode(video_path: str, total_frames: int, sample_seconds: float) -> DecodeSample:
    """measure_decode, once per file version and process (as the matmul probes are), so the two step 4
    checks price one and the same measured decode."""
    return _sampled_decode(video_path, _file_key(video_path), total_frames, sample_seconds)


@functools.lru_cache(maxsize=16)
def _sampled_decode(video_path: str, file_key: tuple[int, int] | None, total_frames: int,
                    sample_seconds: float) -> DecodeSample:
    return measure_decode(video_path, total_frames, sample_seconds=sample_seconds)


def _file_key(video_path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(video_path)
    except OSError:
        return None  # measure_decode names the problem
    return st.st_size, st.st_mtime_ns
