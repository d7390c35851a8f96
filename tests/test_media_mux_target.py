"""Mux targets: check_mux_target says before any model loads exactly what mux will then do.

Sources in ten codecs are written with PyAV and muxed into every suffix we write: wherever the check
passes the mux succeeds (a stream copy, starting at 0), wherever it refuses, mux refuses in the same
words and leaves nothing. WebM gets Opus audio, since it holds no AAC.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from foleyscope.errors import FoleyscopeError, MediaError
from foleyscope.media.audio import VIDEO_SUFFIXES, check_mux_target, mux
from foleyscope.media.probe import probe
from foleyscope.media.synth import SynthSpec, index_frame, make_video

SR = 48000
small = dict(width=64, height=48, seconds=0.6)


def mpeg1_in_mkv(path: Path) -> Path:
    """MPEG-1 with B-frames in Matroska, which stores no dts: the demuxer's guesses repeat."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg1video", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.max_b_frames = 2
        for i in range(15):
            frame = av.VideoFrame.from_ndarray(index_frame(i, 64, 48), format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def hidden_start_mp4(path: Path) -> Path:
    """25 fps H.264 whose first 10 frames an edit list hides (as a stream copy cut with -ss leaves)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        packets = []
        for i in range(30):
            frame = av.VideoFrame.from_ndarray(index_frame(i, 64, 48), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            packets += stream.encode(frame)
        packets += stream.encode()
        shift = round(Fraction(10, 25) / packets[0].time_base)
        for packet in packets:
            packet.pts -= shift
            packet.dts -= shift
            out.mux(packet)
    return path


SOURCES = {  # name -> maker, and the suffixes a copy of it goes in with this FFmpeg (PyAV's own build)
    "h264": (lambda d: make_video(d / "h264.mp4", SynthSpec(**small)), {".mp4", ".mov", ".m4v", ".mkv"}),
    "hevc": (lambda d: make_video(d / "hevc.mkv", SynthSpec(**small, codec="libx265")), {".mp4", ".mov", ".mkv"}),
    "vp8": (lambda d: make_video(d / "vp8.webm", SynthSpec(**small, codec="libvpx")), {".mkv", ".webm"}),
    "vp9": (lambda d: make_video(d / "vp9.webm", SynthSpec(**small, codec="libvpx-vp9")), {".mp4", ".mkv", ".webm"}),
    "av1": (lambda d: make_video(d / "av1.mkv", SynthSpec(**small, codec="libaom-av1")), {".mp4", ".mkv", ".webm"}),
    "mpeg4": (lambda d: make_video(d / "mpeg4.avi", SynthSpec(**small, codec="mpeg4")),
              {".mp4", ".mov", ".m4v", ".mkv"}),
    "mpeg2": (lambda d: make_video(d / "mpeg2.mpg", SynthSpec(**small, codec="mpeg2video")), {".mp4", ".mov", ".mkv"}),
    "mpeg1_mkv": (lambda d: mpeg1_in_mkv(d / "mpeg1.mkv"), {".mp4", ".mov", ".mkv"}),
    "mjpeg": (lambda d: make_video(d / "mjpeg.avi", SynthSpec(**small, codec="mjpeg", pix_fmt="yuvj420p")),
              {".mp4", ".mov", ".mkv"}),
    "wmv2": (lambda d: make_video(d / "wmv2.wmv", SynthSpec(**small, codec="wmv2")), set()),
}


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("targets")
    return {name: make(root) for name, (make, _) in SOURCES.items()}


def video_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.video[0]) if p.size]


@pytest.mark.parametrize("suffix", VIDEO_SUFFIXES)
@pytest.mark.parametrize("name", SOURCES)
def test_the_check_predicts_the_mux(sources, tmp_path, name, suffix):
    src, out = sources[name], tmp_path / f"out{suffix}"
    accepted = SOURCES[name][1]
    try:
        check_mux_target(src, out)
        refused = None
    except FoleyscopeError as exc:
        refused = str(exc)
    assert (refused is None) == (suffix in accepted), refused
    x = np.zeros(SR, np.float32)
    if refused is not None:
        assert refused.startswith(f"{out}: ") and "\n" not in refused
        with pytest.raises(FoleyscopeError) as late:
            mux(src, x, SR, out)
        assert str(late.value) == refused
        assert list(tmp_path.iterdir()) == []
        return
    mux(src, x, SR, out)
    assert list(tmp_path.iterdir()) == [out]
    assert video_packets(out) == video_packets(src)  # a stream copy: the same bytes, packet for packet
    info = probe(out)
    assert info.start_s == 0.0 and info.duration_s == pytest.approx(probe(src).duration_s, abs=1e-3)
    assert info.audio_streams[0]["codec"] == ("opus" if suffix == ".webm" else "aac")


@pytest.mark.parametrize(
    ("name", "suffix", "message"),
    [
        ("vp8", ".mp4", "VP8 video cannot go in .mp4; use .mkv or .webm"),
        ("vp9", ".mov", "VP9 video cannot go in .mov; use .mp4, .mkv or .webm"),
        ("h264", ".webm", "H.264 video cannot go in .webm; use .mp4, .mov, .m4v or .mkv"),
        ("hevc", ".m4v", "HEVC video cannot go in .m4v; use .mp4, .mov or .mkv"),
        ("wmv2", ".mkv", "WMV2 video cannot be copied into any of .mp4, .mov, .m4v, .mkv, .webm; "
                         "make an H.264 copy first with `foleyscope prep`"),
    ],
)
def test_refusals_name_what_would_work(sources, tmp_path, name, suffix, message):
    out = tmp_path / f"o{suffix}"
    with pytest.raises(FoleyscopeError) as exc:
        check_mux_target(probe(sources[name]), out)  # a MediaInfo does as well as a path
    assert str(exc.value) == f"{out}: {message}"


def test_output_path_and_suffix_are_checked_first(sources, tmp_path):
    src = sources["h264"]
    with pytest.raises(FoleyscopeError, match=r"o\.avi: unsupported output format \.avi; use one of \.mp4, "):
        check_mux_target(src, tmp_path / "o.avi")
    with pytest.raises(FoleyscopeError, match="output would overwrite the input video"):
        check_mux_target(src, src)
    with pytest.raises(MediaError, match="no such file"):
        check_mux_target(tmp_path / "missing.mp4", tmp_path / "o.mp4")
    assert VIDEO_SUFFIXES == (".mp4", ".mov", ".m4v", ".mkv", ".webm")


def test_hidden_frames_cannot_go_into_matroska(tmp_path):
    """Matroska has no edit list: the frames an MP4 hides would show. MP4 and MOV keep them hidden."""
    src = hidden_start_mp4(tmp_path / "cut.mp4")
    for suffix in (".mkv", ".webm"):
        with pytest.raises(FoleyscopeError, match=rf"hides its first 10 frames .* {suffix} cannot"):
            check_mux_target(src, tmp_path / f"o{suffix}")
    out = mux(src, np.zeros(SR, np.float32), SR, tmp_path / "o.mov")
    with av.open(str(out)) as c:
        frames = list(c.decode(video=0))
    assert [f.pts * f.time_base for f in frames][0] == 0 and len(frames) == 20


@pytest.mark.parametrize("rate", [48000, 44100])
def test_webm_gets_opus_in_sync_and_as_long_as_the_video(sources, tmp_path, rate):
    src = sources["vp9"]
    span = probe(src).duration_s
    x = (0.05 * np.sin(2 * np.pi * 300 * np.arange(2 * rate) / rate)).astype(np.float32)
    x[int(0.25 * rate) : int(0.25 * rate) + 2400] = 0.8 * np.sin(2 * np.pi * 3000 * np.arange(2400) / rate)
    out = mux(src, x, rate, tmp_path / "o.webm")
    with av.open(str(out)) as c:
        assert c.format.name.startswith("matroska") and c.streams.audio[0].codec_context.name == "opus"
        frames = list(c.decode(audio=0))
    start = float(frames[0].pts * frames[0].time_base)
    data = np.concatenate([f.to_ndarray()[0] for f in frames])
    sr = frames[0].sample_rate
    assert sr == 48000 and abs(start) < 1e-3
    assert start + len(data) / sr == pytest.approx(span, abs=0.0201)  # within one 20 ms Opus frame
    assert start + np.argmax(np.abs(data) > 0.4) / sr == pytest.approx(0.25, abs=0.003)
    if shutil.which("ffprobe"):
        got = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,start_time", "-of",
                              "json", str(out)], capture_output=True, text=True, check=True).stdout
        video, audio = json.loads(got)["streams"]
        assert (video["codec_name"], audio["codec_name"]) == ("vp9", "opus")
        assert float(video["start_time"]) == 0
        assert -0.0075 <= float(audio["start_time"]) <= 0  # Opus pre-skip (312 samples) before 0, as ever
