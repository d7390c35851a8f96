"""Bad input through the CLI: one `foleyscope: error:` line, exit code 2, no traceback, no output file.

Every bad file is real: made with PyAV and then damaged the way files get damaged (cut short,
emptied, renamed text). "A codec the decoder lacks" is an H.264 MP4 whose sample entry is relabelled
`evc1` (MPEG-5 EVC): FFmpeg knows that codec id but this build has no EVC decoder, exactly what a
user with such a file would meet.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from foleyscope.cli import main
from foleyscope.media.prep import prep
from foleyscope.media.synth import SynthSpec, make_video

REPO = Path(__file__).resolve().parent.parent


def _cut(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def _mjpeg(path: Path, width: int, height: int) -> Path:
    with av.open(str(path), "w") as out:
        s = out.add_stream("mjpeg", rate=25)
        s.width, s.height, s.pix_fmt = width, height, "yuvj420p"
        for i in range(2):
            f = av.VideoFrame.from_ndarray(np.zeros((height, width, 3), np.uint8), format="rgb24")
            f = f.reformat(format="yuvj420p")
            f.pts = i
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def _zero_width_avi(path: Path) -> Path:
    """Raw video in AVI with the header's picture width overwritten with 0."""
    with av.open(str(path), "w") as out:
        s = out.add_stream("rawvideo", rate=25)
        s.width, s.height, s.pix_fmt = 16, 16, "gray"
        for i in range(3):
            f = av.VideoFrame.from_ndarray(np.full((16, 16), 60 * i, np.uint8), format="gray")
            f.pts = i
            for p in s.encode(f):
                out.mux(p)
    data = bytearray(path.read_bytes())
    at = data.find(b"strf") + 8 + 4  # BITMAPINFOHEADER: biSize, then biWidth
    data[at : at + 4] = struct.pack("<i", 0)
    path.write_bytes(data)
    return path


def _relabel_codec(src: Path, dst: Path) -> Path:
    data = bytearray(src.read_bytes())
    at = data.find(b"avc1", data.find(b"stsd"))
    data[at : at + 4] = b"evc1"
    dst.write_bytes(data)
    return dst


def bad_file(kind: str, d: Path) -> Path:
    small = dict(width=160, height=90)
    if kind == "missing":
        return d / "nowhere.mp4"
    if kind == "empty":
        (d / "empty.mp4").write_bytes(b"")
        return d / "empty.mp4"
    if kind == "not media":
        (d / "notes.mp4").write_text("these are my notes, not a video\n" * 50)
        return d / "notes.mp4"
    if kind == "directory":
        (d / "clip.mp4").mkdir()
        return d / "clip.mp4"
    if kind == "audio only":
        return make_video(d / "song.m4a", SynthSpec(video=False, audio=True, seconds=1.0))
    if kind == "truncated mp4 (index lost)":  # the index (moov) is written last: cut, it is gone
        return _cut(make_video(d / "src.mp4", SynthSpec(**small, seconds=2.0)), d / "cut.mp4", 0.6)
    if kind == "truncated mkv (header says longer)":
        return _cut(make_video(d / "src.mkv", SynthSpec(**small, seconds=4.0)), d / "cut.mkv", 0.5)
    if kind == "truncated faststart mp4":  # index intact, 40% of the samples missing
        fast = prep(make_video(d / "src.mp4", SynthSpec(**small, seconds=4.0)), d / "fast.mp4")
        assert fast.duration_s == 4.0
        (d / "src.mp4").unlink()
        return _cut(d / "fast.mp4", d / "cut.mp4", 0.6)
    if kind == "no decoder":
        src = make_video(d / "src.mp4", SynthSpec(**small, seconds=0.4))
        out = _relabel_codec(src, d / "evc.mp4")
        src.unlink()
        return out
    if kind == "too wide":
        return _mjpeg(d / "wide.avi", 16400, 16)
    if kind == "zero width":
        return _zero_width_avi(d / "zero.avi")
    raise AssertionError(kind)


