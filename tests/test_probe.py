"""probe on clips whose facts we chose when writing them: sizes, rates, VFR, rotation, codecs, containers."""

from __future__ import annotations

import json
import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from foleyscope.cli import main
from foleyscope.media.probe import MediaInfo, probe
from foleyscope.media.synth import SynthSpec, frame_times

DOCS = Path(__file__).resolve().parent.parent / "docs" / "probe.md"


@pytest.mark.parametrize("size", [(160, 90), (176, 144), (120, 200), (640, 360)])
def test_sizes(make_clip, size):
    w, h = size
    path = make_clip(width=w, height=h, seconds=0.4)
    info = probe(path)
    assert (info.width, info.height) == (w, h)
    assert (info.display_width, info.display_height) == (w, h)
    assert info.rotation == 0
    assert info.size_bytes == path.stat().st_size
    assert info.pix_fmt == "yuv420p"
    assert info.bit_rate is not None and 0 < info.bit_rate < 8 * info.size_bytes / info.duration_s * 1.1


@pytest.mark.parametrize("fps", [24, 25, 30000 / 1001, 60])
@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_constant_frame_rates(make_clip, fps, ext):
    spec = dict(width=160, height=90, fps=fps, seconds=1.0)
    info = probe(make_clip(ext=ext, **spec))
    n = len(frame_times(SynthSpec(**spec)))
    assert info.fps == pytest.approx(float(Fraction(fps).limit_denominator(1001)), rel=1e-4)
    assert info.fps_is_variable is False  # ms timestamps in MKV round 29.97 fps gaps to 33/34 ms
    assert info.duration_s == pytest.approx(n / info.fps, abs=0.002)
    assert info.frame_count == n
    assert info.frame_count_exact is (ext == ".mp4")  # Matroska stores no frame count


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_variable_frame_rate(make_clip, ext):
    spec = SynthSpec(width=160, height=90, fps=25, seconds=2.0, vfr=True)  # gaps of 40 and 80 ms
    info = probe(make_clip(ext=ext, width=160, height=90, fps=25, seconds=2.0, vfr=True))
    assert info.fps_is_variable is True
    n = len(frame_times(spec))
    assert info.fps == pytest.approx(n / 2.0, rel=0.03)  # the real average, not the 25 fps a header claims
    assert info.frame_count == n


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation(make_clip, rotation):
    info = probe(make_clip(width=160, height=96, seconds=0.4, rotation=rotation))
    assert info.rotation == rotation
    turned = rotation != 180
    assert (info.width, info.height) == ((96, 160) if turned else (160, 96))
    assert (info.display_width, info.display_height) == (160, 96)


@pytest.mark.parametrize(
    ("codec", "ext", "name", "container"),
    [
        ("libx264", ".mp4", "h264", "mp4"),
        ("libx265", ".mp4", "hevc", "mp4"),
        ("libx264", ".mov", "h264", "mov"),
        ("libvpx-vp9", ".webm", "vp9", "webm"),
        ("libaom-av1", ".mkv", "av1", "matroska"),
        ("libx264", ".avi", "h264", "avi"),
        ("mpeg4", ".avi", "mpeg4", "avi"),
    ],
)
def test_codecs_and_containers(make_clip, codec, ext, name, container):
    if codec not in av.codecs_available:
        pytest.skip(f"{codec} encoder not in this FFmpeg build")
    info = probe(make_clip(ext=ext, codec=codec, width=160, height=90, seconds=0.6))
    assert (info.video_codec, info.container) == (name, container)
    assert (info.width, info.height, info.fps, info.frame_count) == (160, 90, 25.0, 15)
    assert info.duration_s == pytest.approx(0.6, abs=0.05)


def test_pixel_format_is_reported(make_clip):
    assert probe(make_clip(width=160, height=90, seconds=0.4, pix_fmt="yuv444p")).pix_fmt == "yuv444p"


def test_audio_streams(make_clip):
    info = probe(make_clip(width=160, height=90, seconds=0.6, audio=True, sample_rate=44100))
    assert info.audio_streams == [{"codec": "aac", "sample_rate": 44100, "channels": 1}]
    opus = probe(make_clip(ext=".mkv", width=160, height=90, seconds=0.6, audio=True, audio_codec="libopus"))
    assert opus.audio_streams == [{"codec": "opus", "sample_rate": 48000, "channels": 1}]
    assert probe(make_clip(width=160, height=90, seconds=0.4)).audio_streams == []


def test_json_keys_are_the_documented_ones(make_clip, capsys):
    path = make_clip(width=160, height=90, seconds=0.4, audio=True)
    assert main(["probe", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data == probe(path).to_dict()
    assert list(data) == [f.name for f in MediaInfo.__dataclass_fields__.values()]
    documented = set(re.findall(r"^\| `(\w+)`(?:, `(\w+)`)? \|", DOCS.read_text(), re.M))
    assert {k for pair in documented for k in pair if k} == set(data)
    for key in ("width", "height", "fps", "duration_s"):
        assert key in data


def test_table_output(make_clip, capsys):
    path = make_clip(width=160, height=96, seconds=0.4, rotation=90)
    assert main(["probe", str(path)]) == 0
    out = capsys.readouterr().out
    assert "96 x 160 (shown as 160 x 96)" in out and "90 degrees" in out and "25.000 fps, constant" in out


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_b_frames_beyond_the_sampled_seconds_are_not_variable(make_clip, ext):
    """x265 reorders frames (B-frames): a sample that stops mid-file must not see reorder gaps."""
    info = probe(make_clip(ext=ext, codec="libx265", width=64, height=64, seconds=7.0))
    assert info.fps_is_variable is False and info.fps == 25.0


def _clip_missing_frames(path: Path, missing: set[int], n: int = 40) -> Path:
    """25 fps H.264 whose frames `missing` were never written (gaps of two periods there)."""
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        s.options = {"preset": "ultrafast"}
        for i in sorted(set(range(n)) - missing):
            f = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 4 * i, np.uint8), format="rgb24")
            f.pts = i
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def test_one_dropped_frame_is_not_variable_but_repeated_gaps_are(tmp_path):
    assert probe(_clip_missing_frames(tmp_path / "one.mp4", {10})).fps_is_variable is False
    assert probe(_clip_missing_frames(tmp_path / "two.mp4", {10, 20})).fps_is_variable is True


def test_duration_is_the_video_and_the_table_says_when_the_container_disagrees(make_clip, capsys):
    """MPEG-PS from FFmpeg's muxer starts its clock at 0.54 s and counts the audio's tail in its length."""
    path = make_clip(ext=".mpg", width=96, height=64, seconds=1.0, codec="mpeg2video", audio=True, audio_codec="mp2")
    info = probe(path)
    assert (info.duration_s, info.start_s, info.frame_count) == (1.0, 0.54, 25)
    assert info.container_duration_s is not None and info.container_duration_s != info.duration_s
    assert main(["probe", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"1.000 s of video (starts at 0.540 s; container says {info.container_duration_s:.3f} s)" in out
    assert main(["probe", str(make_clip(width=160, height=90, seconds=0.4))]) == 0
    plain = capsys.readouterr().out
    assert re.search(r"duration\s+│ 0\.400 s\s+│", plain) and "of video" not in plain
