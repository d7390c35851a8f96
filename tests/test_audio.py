"""Audio writing in every supported format, and muxing generated audio into the source video."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile

from foleyscope.errors import FoleyscopeError, MediaError
from foleyscope.media.audio import AUDIO_SUFFIXES, mux, write_audio
from foleyscope.media.synth import SynthSpec, index_frame, make_video

SR = 48000
AAC_FRAME = 1024 / SR


def tone(freq: float, seconds: float, sr: int = SR, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


def decode_audio(path: Path) -> tuple[np.ndarray, int, float, str]:
    """(samples [C, T], rate, start time in s, codec name) of the file's only audio stream."""
    with av.open(str(path)) as c:
        assert len(c.streams.audio) == 1
        stream = c.streams.audio[0]
        frames = list(c.decode(stream))
        start = float(frames[0].pts * frames[0].time_base)
        to_float = av.AudioResampler(format="fltp")  # planar float whatever the decoder gives
        data = np.concatenate([g.to_ndarray() for f in frames for g in to_float.resample(f)], axis=1)
        return data, stream.sample_rate, start, stream.codec_context.name


def peak_hz(x: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[spectrum.argmax()])


def no_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("suffix", AUDIO_SUFFIXES)
def test_write_audio_round_trips(tmp_path, suffix):
    x = tone(1000, 0.6)
    path = write_audio(tmp_path / f"out{suffix}", x, SR)
    assert no_leftovers(tmp_path) == [f"out{suffix}"]
    data, rate, start, codec = decode_audio(path)
    expected_codec = {
        ".wav": "pcm_s24le",
        ".flac": "flac",
        ".mp3": "mp3float",
        ".m4a": "aac",
        ".aac": "aac",
        ".opus": "opus",
        ".ogg": "opus",
    }[suffix]
    assert (codec, rate, data.shape[0]) == (expected_codec, SR, 1)
    duration = start + data.shape[1] / rate  # end time of the last decoded sample
    slack = {".aac": 2 * AAC_FRAME, ".m4a": AAC_FRAME}.get(suffix, 0.03)  # ADTS keeps the priming
    assert 0.6 - 1e-6 <= duration <= 0.6 + slack
    assert peak_hz(data[0], rate) == pytest.approx(1000, abs=5)
    if suffix in (".wav", ".flac"):  # lossless to 24 bits
        back, back_sr = soundfile.read(path, dtype="float32")
        assert back_sr == SR and np.abs(back - x).max() < 2**-22


def test_stereo_keeps_channels_apart(tmp_path):
    x = np.stack([tone(500, 0.5), tone(2000, 0.5)])
    for suffix in (".wav", ".mp3", ".ogg"):
        data, rate, _, _ = decode_audio(write_audio(tmp_path / f"st{suffix}", x, SR))
        assert data.shape[0] == 2
        assert [peak_hz(ch, rate) for ch in data] == [pytest.approx(500, abs=5), pytest.approx(2000, abs=5)]


def test_opus_resamples_rates_it_lacks(tmp_path):
    x = tone(440, 1.0, sr=44100)
    data, rate, start, _ = decode_audio(write_audio(tmp_path / "r.opus", x, 44100))
    assert rate == 48000
    assert start + data.shape[1] / rate == pytest.approx(1.0, abs=0.03)
    assert peak_hz(data[0], rate) == pytest.approx(440, abs=3)


def test_clipping_and_float64_input(tmp_path):
    x = np.linspace(-2, 2, 4800)  # float64, beyond [-1, 1]
    back, _ = soundfile.read(write_audio(tmp_path / "c.wav", x, SR), dtype="float32")
    assert back.max() == pytest.approx(1, abs=1e-6) and back.min() == pytest.approx(-1, abs=1e-6)


@pytest.mark.parametrize(
    "name, samples, match",
    [
        ("x.xyz", tone(1000, 0.1), "unsupported audio format .xyz; use one of .wav, .flac"),
        ("noext", tone(1000, 0.1), "no suffix"),
        ("x.wav", np.full(100, np.nan, np.float32), "NaN"),
        ("x.wav", np.zeros((1, 2, 3), np.float32), r"\[T\] or \[C, T\]"),
        ("x.wav", np.zeros((100, 2), np.float32), "more channels than samples"),
        ("x.wav", np.zeros(0, np.float32), "no audio samples"),
        ("x.mp3", np.zeros((3, 100), np.float32), "mono or stereo"),
    ],
)
def test_write_audio_rejects_bad_input_and_leaves_nothing(tmp_path, name, samples, match):
    with pytest.raises(FoleyscopeError, match=match):
        write_audio(tmp_path / name, samples, SR)
    assert no_leftovers(tmp_path) == []


# ---- mux -------------------------------------------------------------------------------------


def video_packets(path: Path) -> list[tuple[bytes, float | None, bool]]:
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        return [
            (bytes(p), None if p.pts is None else round(float(p.pts * p.time_base), 4), p.is_keyframe)
            for p in c.demux(stream)
            if p.size
        ]


