"""The "official" rule picks the frames the HunyuanVideo-Foley release picks.

The expected picks are derived here from the decoded frames' own timestamps by the release's rule,
restated in a few lines (`release_rule`): a clock from 0.0 that adds 1/fps per sample, absolute
timestamps, each frame (in decoding order, unless before 0) taking every pending sample at or before
it. Every picked frame carries its index in its pixels (synth.index_frame), so the pixels are checked
too. Where a checkout of the release imports (FOLEYSCOPE_OFFICIAL_SRC, default /tmp/official), its
own sampler is compared as well; scripts/parity_frames.py does that anywhere (and the pixels).
"""

from __future__ import annotations

import importlib
import os
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from foleyscope.media import frames as frames_mod
from foleyscope.media.frames import FrameSpec, extract_frames
from foleyscope.media.synth import SynthSpec, index_frame, make_video, read_index

SYNC = FrameSpec(fps=25.0, size=64, mode="crop", interpolation="BICUBIC")
CLIP = FrameSpec(fps=8.0, size=48, mode="squash")
RATES = {"23.976": Fraction(24000, 1001), "24": 24, "25": 25, "29.97": Fraction(30000, 1001), "30": 30, "50": 50,
         "60": 60}


def decoded_times(path: Path) -> list[float]:
    """frame.time (absolute seconds) of every decoded frame, in decoding order."""
    with av.open(str(path)) as container:
        return [frame.time for frame in container.decode(video=0)]


def release_rule(times: list[float], fps: float, cap: float | None = None) -> list[int]:
    """Index of the frame each sample shows under the release's rule."""
    picks: list[int] = []
    clock, step = 0.0, 1 / fps
    for i, t in enumerate(times):
        if t < 0 or (cap is not None and t > cap):
            continue
        while t >= clock:
            picks.append(i)
            clock += step
    return picks


def release_clock(n: int, fps: float) -> list[float]:
    clock, out = 0.0, []
    for _ in range(n):
        out.append(clock)
        clock += 1 / fps
    return out


def picked(arr: np.ndarray) -> list[int]:
    return [read_index(x) for x in arr]


