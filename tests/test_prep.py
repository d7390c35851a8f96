"""prep on indexed clips: every output frame must be the source frame on screen at its time, and
size, rate, length, audio and orientation must be what the options ask for."""

from __future__ import annotations

import math
from pathlib import Path

import av
import numpy as np
import pytest

from foleyscope.cli import main
from foleyscope.errors import FoleyscopeError
from foleyscope.media.prep import prep
from foleyscope.media.probe import probe
from foleyscope.media.synth import SynthSpec, frame_times, read_index


def decoded(path: Path) -> tuple[list[float], list[int]]:
    """Output frame times (s) and the index drawn in each frame."""
    with av.open(str(path)) as c:
        frames = list(c.decode(c.streams.video[0]))
    return [float(f.time) for f in frames], [read_index(f.to_ndarray(format="rgb24")) for f in frames]


def expected_picks(spec: SynthSpec, fps: float, n: int) -> list[int]:
    """For output time k / fps: the last source frame whose time is at or before it."""
    times = np.array(frame_times(spec))
    return [int(np.searchsorted(times, k / fps + 1e-9, side="right") - 1) for k in range(n)]


def source_end(spec: SynthSpec) -> float:
    """When the source's last frame leaves the screen (synth's VFR gaps alternate 1 and 2 periods)."""
    times = frame_times(spec)
    last = len(times) - 1
    return times[-1] + (2 if spec.vfr and last % 2 else 1) / float(spec.fps)


def decoded_audio(path: Path) -> tuple[np.ndarray, int]:
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        wave = np.concatenate([f.to_ndarray()[0] for f in c.decode(s)])
        return wave, s.codec_context.sample_rate


@pytest.mark.parametrize(
    "fields",
    [
        dict(fps=60),
        dict(fps=24),
        dict(fps=30000 / 1001),
        dict(fps=25, vfr=True),
        dict(fps=25, ext=".mkv", codec="libx265"),
        dict(fps=50, ext=".webm", codec="libvpx-vp9"),
    ],
    ids=["60fps", "24fps", "29.97fps", "vfr", "hevc-mkv", "vp9-webm"],
)
def test_each_output_frame_is_the_source_frame_on_screen(make_clip, tmp_path, fields):
    ext = fields.pop("ext", ".mp4")
    spec = SynthSpec(width=320, height=180, seconds=1.6, **fields)
    src = make_clip(ext=ext, width=320, height=180, seconds=1.6, **fields)
    info = prep(src, tmp_path / "out.mp4", height=90, fps=25)
    times, picks = decoded(tmp_path / "out.mp4")
    n = math.ceil(source_end(spec) * 25 - 1e-9)
    assert len(picks) == info.frame_count == n
    assert picks == expected_picks(spec, 25, n)
    assert np.allclose(np.diff(times), 1 / 25), "constant frame rate"
    assert (info.container, info.video_codec, info.pix_fmt) == ("mp4", "h264", "yuv420p")
    assert info.fps == 25 and not info.fps_is_variable and info.frame_count_exact


def test_size_keeps_aspect_and_even_sides(make_clip, tmp_path):
    info = prep(make_clip(width=640, height=360, seconds=0.4), tmp_path / "a.mp4", height=180)
    assert (info.width, info.height) == (320, 180)
    info = prep(make_clip(width=400, height=224, seconds=0.4), tmp_path / "b.mp4", height=101)
    assert (info.width, info.height) == (178, 100)  # 100 * 400/224 = 178.6 -> nearest even
    assert info.width % 2 == 0 and info.height % 2 == 0


def test_never_upscales(make_clip, tmp_path):
    src = make_clip(width=160, height=90, seconds=0.4)
    info = prep(src, tmp_path / "out.mp4", height=720)
    assert (info.width, info.height) == (160, 90)
    _, picks = decoded(tmp_path / "out.mp4")
    assert picks == list(range(10))


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotated_input_comes_out_upright(make_clip, tmp_path, rotation):
    src = make_clip(width=192, height=108, seconds=0.4, rotation=rotation)
    info = prep(src, tmp_path / "out.mp4", height=108)
    assert (info.width, info.height, info.rotation) == (192, 108, 0)
    _, picks = decoded(tmp_path / "out.mp4")
    assert picks == list(range(10))  # index bands read back only when horizontal and top-down