def bframe_clip(path: Path) -> Path:
    """1.2 s of 25 fps H.264 with B-frames (pts != dts), which synth.py does not make."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.codec_context.max_b_frames = 2
        stream.options = {"preset": "veryfast"}
        for i in range(30):
            frame = av.VideoFrame.from_ndarray(index_frame(i, 96, 64), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mux")
    return {
        "with_audio": make_video(root / "a.mp4", SynthSpec(width=96, height=64, seconds=2.0, audio=True)),
        "silent": make_video(root / "s.mkv", SynthSpec(width=96, height=64, fps=30, seconds=1.5)),
        "bframes": bframe_clip(root / "b.mp4"),
        "vp9": make_video(root / "v.webm", SynthSpec(width=96, height=64, seconds=1.0, codec="libvpx-vp9")),
    }


def burst(seconds: float, at: float) -> np.ndarray:
    """Quiet 300 Hz bed with a loud 3 kHz burst starting at `at` s: a marker for sync checks."""
    x = tone(300, seconds, amp=0.05)
    i = int(at * SR)
    x[i : i + 2400] += tone(3000, 0.05, amp=0.8)
    return x


def onset(data: np.ndarray, start: float, rate: int) -> float:
    env = np.abs(data[0])
    return start + int(np.argmax(env > 0.4)) / rate


@pytest.mark.parametrize("source", ["with_audio", "silent", "bframes", "vp9"])
@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".mov"])
@pytest.mark.parametrize("audio_s", [0.7, 3.0])  # shorter than the video (padded) and longer (trimmed)
def test_mux_copies_video_and_fits_audio_to_it(tmp_path, sources, source, suffix, audio_s):
    src = sources[source]
    if (source, suffix) == ("vp9", ".mov"):  # QuickTime has no VP9 mapping: refused before writing
        with pytest.raises(FoleyscopeError, match=r"VP9 video cannot go in \.mov; use \.mp4, \.mkv or \.webm$"):
            mux(src, burst(audio_s, at=0.5), SR, tmp_path / f"out{suffix}")
        assert no_leftovers(tmp_path) == []
        return
    out = mux(src, burst(audio_s, at=0.5), SR, tmp_path / f"out{suffix}")
    assert no_leftovers(tmp_path) == [f"out{suffix}"]
    packets_in, packets_out = video_packets(src), video_packets(out)
    assert packets_out == packets_in  # same bytes, same times, same keyframes: a stream copy
    video_end = max(t for _, t, _ in packets_in) + {"silent": 1 / 30}.get(source, 1 / 25)
    data, rate, start, codec = decode_audio(out)
    assert (codec, rate, data.shape[0]) == ("aac", SR, 1)
    assert -AAC_FRAME - 1e-6 <= start <= 1e-6  # starts with the video (or earlier by the encoder priming)
    assert start + data.shape[1] / rate == pytest.approx(video_end, abs=AAC_FRAME)
    assert onset(data, start, rate) == pytest.approx(0.5, abs=0.003)  # in sync to 3 ms
    tail = data[0, int((min(audio_s, video_end) - start + 0.03) * rate) :]
    if audio_s < video_end:
        assert np.abs(tail).max() < 0.01  # padded with silence
    else:
        assert peak_hz(data[0, -4096:], rate) == pytest.approx(300, abs=15)  # our bed runs to the end


def test_mux_stereo_and_rotation(tmp_path):
    src = make_video(tmp_path / "r.mp4", SynthSpec(width=96, height=64, seconds=1.0, rotation=90))
    out = mux(src, np.stack([tone(500, 1.0), tone(2000, 1.0)]), SR, tmp_path / "o.mp4")
    data, rate, _, _ = decode_audio(out)
    assert data.shape[0] == 2
    with av.open(str(out)) as c:
        assert next(c.decode(video=0)).rotation == -90  # display matrix carried over


def test_mux_errors_leave_nothing(tmp_path, sources):
    x = tone(440, 0.5)
    work = tmp_path / "w"
    work.mkdir()
    suffixes = r"\.mp4, \.mov, \.m4v, \.mkv, \.webm"
    with pytest.raises(FoleyscopeError, match=rf"unsupported output format \.avi; use one of {suffixes}"):
        mux(sources["silent"], x, SR, work / "o.avi")
    audio_only = make_video(tmp_path / "a.m4a", SynthSpec(video=False, audio=True, seconds=0.5))
    with pytest.raises(MediaError, match="no video stream"):
        mux(audio_only, x, SR, work / "o.mp4")
    with pytest.raises(FoleyscopeError, match="overwrite the input"):
        mux(sources["silent"], x, SR, sources["silent"])
    with pytest.raises(FoleyscopeError, match="sample rate"):
        mux(sources["silent"], x, 0, work / "o.mp4")
    assert no_leftovers(work) == []
