"""Frame extraction: which frame each sample picks (read back from the pixels), geometry, one pass.

The pick tests here pin the "exact" rule (today's: the frame on screen at k / fps); the official
rule's picks and pixels are in test_frames_official.py and test_frames_pixels.py.
"""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from foleyscope.errors import FoleyscopeError, MediaError
from foleyscope.media import frames as frames_mod
from foleyscope.media.frames import FrameSpec, extract_frames
from foleyscope.media.synth import SynthSpec, frame_times, index_frame, make_video, read_index

CROP = FrameSpec(fps=25.0, size=64, mode="crop", interpolation="BICUBIC")
SQUASH = FrameSpec(fps=8.0, size=48, mode="squash")


def shown_at(times: list[float], t: float) -> int:
    """Index of the latest frame with pts <= t (the first frame for a time before it)."""
    return max([i for i, ft in enumerate(times) if ft <= t + 1e-9], default=0)


def picked(arr: np.ndarray) -> list[int]:
    return [read_index(x) for x in arr]


def write_clip(
    path: Path,
    images: list[np.ndarray],
    fps: int = 25,
    codec: str = "libx264",
    gop: int = 250,
    bframes: int = 0,
) -> Path:
    """Encode RGB images as a CFR clip with a chosen GOP and B-frame count (synth.py fixes neither)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.height, stream.width = images[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        stream.codec_context.max_b_frames = bframes
        stream.options = {"crf": "12", "preset": "veryfast"} if codec == "libx264" else {}
        for i, img in enumerate(images):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, SynthSpec]]:
    root = tmp_path_factory.mktemp("frames")
    specs = {
        "60": SynthSpec(width=160, height=90, fps=60, seconds=1.5),
        "24": SynthSpec(width=160, height=90, fps=24, seconds=1.5),
        "2997": SynthSpec(width=128, height=72, fps=Fraction(30000, 1001), seconds=1.5),
        "vfr": SynthSpec(width=160, height=90, fps=25, seconds=1.5, vfr=True),
        "hevc_mkv": SynthSpec(width=128, height=96, fps=25, seconds=1.0, codec="libx265"),
        "vp9_webm": SynthSpec(width=128, height=96, fps=30, seconds=1.0, codec="libvpx-vp9"),
        "tall": SynthSpec(width=90, height=160, fps=25, seconds=0.5),
    }
    ext = {"hevc_mkv": "mkv", "vp9_webm": "webm"}
    return {k: (make_video(root / f"{k}.{ext.get(k, 'mp4')}", s), s) for k, s in specs.items()}


@pytest.mark.parametrize("name", ["60", "24", "2997", "vfr", "hevc_mkv", "vp9_webm"])
def test_each_sample_shows_the_latest_frame_at_or_before_it(media, name):
    path, spec = media[name]
    ft = frame_times(spec)
    out = extract_frames(path, [CROP, SQUASH], frames="exact")
    period = 1 / float(spec.fps)
    stream_end = out.duration_s  # last pts + last duration (for VFR the muxer guesses the latter)
    if spec.vfr:
        assert ft[-1] + period - 1e-6 <= stream_end <= ft[-1] + 2 * period + 1e-6
    else:
        assert stream_end == pytest.approx(ft[-1] + period)
    for fs, arr, times, idx in zip(out.specs, out.arrays, out.times, out.source_indices, strict=True):
        n = int(np.ceil(stream_end * fs.fps - 1e-9))  # every t_k = k / fps below the stream end
        assert len(arr) == len(times) == n
        np.testing.assert_allclose(times, np.arange(n) / fs.fps)
        expected = [shown_at(ft, t) for t in times]
        assert picked(arr) == expected
        assert list(idx) == expected
        src_times = out.source_times[out.specs.index(fs)]
        np.testing.assert_allclose(src_times, [ft[i] for i in expected], atol=1e-3)  # webm: ms ticks


def test_60fps_at_25fps_picks_floor_and_24fps_repeats(media):
    out60 = extract_frames(media["60"][0], [CROP], frames="exact")
    t = out60.times[0]
    assert picked(out60.arrays[0]) == [int(np.floor(x * 60 + 1e-9)) for x in t]
    out24 = extract_frames(media["24"][0], [CROP], frames="exact")
    idx = picked(out24.arrays[0])
    assert len(idx) == 38 and len(set(idx)) == 36  # t < 1.5 s: 38 samples from 36 frames
    assert [a for a, b in zip(idx, idx[1:], strict=False) if a == b] == [0, 24]  # frames 0 and 24 show twice


def test_vfr_follows_timestamps_not_frame_counts(media):
    path, spec = media["vfr"]
    got = picked(extract_frames(path, [CROP], frames="exact").arrays[0])
    naive = list(range(len(got)))  # what counting frames as if they were 25 fps would give
    assert got == [shown_at(frame_times(spec), k / 25) for k in range(len(got))]
    assert got != naive and got[-1] < naive[-1]


@pytest.fixture(scope="module")
def gop_clip(tmp_path_factory) -> Path:
    """25 fps, 3 s, a keyframe every 10 frames and B-frames, so seeks land mid-file."""
    root = tmp_path_factory.mktemp("gop")
    images = [index_frame(i, 96, 64) for i in range(75)]
    return write_clip(root / "gop.mp4", images, fps=25, gop=10, bframes=2)


@pytest.mark.parametrize("start, end", [(0.7, 1.5), (1.2, None), (0.88, 2.3), (2.5, 9.0)])
def test_window_with_seek(gop_clip, start, end):
    out = extract_frames(gop_clip, [CROP, SQUASH], start=start, end=end, frames="exact")
    stop = 3.0 if end is None else min(end, 3.0)
    assert out.duration_s == pytest.approx(stop - start)
    for fs, arr, times in zip(out.specs, out.arrays, out.times, strict=True):
        expected_t = [start + k / fs.fps for k in range(1000) if start + k / fs.fps < stop - 1e-9]
        np.testing.assert_allclose(times, expected_t)
        assert picked(arr) == [int(np.floor(x * 25 + 1e-9)) for x in expected_t]


def test_window_results_equal_the_same_samples_of_a_full_decode(gop_clip):
    full = extract_frames(gop_clip, [CROP], frames="exact")
    part = extract_frames(gop_clip, [CROP], start=1.0, end=2.0, frames="exact")  # 1.0 s = frame 25, not a keyframe
    np.testing.assert_array_equal(part.arrays[0], full.arrays[0][25:50])


def test_window_without_video_is_an_error(gop_clip):
    with pytest.raises(MediaError, match="no video"):
        extract_frames(gop_clip, [CROP], start=3.5)
    with pytest.raises(FoleyscopeError, match="must be after"):
        extract_frames(gop_clip, [CROP], start=1.0, end=1.0)


def test_squash_is_square_whatever_the_aspect(media):
    for name in ("60", "tall"):
        out = extract_frames(media[name][0], [FrameSpec(fps=8.0, size=40, mode="squash")], frames="exact")
        assert out.arrays[0].shape[1:] == (40, 40, 3) and out.arrays[0].dtype == np.uint8
        assert out.arrays[0].flags["C_CONTIGUOUS"]
        assert picked(out.arrays[0]) == [shown_at(frame_times(media[name][1]), t) for t in out.times[0]]


@pytest.mark.parametrize("rule", ["official", "exact"])
@pytest.mark.parametrize("width, height", [(200, 100), (100, 160)])
def test_crop_keeps_the_centre(tmp_path, width, height, rule):
    # red rises left -> right, green top -> bottom: each output pixel says where it came from
    y, x = np.mgrid[0:height, 0:width]
    img = np.zeros((height, width, 3), np.uint8)
    img[..., 0] = np.round(255 * x / (width - 1))
    img[..., 1] = np.round(255 * y / (height - 1))
    path = write_clip(tmp_path / "grad.mp4", [img] * 5)
    s = 50
    arr = extract_frames(path, [FrameSpec(fps=25.0, size=s, mode="crop")], frames=rule).arrays[0]
    assert arr.shape == (5, s, s, 3)
    scale = s / min(width, height)  # short side -> s
    # source x of output column j, for the crop centred in the resized frame
    cols = (np.arange(s) + (round(width * scale) - s) / 2 + 0.5) / scale - 0.5
    rows = (np.arange(s) + (round(height * scale) - s) / 2 + 0.5) / scale - 0.5
    red = arr[0, s // 4 : -s // 4, :, 0].astype(float).mean(axis=0)
    green = arr[0, :, s // 4 : -s // 4, 1].astype(float).mean(axis=1)
    np.testing.assert_allclose(red[2:-2], 255 * cols[2:-2] / (width - 1), atol=6)
    np.testing.assert_allclose(green[2:-2], 255 * rows[2:-2] / (height - 1), atol=6)
    # symmetric about the centre: the crop is neither left/top- nor right/bottom-heavy
    assert abs(red[0] + red[-1] - 255) < 8 and abs(green[0] + green[-1] - 255) < 8


@pytest.mark.parametrize("rule", ["official", "exact"])
@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_metadata_gives_upright_frames(tmp_path, media, rotation, rule):
    spec = SynthSpec(width=160, height=90, fps=25, seconds=0.5, rotation=rotation)
    path = make_video(tmp_path / "rot.mp4", spec)  # stored turned, the track matrix turns it back
    specs = [FrameSpec(fps=25.0, size=40, mode="squash"), FrameSpec(fps=25.0, size=40, mode="crop")]
    upright = extract_frames(make_video(tmp_path / "plain.mp4", replace(spec, rotation=0)), specs, frames=rule)
    out = extract_frames(path, specs, frames=rule)
    for a, b, idx in zip(upright.arrays, out.arrays, out.source_indices, strict=True):
        assert picked(b) == list(idx)  # index bands are horizontal again
        if rule == "exact":
            assert list(idx) == list(range(len(b)))
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 3  # same picture up to coding noise


class _CountingContainer:
    """Wraps an open container and counts passes over it (decode() or demux() calls) and the video
    frames (decoded frames, or video packets carrying one) they yield."""

    def __init__(self, inner, log):
        self._inner, self._log = inner, log

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def decode(self, *args, **kwargs):
        self._log["passes"] += 1
        for frame in self._inner.decode(*args, **kwargs):
            self._log["frames"] += 1
            yield frame

    def demux(self, *args, **kwargs):
        self._log["passes"] += 1
        for packet in self._inner.demux(*args, **kwargs):
            self._log["frames"] += bool(packet.size and packet.stream.type == "video")
            yield packet


def count_conversions(monkeypatch) -> list[int]:
    """Record the pts of every frame handed to the scaler (either rule's)."""
    seen: list[int] = []
    for cls in (frames_mod._Geometry, frames_mod._OfficialGeometry):

        def convert(self, frame, quarter_turns, real=cls.convert):
            seen.append(frame.pts)
            return real(self, frame, quarter_turns)

        monkeypatch.setattr(cls, "convert", convert)
    return seen


@pytest.mark.parametrize("rule", ["official", "exact"])
def test_one_decode_feeds_both_specs(media, monkeypatch, rule):
    path, spec = media["60"]
    separate = [extract_frames(path, [fs], frames=rule) for fs in (CROP, SQUASH)]
    log = {"opens": 0, "passes": 0, "frames": 0}
    real_open = frames_mod.open_input

    def counting_open(*args, **kwargs):
        log["opens"] += 1
        return _CountingContainer(real_open(*args, **kwargs), log)

    monkeypatch.setattr(frames_mod, "open_input", counting_open)
    conversions = count_conversions(monkeypatch)
    both = extract_frames(path, [CROP, SQUASH], frames=rule)
    assert log == {"opens": 1, "passes": 1, "frames": len(frame_times(spec))}
    for one, arr, idx in zip(separate, both.arrays, both.source_indices, strict=True):
        np.testing.assert_array_equal(one.arrays[0], arr)
        np.testing.assert_array_equal(one.source_indices[0], idx)
    # only picked frames are converted, once per geometry: 90 frames decoded, far fewer converted
    distinct = len(set(both.source_indices[0])) + len(set(both.source_indices[1]))
    assert len(conversions) == distinct < 60


def test_same_geometry_shares_conversions(media, monkeypatch):
    calls = count_conversions(monkeypatch)
    a, b = FrameSpec(25.0, 32, "crop"), FrameSpec(12.5, 32, "crop")
    out = extract_frames(media["60"][0], [a, b], frames="exact")
    assert len(calls) == len(set(out.source_indices[0]))  # 12.5 fps picks are a subset of 25 fps ones
    np.testing.assert_array_equal(out.arrays[1], out.arrays[0][::2])


def test_progress_reaches_the_end(media):
    seen = []
    extract_frames(media["24"][0], [SQUASH], progress=lambda done, total: seen.append((done, total)))
    assert seen[-1][0] == pytest.approx(seen[-1][1]) == pytest.approx(1.5, abs=0.05)
    assert all(a[0] <= b[0] for a, b in zip(seen, seen[1:], strict=False))


@pytest.mark.parametrize("ext", ["mkv", "mp4"])
def test_truncated_file_is_a_media_error(tmp_path, media, ext):
    if ext == "mkv":
        src = media["hevc_mkv"][0]
    else:  # moov first (faststart) so the file opens and fails only mid-decode
        src = tmp_path / "fs.mp4"
        with av.open(str(src), "w", options={"movflags": "faststart"}) as out:
            stream = out.add_stream("libx264", rate=25)
            stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
            for i in range(25):
                frame = av.VideoFrame.from_ndarray(index_frame(i, 96, 64), format="rgb24")
                frame.pts = i
                out.mux(stream.encode(frame))
            out.mux(stream.encode())
    cut = tmp_path / f"cut.{ext}"
    data = src.read_bytes()
    cut.write_bytes(data[: len(data) * 6 // 10])
    with pytest.raises(MediaError, match="truncated|decoding failed"):
        extract_frames(cut, [SQUASH])


def test_bad_inputs(tmp_path):
    audio_only = make_video(tmp_path / "a.m4a", SynthSpec(video=False, audio=True, seconds=0.5))
    with pytest.raises(MediaError, match="no video stream"):
        extract_frames(audio_only, [SQUASH])
    with pytest.raises(MediaError, match="no such file"):
        extract_frames(tmp_path / "missing.mp4", [SQUASH])
    with pytest.raises(FoleyscopeError, match="interpolation"):
        FrameSpec(fps=8.0, size=8, mode="squash", interpolation="NOPE")
    with pytest.raises(FoleyscopeError, match="mode"):
        FrameSpec(fps=8.0, size=8, mode="stretch")  # type: ignore[arg-type]
    with pytest.raises(FoleyscopeError, match="frame rate"):
        FrameSpec(fps=0.0, size=8, mode="crop")
    with pytest.raises(FoleyscopeError, match="frames must be one of official, exact"):
        extract_frames(audio_only, [SQUASH], frames="nearest")  # type: ignore[arg-type]


@pytest.mark.parametrize("rule", ["official", "exact"])
def test_buffers_grow_when_the_header_underestimates(media, monkeypatch, rule):
    path = media["24"][0]
    normal = extract_frames(path, [CROP, SQUASH], frames=rule)
    monkeypatch.setattr(frames_mod, "_expected_end", lambda *args: 0.1)  # as if the header said 0.1 s
    grown = extract_frames(path, [CROP, SQUASH], frames=rule)
    for a, b in zip(normal.arrays, grown.arrays, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("rule", ["official", "exact"])
def test_without_worker_thread_gives_the_same_frames(media, monkeypatch, rule):
    path = media["vfr"][0]
    threaded = extract_frames(path, [CROP, SQUASH], frames=rule)
    monkeypatch.setattr(frames_mod, "THREADED_CONVERSION", False)
    inline = extract_frames(path, [CROP, SQUASH], frames=rule)
    for a, b in zip(threaded.arrays, inline.arrays, strict=True):
        np.testing.assert_array_equal(a, b)
