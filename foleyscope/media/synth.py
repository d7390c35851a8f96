"""Synthetic media with the frame index drawn into every frame, made with PyAV.

Tests, benchmarks and the doctor's planted cases use these files: because each frame carries its
own index as horizontal black/white bands (one bit a band, most significant first), a decoded and
resized frame can be read back with `read_index` to check *which* frame a sampler picked, not only
its shape. Bands span the full width, so squashing and centre-cropping a landscape frame keep them.
"""

from __future__ import annotations

import math
import struct
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
    audio_seconds: float | None = None  # length of the audio track; None: as long as the video
    vfr: bool = False  # frame gaps alternate between 1 and 2 frame periods
    video: bool = True
    bit_rate: int | None = None
    # Display rotation (clockwise degrees, like a phone's `rotate` tag): frames are stored turned the
    # other way (stored size is height x width for 90/270) and the MP4/MOV track matrix says how to
    # show them, so a player that honours rotation shows index_frame upright at width x height.
    rotation: int = 0


def frame_times(spec: SynthSpec) -> list[float]:
    """Presentation times (s) of the frames `make_video` writes for `spec`."""
    period = 1 / float(spec.fps)
    times, t, i = [], 0.0, 0
    while t < spec.seconds - 1e-9:
        times.append(t)
        t += period * (2 if spec.vfr and i % 2 else 1)
        i += 1
    return times


def make_video(path: str | Path, spec: SynthSpec | None = None) -> Path:
    """Write a clip whose frame i (in presentation order) shows index i; return its path."""
    spec = spec or SynthSpec()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if spec.rotation % 360 not in (0, 90, 180, 270):
        raise ValueError(f"rotation must be a multiple of 90, got {spec.rotation}")
    if spec.rotation % 360 and path.suffix.lower() not in (".mp4", ".mov", ".m4v"):
        raise ValueError("rotation metadata is only written for MP4/MOV files")
    turns = spec.rotation % 360 // 90
    width, height = (spec.height, spec.width) if turns % 2 else (spec.width, spec.height)
    rate = Fraction(spec.fps).limit_denominator(1001)
    with av.open(str(path), "w") as out:
        vstream = astream = None
        if spec.video:
            vstream = out.add_stream(spec.codec, rate=rate)
            vstream.width, vstream.height, vstream.pix_fmt = width, height, spec.pix_fmt
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
                rgb = np.ascontiguousarray(np.rot90(index_frame(i, spec.width, spec.height), k=turns))
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame = frame.reformat(format=spec.pix_fmt)
                frame.pts = round(t / float(time_base))
                frame.time_base = time_base
                for packet in vstream.encode(frame):
                    out.mux(packet)
            for packet in vstream.encode():
                out.mux(packet)
        if astream is not None:
            _write_tone(out, astream, spec)
    if turns:
        _set_mp4_rotation(path, spec.rotation % 360)
    return path


def _boxes(buf: bytes | bytearray, start: int, end: int):
    """Yield (type, payload_start, box_end) for the ISO-BMFF boxes in buf[start:end]."""
    i = start
    while i + 8 <= end:
        size, kind = struct.unpack(">I4s", buf[i : i + 8])
        head = 8
        if size == 1:
            size, head = struct.unpack(">Q", buf[i + 8 : i + 16])[0], 16
        elif size == 0:
            size = end - i
        if size < head:
            return
        yield kind, i + head, i + size
        i += size


def _set_mp4_rotation(path: Path, degrees: int) -> None:
    """Write a clockwise display rotation into the video track header's matrix (as phones do)."""
    buf = bytearray(path.read_bytes())
    c, s = round(math.cos(math.radians(degrees))), round(math.sin(math.radians(degrees)))
    matrix = struct.pack(">9i", c << 16, s << 16, 0, -s << 16, c << 16, 0, 0, 0, 1 << 30)
    for kind, start, end in _boxes(buf, 0, len(buf)):
        if kind != b"moov":
            continue
        for trak, t0, t1 in _boxes(buf, start, end):
            children = {k: (a, b) for k, a, b in _boxes(buf, t0, t1)} if trak == b"trak" else {}
            if b"tkhd" not in children or b"mdia" not in children:
                continue
            mdia = {k: a for k, a, _ in _boxes(buf, *children[b"mdia"])}
            if b"hdlr" in mdia and buf[mdia[b"hdlr"] + 8 : mdia[b"hdlr"] + 12] == b"vide":
                tkhd = children[b"tkhd"][0]
                # The matrix follows version/flags, two times, track id, duration (64-bit times and
                # duration in version 1) and 16 bytes of reserved/layer/group/volume fields.
                off = tkhd + (52 if buf[tkhd] == 1 else 40)
                buf[off : off + 36] = matrix
    path.write_bytes(buf)


def _write_tone(out: av.container.OutputContainer, stream: av.AudioStream, spec: SynthSpec) -> None:
    """A 440 Hz tone with a click every half second, in encoder-sized chunks."""
    sr = spec.sample_rate
    n = int((spec.seconds if spec.audio_seconds is None else spec.audio_seconds) * sr)
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
        frame.time_base = Fraction(1, sr)
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
