"""Input normalisation (step 4 of the slowness diagnosis): any video -> upright H.264 MP4 at a fixed
height and constant frame rate, trimmed, audio as AAC. Done with PyAV alone, no ffmpeg binary.

Why each choice: the engine's decode cost grows with pixels and frames, so big or high-rate inputs
are scaled down (never up) and resampled to a constant rate; output frame k (at k / fps seconds from
the video's start) shows the source frame on screen at that time (the latest one at or before it),
the same rule the frame extractor uses, so prepping first does not shift what the model sees.
Scaling happens inside swscale while converting to yuv420p, never on full-size RGB in Python.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from foleyscope.errors import FoleyscopeError, MediaError
from foleyscope.media.atomic import atomic_output
from foleyscope.media.container import _reason, open_input, video_stream
from foleyscope.media.probe import MAX_DIMENSION, MediaInfo, as_fraction, probe
from foleyscope.media.span import first_shown_pts

X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
                "veryslow", "placebo")
AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)

Progress = Callable[[float, float], None]  # (seconds of output written, seconds expected)


def output_size(info: MediaInfo, height: int, sample_aspect: Fraction | None = None) -> tuple[int, int]:
    """Upright output (width, height): target height kept below the source's, even, aspect kept."""
    aspect = Fraction(info.width, info.height) * (sample_aspect or 1)  # stored picture, square pixels
    if info.rotation in (90, 270):
        aspect = 1 / aspect
    out_h = max(2, min(height, info.display_height) // 2 * 2)
    out_w = max(2, round(out_h * aspect / 2) * 2)
    return out_w, out_h


def check_options(dst: Path, height: int, fps: float, max_seconds: float, crf: int, preset: str) -> None:
    if dst.suffix.lower() != ".mp4":
        raise FoleyscopeError(f"output must be an .mp4 file, got '{dst.name}'")
    if isinstance(height, bool) or not isinstance(height, int) or not 2 <= height <= MAX_DIMENSION:
        raise FoleyscopeError(f"height must be a whole number from 2 to {MAX_DIMENSION}, got {height}")
    if not (math.isfinite(fps) and 0 < fps <= 240):
        raise FoleyscopeError(f"fps must be above 0 and at most 240, got {fps}")
    if not (math.isfinite(max_seconds) and max_seconds > 0):
        raise FoleyscopeError(f"max seconds must be a positive number, got {max_seconds}")
    if isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= 51:
        raise FoleyscopeError(f"crf must be a whole number from 0 to 51, got {crf}")
    if preset not in X264_PRESETS:
        raise FoleyscopeError(f"preset must be one of {', '.join(X264_PRESETS)}, got '{preset}'")


def prep(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    height: int = 720,
    fps: float = 25.0,
    max_seconds: float = 15.0,
    crf: int = 23,
    preset: str = "fast",
    progress: Progress | None = None,
) -> MediaInfo:
    """Write the normalised copy of `src` to `dst` (atomically) and return the probe of `dst`."""
    src, dst = Path(src), Path(dst)
    check_options(dst, height, fps, max_seconds, crf, preset)
    if dst.resolve() == src.resolve():
        raise FoleyscopeError(f"{dst}: output would overwrite the input")
    info = probe(src)
    with atomic_output(dst) as tmp:
        _convert(src, tmp, info, height, as_fraction(fps), max_seconds, crf, preset, progress)
        out = probe(tmp)
    return out


class _Converter:
    """Source frame -> output frame: swscale resize + yuv420p, then a lossless turn if rotated."""

    def __init__(self, info: MediaInfo, width: int, height: int, rate: Fraction):
        turned = info.rotation in (90, 270)
        self.size = (height, width) if turned else (width, height)  # before turning
        self.scaler = VideoReformatter()
        self.graph = None
        if info.rotation:
            self.graph = av.filter.Graph()
            node = self.graph.add_buffer(width=self.size[0], height=self.size[1], format="yuv420p",
                                         time_base=1 / rate)
            steps = {90: [("transpose", "clock")], 270: [("transpose", "cclock")],
                     180: [("hflip", None), ("vflip", None)]}[info.rotation]
            for name, arg in steps:
                nxt = self.graph.add(name, arg)
                node.link_to(nxt)
                node = nxt
            node.link_to(self.graph.add("buffersink"))
            self.graph.configure()

    def __call__(self, frame: av.VideoFrame) -> av.VideoFrame:
        w, h = self.size
        out = self.scaler.reformat(frame, width=w, height=h, format="yuv420p",
                                   interpolation=Interpolation.BICUBIC)
        if self.graph is not None:
            out.pts = 0
            self.graph.push(out)
            out = self.graph.pull()
        return out


def _convert(src: Path, tmp: Path, info: MediaInfo, height: int, rate: Fraction, max_seconds: float,
             crf: int, preset: str, progress: Progress | None) -> None:
    container = open_input(src)
    where = "decoding"
    t_now = 0.0
    try:
        vin = video_stream(container)
        vin.thread_type = "AUTO"
        ain = container.streams.audio[0] if container.streams.audio else None
        if ain is not None and ain.codec_context is None:
            raise MediaError(f"{src}: the audio codec has no decoder in this FFmpeg build")
        width, out_h = output_size(info, height, vin.sample_aspect_ratio)
        convert = _Converter(info, width, out_h, rate)
        n_max = math.ceil(Fraction(max_seconds) * rate)
        total_s = min(info.duration_s, max_seconds)
        tb = vin.time_base
        first = first_shown_pts(src)  # where the video starts (span.py), as probe and extract_frames say
        origin = Fraction(first * tb) if first is not None else None
        audio = _AudioCollector(ain, n_max / rate) if ain is not None else None

        with av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as out:
            vout = out.add_stream("libx264", rate=rate)
            vout.width, vout.height, vout.pix_fmt = width, out_h, "yuv420p"
            vout.options = {"crf": str(crf), "preset": preset}
            aout = audio.add_output(out) if audio is not None else None

            k = 0  # next output frame
            held: av.VideoFrame | None = None  # latest source frame so far (shown until the next one)
            held_out: av.VideoFrame | None = None  # its converted form, made only if some k picks it
            held_end = Fraction(0)

            def emit_until(t: Fraction) -> None:
                nonlocal k, held_out, where, t_now
                while k < n_max and Fraction(k) / rate < t:
                    if held_out is None:
                        held_out = convert(held)
                    held_out.pts, held_out.time_base = k, 1 / rate
                    where = "encoding"
                    for packet in vout.encode(held_out):
                        out.mux(packet)
                    where = "decoding"
                    k += 1
                    t_now = float(k / rate)
                    if progress is not None:
                        progress(min(t_now, total_s), total_s)

            video_done = False
            for packet in container.demux(*(s for s in (vin, ain) if s is not None)):
                if packet.stream is vin and not video_done:
                    for frame in packet.decode():
                        t = Fraction(frame.pts * tb) if frame.pts is not None else held_end
                        if origin is None:
                            origin = t
                        if held is not None:
                            emit_until(t - origin)
                        held, held_out = frame, None
                        step = frame.duration * tb if frame.duration else 1 / as_fraction(info.fps)
                        held_end = t + step
                    video_done = k >= n_max
                elif audio is not None and packet.stream is ain and not audio.done:
                    audio.add(packet.decode(), origin or 0)
                if video_done and (audio is None or audio.done):
                    break
            if held is not None and origin is not None:
                emit_until(held_end - origin)  # the last frame stays on screen for its duration
            if k == 0:
                raise MediaError(f"{src}: no video frame could be decoded")
            where = "encoding"
            for packet in vout.encode():
                out.mux(packet)
            if aout is not None:
                audio.encode(out, aout, Fraction(k) / rate)
    except av.error.FFmpegError as exc:
        raise MediaError(f"{src}: {where} failed near {t_now:.2f} s ({_reason(exc)})") from None
    finally:
        container.close()


class _AudioCollector:
    """Decoded audio resampled to an AAC-friendly rate, kept from the video's start, trimmed at the end."""

    def __init__(self, stream: av.audio.stream.AudioStream, max_s: Fraction):
        cc = stream.codec_context
        self.rate = cc.sample_rate if cc.sample_rate in AAC_RATES else 48000
        self.layout = "mono" if cc.channels == 1 else "stereo"
        self.channels = 1 if cc.channels == 1 else 2
        self.resampler = av.AudioResampler(format="fltp", layout=self.layout, rate=self.rate)
        self.cap = math.ceil(max_s * self.rate)
        self.chunks: list[np.ndarray] = []
        self.count = 0
        self.skip: int | None = None  # samples still to drop; None until the first frame arrives
        self.done = False

    def add(self, frames: list[av.AudioFrame], origin: Fraction) -> None:
        for frame in frames:
            if self.skip is None:  # first frame: line the audio up with the video's first frame
                lead = round((frame.time - float(origin)) * self.rate) if frame.time is not None else 0
                self.skip = max(0, -lead)  # audio starts before the video: drop what precedes it
                if lead > 0:  # audio starts late: silence until it does
                    self._keep(np.zeros((self.channels, lead), np.float32))
            for res in self.resampler.resample(frame):
                self._keep(res.to_ndarray())
        self.done = self.count >= self.cap

    def _keep(self, samples: np.ndarray) -> None:
        drop = min(self.skip or 0, samples.shape[1])
        self.skip = (self.skip or 0) - drop
        if samples.shape[1] > drop:
            self.chunks.append(samples[:, drop:])
            self.count += samples.shape[1] - drop

    def add_output(self, out: av.container.OutputContainer) -> av.audio.stream.AudioStream:
        stream = out.add_stream("aac", rate=self.rate)
        stream.layout = self.layout
        stream.bit_rate = 96000 if self.layout == "mono" else 160000
        return stream

    def encode(self, out: av.container.OutputContainer, stream: av.audio.stream.AudioStream,
               duration: Fraction) -> None:
        """Encode exactly `duration` seconds: trimmed, or padded with silence if the track is short."""
        n = round(duration * self.rate)
        if not self.done:
            for res in self.resampler.resample(None):  # what the resampler still holds
                self._keep(res.to_ndarray())
        wave = np.concatenate(self.chunks, 1) if self.chunks else np.zeros((self.channels, 0), np.float32)
        wave = np.pad(wave[:, :n], ((0, 0), (0, max(0, n - wave.shape[1]))))
        wave = np.ascontiguousarray(wave, dtype=np.float32)
        size = stream.codec_context.frame_size or 1024
        for start in range(0, n, size):
            frame = av.AudioFrame.from_ndarray(wave[:, start : start + size], format="fltp",
                                               layout=self.layout)
            frame.sample_rate, frame.pts = self.rate, start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
