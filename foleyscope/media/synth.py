"""Synthetic media with the frame index drawn into every frame, made with PyAV.

Tests, benchmarks and the doctor's planted cases use these files: because each frame carries its
own index as horizontal black/white bands (one bit a band, most significant first), a decoded and
resized frame can be read back with `read_index` to check *which* frame a sampler picked, not only
its shape. Bands span the full width, so squashing and centre-cropping a landscape frame keep them.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

BITS = 12  # frame indices up to 4095


def index_frame(index: int, width: int, height: int) -> np.ndarray:
    """An RGB frame whose rows encode `index` in BITS bands; a grey ball moves along the bottom."""
    frame = np.zeros((height, width, 3), dtype=np.uint8)
    edges = np.linspace(0, height, BITS + 2).astype(int)  # BITS bands + one free band at the bottom
    for bit in range(BITS):
        if (index >> (BITS - 1 - bit)) & 1:
            frame[edges[bit] : edges[bit + 1]] = 255
    y0, y1 = edges[BITS], edges[BITS + 1]
    r = max(2, (y1 - y0) // 3)
    cx = int((index * 7) % max(1, width - 2 * r)) + r
    cy = (y0 + y1) // 2
    frame[cy - r : cy + r, max(0, cx - r) : cx + r] = (200, 60, 60)
    return frame


def read_index(rgb: np.ndarray) -> int:
    """Read back the index drawn by `index_frame` from an (H, W, 3) uint8 frame of any size."""
    height = rgb.shape[0]
    edges = np.linspace(0, height, BITS + 2)
    luma = rgb.astype(np.float32).mean(axis=2)
    value = 0
    for bit in range(BITS):
        a, b = edges[bit], edges[bit + 1]
        lo, hi = int(a + (b - a) * 0.3), int(b - (b - a) * 0.3)
        value = (value << 1) | int(luma[lo : max(hi, lo + 1)].mean() > 127)
    return value


@dataclass(frozen=True)
class SynthSpec:
    width: int = 320
    height: int = 180
    fps: Fraction | float | int = 25
    seconds: float = 2.0
    codec: str = "libx264"
    pix_fmt: str = "yuv420p"
    audio: bool = False
    audio_codec: str = "aac"
    sample_rate: int = 48000
    vfr: bool = False  # frame gaps alternate between 1 and 2 frame periods
    video: bool = True
    bit_rate: int | None = None


def frame_times(spec: SynthSpec) -> list[float]:
    """Presentation times (s) of the frames `make_video` writes for `spec`."""
    period = 1 / float(spec.fps)
    times, t, i = [], 0.0, 0
    while t < spec.seconds - 1e-9:
        times.append(t)
        t += period * (2 if spec.vfr and i % 2 else 1)
        i += 1
    return times


def make_video(path: str | Path, spec: SynthSpec = SynthSpec()) -> Path:
    """Write a clip whose frame i (in presentation order) shows index i; return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(spec.fps).limit_denominator(1001)
    with av.open(str(path), "w") as out:
        vstream = astream = None
        if spec.video:
            vstream = out.add_stream(spec.codec, rate=rate)
            vstream.width, vstream.height, vstream.pix_fmt = spec.width, spec.height, spec.pix_fmt
            if spec.bit_rate:
                vstream.bit_rate = spec.bit_rate
            if spec.codec == "libx264":
                vstream.options = {"crf": "12", "preset": "ultrafast"}
            elif spec.codec == "libx265":
                vstream.options = {"crf": "12", "preset": "ultrafast", "x265-params": "log-level=error"}
            elif spec.codec in ("libvpx-vp9", "libaom-av1"):
                vstream.options = {"crf": "20", "b": "0", "cpu-used": "8", "deadline": "realtime"}
            if spec.vfr:
                vstream.time_base = Fraction(1, 1000)
        if spec.audio:
            astream = out.add_stream(spec.audio_codec, rate=spec.sample_rate)
            astream.layout = "mono"
        if vstream is not None:
            time_base = vstream.time_base or Fraction(1, 1000) if spec.vfr else 1 / rate
            for i, t in enumerate(frame_times(spec)):
                frame = av.VideoFrame.from_ndarray(index_frame(i, spec.width, spec.height), format="rgb24")
                frame = frame.reformat(format=spec.pix_fmt)
                frame.pts = round(t / float(time_base))
                frame.time_base = time_base
                for packet in vstream.encode(frame):
                    out.mux(packet)
            for packet in vstream.encode():
                out.mux(packet)
        if astream is not None:
            _write_tone(out, astream, spec)
    return path


def _write_tone(out: av.container.OutputContainer, stream: av.AudioStream, spec: SynthSpec) -> None:
    """A 440 Hz tone with a click every half second, in encoder-sized chunks."""
    sr = spec.sample_rate
    n = int(spec.seconds * sr)
    t = np.arange(n) / sr
    wave = 0.2 * np.sin(2 * np.pi * 440 * t)
    wave[(np.arange(n) % (sr // 2)) < 200] += 0.5
    wave = wave.astype(np.float32)
    chunk = stream.codec_context.frame_size or 1024
    for start in range(0, n, chunk):
        block = wave[start : start + chunk][None, :]
        frame = av.AudioFrame.from_ndarray(block, format="fltp", layout="mono")
        frame.sample_rate = sr
        frame.pts = start
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
