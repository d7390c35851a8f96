"""Long videos: plan overlapping model windows, denoise them jointly, and join their audio.

The official code stops at 15 s. We cover any duration with equal-length windows (so they batch
together and share one compiled shape) whose starts lie on whole seconds, the common grid of the
8 fps, 25 fps and 50 Hz latent clocks, so every window sees exactly the same frame and latent
counts. Neighbours overlap by at least `overlap_s`.

Independent takes joined by a cross-fade change the level at the seam: two takes of the same
pictures are correlated (about 70% on a looped clip), so an equal-power fade adds up to +2.3 dB and
clips. Instead the windows are denoised jointly (MultiDiffusion): they share one noise timeline, and
after every sampler step each overlapping latent frame is replaced by its mean over the windows that
hold it (`LatentLayout.average`), so the windows end on the same latents where they overlap. Their
audio is then nearly identical there and a short linear fade in the middle of the overlap joins it
without a level change (`join`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

JOIN_FADE_S = 0.25  # linear fade at the middle of each overlap (away from the VAE's window edges)
TAIL_FADE_S = 0.005  # where the model's audio stops a few ms before the video does


def official_latent_count(frames: int, fps: float = 25.0, rate: int = 50) -> int:
    """The official pipeline's latent length for `frames` samples at `fps`: int(frames / fps * rate).
    The float truncation gives 2T-1 instead of 2T for some T (29, 57, 58, 113-116, ...); it is kept
    on purpose, so the same noise gives the same latents as the official code."""
    return int(frames / fps * rate)


def fit(track: np.ndarray, total: int, sample_rate: int) -> np.ndarray:
    """`track` trimmed to `total` samples, or padded with silence after a short fade-out (no click)."""
    if len(track) >= total:
        return track[:total]
    n = min(len(track), round(TAIL_FADE_S * sample_rate))
    out = np.zeros(total, dtype=np.float32)
    out[: len(track)] = track
    if n:
        out[len(track) - n : len(track)] *= ((np.arange(n, 0, -1) - 0.5) / n).astype(np.float32)
    return out


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


class LatentLayout:
    """Where each window's latent frames lie on the clip's one latent timeline."""

    def __init__(self, windows: list[Window], latent_len: int, rate: int) -> None:
        starts = [round(w.start_s * rate) for w in windows]
        self.total = starts[-1] + latent_len
        self.index = torch.tensor([s + i for s in starts for i in range(latent_len)])  # [W * L]
        self.shape = (len(windows), latent_len)
        counts = torch.zeros(self.total).index_add_(0, self.index, torch.ones(len(self.index)))
        self.inv_counts = 1.0 / counts
        self._placed: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def _on(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(index, 1 / copies) on `like`'s device and dtype, copied there once: `average` runs every
        step, and a host-to-GPU copy per step would sync the loop."""
        key = (like.device, like.dtype)
        if key not in self._placed:
            self._placed[key] = (self.index.to(like.device), self.inv_counts.to(like))
        return self._placed[key]

    def noise(self, channels: int, generator: torch.Generator) -> torch.Tensor:
        """[W, C, L] noise drawn once on the timeline: overlapping frames start from the same noise
        (a single window draws exactly what torch.randn(1, C, L) would)."""
        timeline = torch.randn(channels, self.total, generator=generator)
        return self.split(timeline)

    def split(self, timeline: torch.Tensor) -> torch.Tensor:
        """[C, total] -> [W, C, L]"""
        w, length = self.shape
        return timeline[:, self._on(timeline)[0]].reshape(-1, w, length).transpose(0, 1).contiguous()

    def average(self, x: torch.Tensor) -> torch.Tensor:
        """[W, C, L] -> [W, C, L] with every latent frame the mean of its copies in all windows."""
        c = x.shape[1]
        idx, inv_counts = self._on(x)
        timeline = torch.zeros(c, self.total, dtype=x.dtype, device=x.device)
        timeline.index_add_(1, idx, x.transpose(0, 1).reshape(c, -1))
        return self.split(timeline.mul_(inv_counts))


def join(windows: list[Window], audio: list[np.ndarray], sample_rate: int, duration_s: float,
         fade_s: float = JOIN_FADE_S) -> np.ndarray:
    """Join per-window mono tracks into one track of exactly round(duration_s * sample_rate) samples.

    Each seam is a linear fade of `fade_s` centred in the overlap: jointly denoised windows carry
    nearly the same audio there, and weights that sum to one keep its level."""
    total = round(duration_s * sample_rate)
    seams = []  # (first sample of the fade, its length) on the track's clock
    for a, b in zip(windows, windows[1:], strict=False):
        overlap = round((a.end_s - b.start_s) * sample_rate)
        n = max(1, min(round(fade_s * sample_rate), overlap))
        seams.append((round(b.start_s * sample_rate) + (overlap - n) // 2, n))
    out = np.zeros(max(round(windows[-1].end_s * sample_rate), total), dtype=np.float32)
    for i, (win, clip) in enumerate(zip(windows, audio, strict=True)):
        start = round(win.start_s * sample_rate)
        t = np.arange(start, start + len(clip)) + 0.5
        gain = np.ones(len(clip))
        if i > 0:  # fade in over the previous seam
            at, n = seams[i - 1]
            gain *= np.clip((t - at) / n, 0.0, 1.0)
        if i < len(seams):  # fade out over the next one
            at, n = seams[i]
            gain *= np.clip((at + n - t) / n, 0.0, 1.0)
        out[start : start + len(clip)] += (clip * gain).astype(np.float32)
    return fit(out[: round(windows[-1].start_s * sample_rate) + len(audio[-1])], total, sample_rate)
