"""Long videos: plan overlapping model windows and cross-fade their audio into one track.

The official code stops at 15 s. We cover any duration with equal-length windows (so they batch
together and share one compiled shape) whose starts lie on whole seconds, the common grid of the
8 fps, 25 fps and 50 Hz latent clocks, so every window sees exactly the same frame and latent
counts. Neighbours overlap by at least `overlap_s` and are joined with an equal-power fade, which
keeps the loudness of uncorrelated material constant across the seam (no dip, no click)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Window:
    start_s: float
    length_s: float

    @property
    def end_s(self) -> float:
        return self.start_s + self.length_s


def plan_windows(duration_s: float, window_s: float = 15.0, overlap_s: float = 2.0, fps: float = 25.0) -> list[Window]:
    """One window for a clip that fits; else n windows of `window_s` with starts on whole seconds."""
    if duration_s <= 0:
        raise ValueError("duration must be positive")
    if duration_s <= window_s:
        return [Window(0.0, math.ceil(duration_s * fps - 1e-6) / fps)]
    if not 0 <= overlap_s < window_s - 1:
        raise ValueError("overlap must be at least 0 and more than 1 s shorter than the window")
    last = math.ceil(duration_s - window_s)  # last start: its window ends at or after the clip's end
    n = max(2, math.ceil((duration_s - overlap_s) / (window_s - overlap_s)))
    while True:
        starts = sorted({round(i * last / (n - 1)) for i in range(n)})
        if min(window_s - (b - a) for a, b in zip(starts, starts[1:], strict=False)) >= overlap_s:
            return [Window(float(s), window_s) for s in starts]
        n += 1


def crossfade(windows: list[Window], audio: list[np.ndarray], sample_rate: int, duration_s: float) -> np.ndarray:
    """Join per-window mono tracks into one track of exactly round(duration_s * sample_rate) samples."""
    total = round(duration_s * sample_rate)
    if len(windows) == 1:
        track = audio[0][:total]
        return np.pad(track, (0, total - len(track))).astype(np.float32)
    span = round(windows[-1].end_s * sample_rate)
    out = np.zeros(max(span, total), dtype=np.float64)
    for i, (win, clip) in enumerate(zip(windows, audio, strict=True)):
        start = round(win.start_s * sample_rate)
        gain = np.ones(len(clip))
        if i > 0:  # fade in over the overlap with the previous window
            n = round((windows[i - 1].end_s - win.start_s) * sample_rate)
            gain[:n] *= np.sin(0.5 * np.pi * (np.arange(n) + 0.5) / n)
        if i < len(windows) - 1:  # fade out over the overlap with the next window
            n = round((win.end_s - windows[i + 1].start_s) * sample_rate)
            gain[len(clip) - n :] *= np.cos(0.5 * np.pi * (np.arange(n) + 0.5) / n)
        out[start : start + len(clip)] += clip * gain
    return out[:total].astype(np.float32)
