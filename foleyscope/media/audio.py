"""Write generated audio to a file, and mux it into the source video without re-encoding the video.

Format choices (by suffix):
  .wav   24-bit PCM (soundfile). 24 bits keep ~144 dB of dynamic range, far below any model's noise
         floor, and unlike float WAV every player and editor reads it. Samples are clipped to [-1, 1].
  .flac  24-bit FLAC (soundfile), lossless and about half the size.
  .mp3   libmp3lame 192 kbit/s CBR.   .m4a / .aac  AAC 192 kbit/s (MP4 audio / raw ADTS).
  .opus / .ogg  libopus 128 kbit/s in Ogg; resampled to 48 kHz when the rate is not one Opus has.
Every write goes to a temp file that is renamed into place, so a failure leaves nothing behind.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile

from foleyscope.errors import FoleyscopeError, MediaError
from foleyscope.media.atomic import atomic_output
from foleyscope.media.container import open_input, video_stream
from foleyscope.media.mux_target import VIDEO_SUFFIXES, add_copy_stream, check_mux_target, mux_target
from foleyscope.media.span import SpanTracker, first_shown_pts


@dataclass(frozen=True)
class _Lossy:
    codec: str
    container: str
    bit_rate: int  # per stream (mono or stereo)


_PCM = {".wav": "WAV", ".flac": "FLAC"}
_LOSSY = {
    ".mp3": _Lossy("libmp3lame", "mp3", 192_000),
    ".m4a": _Lossy("aac", "ipod", 192_000),
    ".aac": _Lossy("aac", "adts", 192_000),
    ".opus": _Lossy("libopus", "opus", 128_000),
    ".ogg": _Lossy("libopus", "ogg", 128_000),
}
AUDIO_SUFFIXES = tuple(_PCM) + tuple(_LOSSY)
__all__ = ["AUDIO_SUFFIXES", "VIDEO_SUFFIXES", "check_mux_target", "mux", "write_audio"]
_CHUNK = 4800  # samples handed to an encoder at a time (0.1 s at 48 kHz)


def _channels_first(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Validate and return float32 [C, T] clipped to [-1, 1]."""
    if not isinstance(sample_rate, int | np.integer) or sample_rate <= 0:
        raise FoleyscopeError(f"sample rate must be a positive integer, got {sample_rate!r}")
    data = np.asarray(samples)
    if data.ndim == 1:
        data = data[None, :]
    if data.ndim != 2 or data.shape[0] < 1:
        raise FoleyscopeError(f"audio must be shaped [T] or [C, T], got {np.shape(samples)}")
    if data.shape[0] > max(data.shape[1], 2):  # [T, C] passed by mistake
        raise FoleyscopeError(f"audio shaped {data.shape} has more channels than samples; pass [C, T]")
    data = data.astype(np.float32, copy=False)
    if not np.isfinite(data).all():
        raise FoleyscopeError("audio contains NaN or infinite samples")
    return np.clip(data, -1.0, 1.0)