KINDS = ["missing", "empty", "not media", "directory", "audio only", "truncated mp4 (index lost)",
         "truncated mkv (header says longer)", "truncated faststart mp4", "no decoder", "too wide",
         "zero width"]
EXPECT = {  # a word the one-line message must contain
    "missing": "no such file", "empty": "empty", "not media": "not a readable media file",
    "directory": "directory", "audio only": "no video stream", "truncated mp4 (index lost)": "truncated",
    "truncated mkv (header says longer)": "truncated", "truncated faststart mp4": "truncated",
    "no decoder": "no decoder", "too wide": "16400x16", "zero width": "0x",
}


def assert_one_error_line(capsys, rc: int, must_contain: str = "") -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert rc == 2, captured
    assert len(lines) == 1 and lines[0].startswith("foleyscope: error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    assert must_contain in lines[0]
    return lines[0]


@pytest.mark.parametrize("kind", KINDS)
def test_probe_rejects(tmp_path, capsys, kind):
    path = bad_file(kind, tmp_path)
    assert_one_error_line(capsys, main(["probe", str(path)]), EXPECT[kind])


@pytest.mark.parametrize("kind", KINDS)
def test_prep_rejects_and_leaves_nothing(tmp_path, capsys, kind):
    path = bad_file(kind, tmp_path)
    before = sorted(tmp_path.rglob("*"))
    out = tmp_path / "out" / "prepped.mp4"
    rc = main(["prep", str(path), "-o", str(out)])
    assert_one_error_line(capsys, rc, EXPECT[kind])
    assert not out.parent.exists() or not any(out.parent.iterdir())  # no output, no temp file
    assert sorted(p for p in tmp_path.rglob("*") if p != out.parent) == before


def test_prep_mid_decode_failure_is_a_media_error(tmp_path, capsys):
    """A cut that costs only the last half second passes probe; decoding then hits the broken packet."""
    src = make_video(tmp_path / "src.mp4", SynthSpec(width=160, height=90, seconds=4.0))
    fast = prep(src, tmp_path / "f.mp4")
    assert fast.duration_s == 4.0
    cut = _cut(tmp_path / "f.mp4", tmp_path / "cut.mp4", 0.93)
    assert main(["probe", str(cut)]) == 0  # within the truncation slack: probe accepts it
    capsys.readouterr()
    out = tmp_path / "out.mp4"
    assert_one_error_line(capsys, main(["prep", str(cut), "-o", str(out)]), "decoding failed near")
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--height", "0"], "height"),
        (["--height", "-720"], "height"),
        (["--fps", "0"], "fps"),
        (["--fps", "inf"], "fps"),
        (["--max-seconds", "-1"], "max seconds"),
        (["--crf", "60"], "crf"),
    ],
)
def test_prep_rejects_bad_numbers(make_clip, tmp_path, capsys, flags, message):
    out = tmp_path / "out.mp4"
    rc = main(["prep", str(make_clip(width=160, height=90, seconds=0.4)), "-o", str(out), *flags])
    assert_one_error_line(capsys, rc, message)
    assert list(tmp_path.iterdir()) == []


def test_prep_output_must_be_mp4(make_clip, tmp_path, capsys):
    out = tmp_path / "out.mkv"
    rc = main(["prep", str(make_clip(width=160, height=90, seconds=0.4)), "-o", str(out)])
    assert_one_error_line(capsys, rc, ".mp4")
    assert list(tmp_path.iterdir()) == []


def test_real_process_exit_code_and_stderr(tmp_path):
    """A real process behaves the same: exit 2, one line, nothing on stdout, no output file."""
    bad = bad_file("truncated mkv (header says longer)", tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    argv = [sys.executable, "-m", "foleyscope", "prep", str(bad), "-o", str(tmp_path / "o.mp4")]
    r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2, r
    assert r.stdout == "" and r.stderr.count("\n") == 1 and r.stderr.startswith("foleyscope: error: ")
    assert "truncated" in r.stderr
    assert not (tmp_path / "o.mp4").exists()
