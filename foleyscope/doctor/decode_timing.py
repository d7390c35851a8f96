"""The doctor's decode measurements (steps 2 and 4): a timed one-pass decode of the input at the model's
geometry, and the same decode of the file `foleyscope prep` would write from it.

Every decode saving the doctor prints is a difference of these measurements, not a model of codec
costs: the reference is our own `extract_frames` at the model's two frame specs (the decode the
engine runs), on a bounded sample of the file (about SAMPLE_WALL_S of decoding), extrapolated by
length. Each timing is the best of a few runs, cached per file version and process so that the checks
of one diagnosis price one and the same measurement.
"""

from __future__ import annotations

import functools
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foleyscope.media.frames import SIGLIP2, SYNCHFORMER, FrameSpec, extract_frames

REFERENCE_SPECS: tuple[FrameSpec, ...] = (SIGLIP2, SYNCHFORMER)  # what the model needs from the video
SAMPLE_WALL_S = 1.0  # a reference sample aims at about this much decoding
MIN_SAMPLE_S = 0.5  # media seconds: shorter samples are dominated by start-up
MAX_SAMPLE_S = 60.0  # media seconds: prep runs on the sample too, and its cost is not the decode's
FALLBACK_SAMPLE_S = 2.0  # media seconds when the run has no decode stage to size the sample from
_RUNS = (2, 5, 0.5)  # at least 2 runs, at most 5, stop after 2 once the runs took this long together


@dataclass(frozen=True)
class DecodeTiming:
    """A timed one-pass decode of the first `media_s` seconds of a file of `duration_s` seconds."""

    media_s: float
    duration_s: float
    runs_s: tuple[float, ...]  # wall seconds per run
    cpu_runs_s: tuple[float, ...] = ()  # process CPU seconds per run (all threads: FFmpeg's, the scaler's)

    @property
    def best_s(self) -> float:
        return min(self.runs_s)

    @property
    def cpu_s(self) -> float | None:
        """The least CPU a run took: the work itself, which other processes on the machine barely change."""
        return min(self.cpu_runs_s) if self.cpu_runs_s else None

    @property
    def spread_s(self) -> float:
        return max(self.runs_s) - min(self.runs_s)

    @property
    def sampled(self) -> bool:
        return self.media_s < self.duration_s - 1e-3

    @property
    def scale(self) -> float:
        """Whole file over sample (its start-up cost scaled too: the whole-file numbers are upper bounds)."""
        return self.duration_s / self.media_s if self.sampled and self.media_s > 0 else 1.0

    @property
    def full_s(self) -> float:
        return self.best_s * self.scale

    @property
    def full_cpu_s(self) -> float | None:
        return None if self.cpu_s is None else self.cpu_s * self.scale

    def describe(self) -> str:
        what = f"{self.media_s:.2f} s of video" if self.sampled else "the whole file"
        runs = ", ".join(f"{r:.3f}" for r in self.runs_s)
        cpu = f", {self.cpu_s:.3f} s of CPU" if self.cpu_s is not None else ""
        scaled = f", scaled to {self.duration_s:.2f} s: {self.full_s:.3f} s" if self.sampled else ""
        return f"{what} in {self.best_s:.3f} s (best of {len(self.runs_s)} runs: {runs} s){cpu}{scaled}"

    def to_dict(self) -> dict[str, Any]:
        return {"media_s": round(self.media_s, 3), "duration_s": round(self.duration_s, 3),
                "best_s": round(self.best_s, 4), "spread_s": round(self.spread_s, 4),
                "full_s": round(self.full_s, 4), "runs": len(self.runs_s),
                "cpu_s": None if self.cpu_s is None else round(self.cpu_s, 4),
                "full_cpu_s": None if self.full_cpu_s is None else round(self.full_cpu_s, 4)}


@dataclass(frozen=True)
class PreppedDecode:
    """`prep` run on a sample of the input, and the reference decode of what it wrote."""

    prep_s: float  # wall time of prep on the sample
    timing: DecodeTiming


def sample_seconds(duration_s: float, decode_s: float | None = None, fallback_s: float = FALLBACK_SAMPLE_S) -> float:
    """How much of the file to decode: all of it when the run's decode stage took under 2 x SAMPLE_WALL_S,
    else about SAMPLE_WALL_S of work at the stage's rate (`decode_s` for the whole file); `fallback_s` of
    media when the run has no decode stage; never more than the file or MAX_SAMPLE_S."""
    if decode_s and decode_s <= 2 * SAMPLE_WALL_S:
        return min(duration_s, MAX_SAMPLE_S)  # cheap enough to decode whole: nothing to extrapolate
    want = duration_s * SAMPLE_WALL_S / decode_s if decode_s and decode_s > 0 else fallback_s
    return min(duration_s, MAX_SAMPLE_S, max(MIN_SAMPLE_S, want))


def reference_decode(video_path: str, media_s: float, duration_s: float) -> DecodeTiming:
    """One-pass decode of [0, media_s) at REFERENCE_SPECS (extract_frames, as the engine decodes)."""
    return _reference(video_path, _file_key(video_path), round(media_s, 3), round(duration_s, 3))


def prepped_decode(video_path: str, media_s: float, prep_kwargs: dict[str, Any]) -> PreppedDecode:
    """prep the first `media_s` seconds with `prep_kwargs` (max_seconds aside) into a temporary file,
    then time its reference decode: what the decode costs after the fix, on the same sample."""
    kw = tuple(sorted((k, v) for k, v in prep_kwargs.items() if k != "max_seconds"))
    return _prepped(video_path, _file_key(video_path), round(media_s, 3), kw)


Times = tuple[float, ...]


def timed_runs(fn: Callable[[], Any], runs: tuple[int, int, float] = _RUNS) -> tuple[Times, Times]:
    """(wall, process CPU) seconds of repeated calls: a few, more when each is short (short ones are noisier)."""
    least, most, enough_s = runs
    wall: list[float] = []
    cpu: list[float] = []
    while len(wall) < most and (len(wall) < least or sum(wall) < enough_s):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return tuple(wall), tuple(cpu)


@functools.lru_cache(maxsize=32)
def _reference(video_path: str, file_key: tuple[int, int] | None, media_s: float, duration_s: float) -> DecodeTiming:
    end = media_s if media_s < duration_s - 1e-3 else None
    wall, cpu = timed_runs(lambda: extract_frames(video_path, REFERENCE_SPECS, end=end))
    return DecodeTiming(media_s if end is not None else duration_s, duration_s, wall, cpu)


@functools.lru_cache(maxsize=32)
def _prepped(video_path: str, file_key: tuple[int, int] | None, media_s: float,
             kw: tuple[tuple[str, Any], ...]) -> PreppedDecode:
    from foleyscope.media.prep import prep

    with tempfile.TemporaryDirectory(prefix="foleyscope-doctor-prep-") as tmp:
        out = Path(tmp) / "sample.mp4"
        t0 = time.perf_counter()
        info = prep(video_path, out, max_seconds=media_s, **dict(kw))
        prep_s = time.perf_counter() - t0
        wall, cpu = timed_runs(lambda: extract_frames(out, REFERENCE_SPECS))
    return PreppedDecode(prep_s, DecodeTiming(info.duration_s, info.duration_s, wall, cpu))


def _file_key(video_path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(video_path)
    except OSError:
        return None  # extract_frames names the problem
    return st.st_size, st.st_mtime_ns