def write_shifted(path: Path, fps: int, n: int, first_pts: int, size: tuple[int, int] = (160, 90)) -> Path:
    """A clip whose first frame is shown at first_pts / fps on the stream's timeline (MPEG-TS keeps
    it as is; MP4 gets an edit list), frame i showing index i."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "12", "preset": "ultrafast"}
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(index_frame(i, *size), format="rgb24")
            frame.pts = first_pts + i
            frame.time_base = Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def check(path: Path, out, specs=(SYNC, CLIP)) -> None:
    times = decoded_times(path)
    for i, spec in enumerate(specs):
        expected = release_rule(times, spec.fps)
        assert list(out.source_indices[i]) == expected
        assert picked(out.arrays[i]) == expected
        clock = release_clock(len(expected), spec.fps)
        np.testing.assert_array_equal(out.times[i], np.asarray(clock) - out.origin_s)
        assert out.official_counts[i] == len(release_rule(times, spec.fps, cap=15.0))


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("official")
    made = {name: make_video(root / f"c{i}.mp4", SynthSpec(width=160, height=90, fps=fps, seconds=2.0))
            for i, (name, fps) in enumerate(RATES.items())}
    made["vfr"] = make_video(root / "vfr.mp4", SynthSpec(width=160, height=90, fps=25, seconds=2.0, vfr=True))
    vp9 = SynthSpec(width=128, height=96, fps=30, seconds=1.0, codec="libvpx-vp9")
    made["vp9"] = make_video(root / "vp9.webm", vp9)
    return made


@pytest.mark.parametrize("name", [*RATES, "vfr", "vp9"])
def test_picks_follow_the_release_rule(clips, name):
    out = extract_frames(clips[name], [SYNC, CLIP])
    assert out.rule == "official" and out.origin_s == 0.0
    check(clips[name], out)


@pytest.mark.parametrize("ext", ["ts", "mp4"])
@pytest.mark.parametrize("fps", [25, 30])
def test_absolute_timestamps_repeat_the_first_frame_before_a_late_start(tmp_path, ext, fps):
    first = round(1.4 * fps)  # MPEG-TS muxers start near 1.4 s
    path = write_shifted(tmp_path / f"late.{ext}", fps, n=fps, first_pts=first)
    out = extract_frames(path, [SYNC, CLIP])
    assert out.origin_s == pytest.approx(first / fps, abs=1e-3)
    check(path, out)
    # every sample time up to the first frame shows that frame; its times are before the video starts
    start = decoded_times(path)[0]
    n0 = sum(1 for t in release_clock(200, 25.0) if t <= start)
    assert list(out.source_indices[0][:n0]) == [0] * n0 and out.source_indices[0][n0] == 1
    assert out.times[0][0] == pytest.approx(-out.origin_s) and out.times[0][n0] > 0
    assert out.duration_s == pytest.approx(1.0, abs=1e-3)  # the video's own length is unchanged
    exact = extract_frames(path, [SYNC, CLIP], frames="exact")  # today's rule: from the first frame
    assert exact.source_indices[0][0] == 0 and exact.times[0][0] == 0.0 and exact.source_indices[0][1] == 1


def test_first_frame_at_or_after_the_sample(clips):
    """8 fps from 25 fps: sample 1 at 0.125 s shows frame 4 (0.16 s), not frame 3 (0.12 s)."""
    official = extract_frames(clips["25"], [CLIP])
    exact = extract_frames(clips["25"], [CLIP], frames="exact")
    assert list(official.source_indices[0][:4]) == [0, 4, 7, 10]  # ceil(k * 25 / 8)
    assert list(exact.source_indices[0][:4]) == [0, 3, 6, 9]  # floor(k * 25 / 8)


def test_no_sample_after_the_last_frame(clips):
    times = decoded_times(clips["24"])  # 48 frames, the last at 47/24 s
    out = extract_frames(clips["24"], [SYNC])
    assert len(out.arrays[0]) == sum(1 for t in release_clock(100, 25.0) if t <= times[-1]) == 49
    assert len(extract_frames(clips["24"], [SYNC], frames="exact").arrays[0]) == 50  # up to the 2.0 s end


def test_official_counts_apply_the_15s_cap(tmp_path):
    path = make_video(tmp_path / "long.mp4", SynthSpec(width=64, height=36, fps=24, seconds=15.5))
    times = decoded_times(path)
    out = extract_frames(path, [SYNC, CLIP])
    for i, spec in enumerate((SYNC, CLIP)):
        capped = release_rule(times, spec.fps, cap=15.0)
        assert out.official_counts[i] == len(capped) < len(out.arrays[i])  # arrays are not capped
        assert list(out.source_indices[i][: len(capped)]) == capped
    assert out.official_counts == [376, 121]  # 25 fps samples within 15 s: the release's audio is 376/25 s
    windowed = extract_frames(path, [SYNC], start=1.0)
    assert windowed.official_counts is None


def test_official_counts_in_exact_mode_too(clips, monkeypatch):
    monkeypatch.setattr(frames_mod, "OFFICIAL_MAX_S", 1.0)  # a cap inside the 2 s clip
    times = decoded_times(clips["30"])
    for rule in ("official", "exact"):
        out = extract_frames(clips["30"], [SYNC, CLIP], frames=rule)
        assert out.official_counts == [len(release_rule(times, s.fps, cap=1.0)) for s in (SYNC, CLIP)]


@pytest.fixture(scope="module")
def gop_clip(tmp_path_factory) -> Path:
    """25 fps, 3 s, starting at 1.4 s, a keyframe every 10 frames and B-frames: seeks land mid-file."""
    path = tmp_path_factory.mktemp("gop") / "gop.ts"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.codec_context.gop_size, stream.codec_context.max_b_frames = 10, 2
        stream.options = {"crf": "12", "preset": "veryfast"}
        for i in range(75):
            frame = av.VideoFrame.from_ndarray(index_frame(i, 96, 64), format="rgb24")
            frame.pts, frame.time_base = 35 + i, Fraction(1, 25)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


@pytest.mark.parametrize("start, end", [(0.7, 1.5), (1.2, None), (0.88, 2.3), (2.5, 9.0)])
def test_window_takes_the_same_samples_as_a_full_decode(gop_clip, start, end):
    full = extract_frames(gop_clip, [SYNC, CLIP])
    part = extract_frames(gop_clip, [SYNC, CLIP], start=start, end=end)
    stop = 3.0 if end is None else end
    for i in range(2):
        keep = (full.times[i] >= start) & (full.times[i] < stop)
        np.testing.assert_array_equal(part.times[i], full.times[i][keep])
        assert picked(part.arrays[i]) == picked(full.arrays[i][keep])
        np.testing.assert_array_equal(part.arrays[i], full.arrays[i][keep])


def _release_module():
    src = Path(os.environ.get("FOLEYSCOPE_OFFICIAL_SRC", "/tmp/official"))
    if not (src / "hunyuanvideo_foley").is_dir():
        pytest.skip(f"no checkout of the release at {src} (set FOLEYSCOPE_OFFICIAL_SRC)")
    sys.path.insert(0, str(src))
    try:
        return importlib.import_module("hunyuanvideo_foley.utils.feature_utils")
    except ImportError as exc:
        pytest.skip(f"the release's feature_utils does not import here ({exc}); scripts/parity_frames.py runs it")
    finally:
        sys.path.remove(str(src))


@pytest.mark.parametrize("name", ["25", "29.97", "vfr"])
def test_same_picks_as_the_release_itself(clips, name):
    module = _release_module()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    try:
        from parity_frames import official_samples
    finally:
        sys.path.pop(0)
    out = extract_frames(clips[name], [SYNC, CLIP])
    for i, spec in enumerate((SYNC, CLIP)):
        _, indices = official_samples(module, str(clips[name]), spec.fps)
        assert list(out.source_indices[i]) == indices