def write_audio(path: str | os.PathLike[str], samples: np.ndarray, sample_rate: int) -> Path:
    """Write float samples ([T] or [C, T], in [-1, 1]) in the format named by `path`'s suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in AUDIO_SUFFIXES:
        raise FoleyscopeError(
            f"{path}: unsupported audio format {suffix or '(no suffix)'}; use one of {', '.join(AUDIO_SUFFIXES)}"
        )
    data = _channels_first(samples, sample_rate)
    if data.shape[1] == 0:
        raise FoleyscopeError(f"{path}: no audio samples to write")
    if suffix in _LOSSY and data.shape[0] > 2:
        raise FoleyscopeError(f"{path}: {suffix} output takes mono or stereo, got {data.shape[0]} channels")
    with atomic_output(path) as tmp:
        if suffix in _PCM:
            soundfile.write(tmp, data.T, sample_rate, subtype="PCM_24", format=_PCM[suffix])
        else:
            spec = _LOSSY[suffix]
            try:
                with av.open(str(tmp), "w", format=spec.container) as out:
                    stream = _add_audio_stream(out, spec.codec, sample_rate, data.shape[0], spec.bit_rate)
                    _encode(out, stream, data, sample_rate, 0, data.shape[1])
            except av.error.FFmpegError as exc:
                raise MediaError(f"{path}: could not encode {suffix} audio ({exc})") from None
    return path


def _add_audio_stream(
    out: av.container.OutputContainer, codec: str, sample_rate: int, channels: int, bit_rate: int
) -> av.AudioStream:
    rates = av.codec.Codec(codec, "w").audio_rates
    rate = sample_rate if not rates or sample_rate in rates else 48000  # the encoder resamples
    stream = out.add_stream(codec, rate=rate)
    stream.layout = "mono" if channels == 1 else "stereo"
    stream.bit_rate = bit_rate
    return stream


def _encode(
    out: av.container.OutputContainer,
    stream: av.AudioStream,
    data: np.ndarray,
    sample_rate: int,
    first: int,
    stop: int,
    *,
    flush: bool = True,
) -> None:
    """Encode samples [first, stop) of `data` ([C, T]; zeros past its end), then flush if asked."""
    layout = "mono" if data.shape[0] == 1 else "stereo"
    for a in range(first, stop, _CHUNK):
        b = min(stop, a + _CHUNK)
        block = np.zeros((data.shape[0], b - a), np.float32)
        have = max(0, min(b, data.shape[1]) - a)
        block[:, :have] = data[:, a : a + have]
        frame = av.AudioFrame.from_ndarray(block, format="fltp", layout=layout)
        frame.sample_rate = sample_rate
        frame.time_base = Fraction(1, sample_rate)
        frame.pts = a
        out.mux(stream.encode(frame))
    if flush:
        out.mux(stream.encode(None))


def mux(
    video_path: str | os.PathLike[str],
    samples: np.ndarray,
    sample_rate: int,
    out_path: str | os.PathLike[str],
) -> Path:
    """Copy `video_path`'s first video stream packet for packet into `out_path` (VIDEO_SUFFIXES) with
    `samples` as its only audio: AAC 192 kbit/s (Opus 128 kbit/s in .webm, which takes no AAC), mono
    or stereo as given, trimmed or padded with silence to exactly the video's span (span.py).

    The output's clock starts at the video's first frame: an input that starts late (MPEG-TS/PS often
    do) has video and audio shifted to 0 together. The original audio and other streams are
    dropped. Container/codec misfits are refused up front, as `check_mux_target` does, never half-way.
    """
    out_path = Path(out_path)
    target = mux_target(out_path)
    data = _channels_first(samples, sample_rate)
    if data.shape[0] > 2:
        raise FoleyscopeError(f"mux takes mono or stereo audio, got {data.shape[0]} channels")
    check_mux_target(video_path, out_path)
    inp = open_input(video_path)
    try:
        vin = video_stream(inp)
        with atomic_output(out_path) as tmp:
            try:
                with av.open(str(tmp), "w", format=target.format) as out:
                    vout = add_copy_stream(out, vin)
                    aout = _add_audio_stream(out, target.audio_codec, sample_rate, data.shape[0], target.audio_bit_rate)
                    tracker = SpanTracker(inp, vin, first_shown_pts(video_path))
                    _copy_video(video_path, tracker, out, vout, aout, data, sample_rate)
            except av.error.FFmpegError as exc:
                raise MediaError(
                    f"{out_path}: could not write {vin.codec_context.name} video into "
                    f"{out_path.suffix} ({getattr(exc, 'strerror', None) or exc}); .mkv takes most codecs"
                ) from None
    finally:
        inp.close()
    return out_path


def _copy_video(
    video_path: object,
    tracker: SpanTracker,
    out: av.container.OutputContainer,
    vout: av.VideoStream,
    aout: av.AudioStream,
    data: np.ndarray,
    sample_rate: int,
) -> None:
    """The tracked video's packets into `vout`, shifted so its first frame is at 0, with the audio
    encoded alongside them."""
    inp, vin = tracker.container, tracker.stream
    tb, origin = tracker.time_base, tracker.origin
    out.start_encoding()  # the muxer picks the output time base here
    otb = vout.time_base or tb

    def rebase(ticks: int | None) -> int | None:
        return None if ticks is None else round((ticks - origin) * tb / otb)

    written, seen, last_dts = 0, 0, None
    for packet in inp.demux(vin):
        if packet.dts is None and packet.pts is None:
            continue  # the demuxer's end-of-stream marker
        seen += 1
        tracker.add(packet)
        pts, dts = rebase(packet.pts), rebase(packet.dts)
        if dts is not None and last_dts is not None and dts <= last_dts:
            dts = last_dts + 1  # guessed dts (MPEG-PS without a timestamp, Matroska has none) can repeat
            pts = None if pts is None else max(pts, dts)  # as ffmpeg's own stream copy repairs them
        last_dts = dts if dts is not None else last_dts
        duration = round(packet.duration * tb / otb) if packet.duration else 0
        packet.time_base, packet.pts, packet.dts, packet.duration = otb, pts, dts, duration
        t = float((pts if pts is not None else dts) * otb)
        packet.stream = vout
        out.mux(packet)
        # keep the audio level with the video, never past where the video has shown
        upto = min(math.floor(t * sample_rate), round((tracker.duration_s or 0.0) * sample_rate))
        if upto - written >= _CHUNK:
            _encode(out, aout, data, sample_rate, written, upto, flush=False)
            written = upto
    if not seen or tracker.duration_s is None:
        raise MediaError(f"{video_path}: the video stream has no packets")
    _encode(out, aout, data, sample_rate, written, round(tracker.duration_s * sample_rate))