def test_trim_and_audio(make_clip, tmp_path):
    src = make_clip(width=160, height=90, seconds=3.0, audio=True, sample_rate=44100)
    seen = []
    info = prep(src, tmp_path / "out.mp4", height=90, max_seconds=1.3,
                progress=lambda d, t: seen.append((d, t)))
    assert info.frame_count == 33  # ceil(1.3 * 25): the frames that start before 1.3 s
    assert info.duration_s == pytest.approx(1.32, abs=0.03)
    _, picks = decoded(tmp_path / "out.mp4")
    assert picks == list(range(33))
    assert info.audio_streams == [{"codec": "aac", "sample_rate": 44100, "channels": 1}]
    wave, sr = decoded_audio(tmp_path / "out.mp4")
    assert abs(len(wave) / sr - 33 / 25) < 0.03
    # the source clicks every 0.5 s (see synth._write_tone): they must stay on time
    onsets = np.flatnonzero((np.abs(wave[1:]) > 0.45) & (np.abs(wave[:-1]) <= 0.45)) / sr
    starts = [t for i, t in enumerate(onsets) if i == 0 or t - onsets[i - 1] > 0.1]
    assert starts == pytest.approx([0.0, 0.5, 1.0], abs=0.01)
    assert seen[-1] == (pytest.approx(1.3, abs=0.03), 1.3)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


@pytest.mark.parametrize("fields", [dict(ext=".avi", audio_codec="mp3"),
                                    dict(ext=".mpg", codec="mpeg2video", audio_codec="mp2")], ids=["avi", "mpeg-ps"])
def test_output_starts_at_the_first_frame_and_lasts_the_span(make_clip, tmp_path, fields):
    """The same start and length as probe and extract_frames. In AVI, FFmpeg puts H.264's first frame
    2 frames after the stream's start time; FFmpeg's MPEG-PS clock starts at 0.54 s. Neither may add
    or lose output frames or move the audio against the picture."""
    src = make_clip(width=96, height=64, seconds=1.0, audio=True, **fields)
    span = probe(src).duration_s
    info = prep(src, tmp_path / "out.mp4", height=64)
    times, picks = decoded(tmp_path / "out.mp4")
    assert times[0] == 0.0 and info.duration_s == span == 1.0 and info.frame_count == 25
    if fields["ext"] == ".avi":
        assert picks == list(range(25))  # (FFmpeg reads two frames of this MPEG-PS at the wrong times)
    else:  # the source clicks every 0.5 s from its first frame (synth._write_tone): still on time
        wave, sr = decoded_audio(tmp_path / "out.mp4")
        clicks = np.flatnonzero((np.abs(wave[1:]) > 0.45) & (np.abs(wave[:-1]) <= 0.45)) / sr
        assert clicks[0] == pytest.approx(0.0, abs=0.01)


def test_audio_at_other_rates_is_resampled(make_clip, tmp_path):
    src = make_clip(ext=".mkv", width=160, height=90, seconds=0.8, audio=True, audio_codec="pcm_s16le",
                    sample_rate=37800)  # not a rate AAC allows
    info = prep(src, tmp_path / "out.mp4", height=90)
    assert info.audio_streams == [{"codec": "aac", "sample_rate": 48000, "channels": 1}]
    wave, sr = decoded_audio(tmp_path / "out.mp4")
    assert abs(len(wave) / sr - 0.8) < 0.03


def test_output_is_faststart(make_clip, tmp_path):
    prep(make_clip(width=160, height=90, seconds=0.4), tmp_path / "out.mp4")
    data = (tmp_path / "out.mp4").read_bytes()
    assert 0 < data.find(b"moov") < data.find(b"mdat")


def test_options_are_checked(make_clip, tmp_path):
    src = make_clip(width=160, height=90, seconds=0.4)
    for kwargs in (dict(height=0), dict(height=-4), dict(fps=0), dict(fps=float("nan")), dict(max_seconds=0),
                   dict(crf=52), dict(preset="warp")):
        with pytest.raises(FoleyscopeError):
            prep(src, tmp_path / "out.mp4", **kwargs)
    with pytest.raises(FoleyscopeError, match=r"\.mp4"):
        prep(src, tmp_path / "out.mkv")
    assert list(tmp_path.iterdir()) == []


def test_cli_summary(make_clip, tmp_path, capsys):
    src = make_clip(width=320, height=180, seconds=0.4, fps=50)
    assert main(["prep", str(src), "-o", str(tmp_path / "o.mp4"), "--height", "90", "--fps", "25"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("wrote ") and "160x90 25 fps h264, no audio, 0.40 s, 10 frames" in out
    assert len(out.splitlines()) == 1
