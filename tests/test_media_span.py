"""One duration everywhere: probe, extract_frames and mux agree on the video stream's presentation span.

Every input is written with PyAV so that its span differs from what a header says: audio longer than
the video (MP4, Matroska), a clip looped the way `ffmpeg -stream_loop` does (a gap at each seam, audio
longer), an MP4 edit list that hides the first frames or starts the video late, MPEG-PS and MPEG-TS
whose clocks do not start at 0, H.264 in AVI (whose first frame is not at the stream's start time),
and variable frame rate. ffprobe, when installed, is a second opinion.
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

from foleyscope.errors import MediaError
from foleyscope.media.audio import mux
from foleyscope.media.frames import SYNCHFORMER, FrameSpec, extract_frames
from foleyscope.media.probe import probe
from foleyscope.media.synth import SynthSpec, frame_times, index_frame, make_video, read_index

SR = 48000
AAC_FRAME = 1024 / SR
SPEC = FrameSpec(fps=25.0, size=32, mode="squash")
FFPROBE = shutil.which("ffprobe")


def write_mp4(path: Path, n: int, *, gaps: tuple[int, ...] = (), shift: int = 0, audio_s: float | None = None,
              bframes: int = 0) -> Path:
    """n frames of 25 fps H.264 (frame i shows i); a one-frame gap after each frame in `gaps` (where
    `ffmpeg -stream_loop` joins two loops); packet timestamps moved by `shift` frames (negative: an
    edit list hides the first frames; positive: an empty edit starts the video late)."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 96, 64, "yuv420p"
        video.codec_context.max_b_frames = bframes
        video.options = {"preset": "veryfast" if bframes else "ultrafast"}
        audio = None
        if audio_s:
            audio = out.add_stream("aac", rate=SR)
            audio.layout = "mono"
        packets, t = [], 0
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(index_frame(i, 96, 64), format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 25)
            t += 2 if i in gaps else 1
            packets += video.encode(frame)
        packets += video.encode()
        ticks = round(Fraction(shift, 25) / packets[0].time_base)  # shift frames, in the packets' ticks
        for packet in packets:
            packet.pts += ticks
            packet.dts += ticks
            out.mux(packet)
        if audio is not None:
            total = int(audio_s * SR)
            for a in range(0, total, 1024):
                block = np.zeros((1, min(1024, total - a)), np.float32)
                frame = av.AudioFrame.from_ndarray(block, format="fltp", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = SR, a, Fraction(1, SR)
                out.mux(audio.encode(frame))
            out.mux(audio.encode())
    return path


small = dict(width=96, height=64)
# name -> (writer, expected span in s (None: VFR, checked against frame_times), expected start in s)
CASES = {
    "audio_longer_mp4": (lambda p: make_video(p / "al.mp4", SynthSpec(**small, seconds=2.0, audio=True,
                                                                       audio_seconds=3.0)), 2.0, 0.0),
    "audio_longer_mkv": (lambda p: make_video(p / "al.mkv", SynthSpec(**small, seconds=2.0, audio=True,
                                                                       audio_seconds=3.0)), 2.0, 0.0),
    # probe reads near each end when they are far apart; FLV has no per-stream duration to aim at
    "audio_much_longer_mkv": (lambda p: make_video(p / "aml.mkv", SynthSpec(**small, seconds=1.0, audio=True,
                                                                            audio_seconds=8.0)), 1.0, 0.0),
    "audio_much_longer_flv": (lambda p: make_video(p / "aml.flv", SynthSpec(**small, seconds=1.0, audio=True,
                                                                            audio_seconds=8.0)), 1.0, None),
    "looped_mp4": (lambda p: write_mp4(p / "loop.mp4", 75, gaps=(24, 49), audio_s=3.3), 77 / 25, 0.0),
    "hidden_start_mp4": (lambda p: write_mp4(p / "hidden.mp4", 50, shift=-10, audio_s=2.0, bframes=2), 1.6, 0.0),
    "late_start_mp4": (lambda p: write_mp4(p / "late.mp4", 50, shift=10, audio_s=2.4), 2.0, 0.4),
    "mpeg_ps": (lambda p: make_video(p / "ps.mpg", SynthSpec(**small, seconds=2.0, codec="mpeg2video", audio=True,
                                                             audio_codec="mp2")), 2.0, 0.54),
    "mpeg_ts": (lambda p: make_video(p / "ts.ts", SynthSpec(**small, seconds=2.0, audio=True, audio_seconds=2.5)),
                2.0, None),
    "avi_h264": (lambda p: make_video(p / "x.avi", SynthSpec(**small, seconds=2.0, audio=True, audio_codec="mp3")),
                 2.0, 0.08),  # AVI keeps no pts: FFmpeg's guesses start 2 frames in, its start_time says 0
    "vfr_mp4": (lambda p: make_video(p / "vfr.mp4", SynthSpec(**small, seconds=2.0, vfr=True)), None, 0.0),
    "vfr_mkv": (lambda p: make_video(p / "vfr.mkv", SynthSpec(**small, seconds=2.0, vfr=True, audio=True)), None, 0.0),
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("span")
    return {name: writer(root) for name, (writer, _, _) in CASES.items()}


def decoded_video(path: Path) -> tuple[float, float, list[int]]:
    """(first frame's time, last frame's end, index drawn in each frame), from decoding every frame."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        frames = list(c.decode(stream))
        period = 1 / float(stream.guessed_rate or stream.average_rate)
    last = frames[-1]
    end = float(last.pts * last.time_base) + (float(last.duration * last.time_base) if last.duration else period)
    return float(frames[0].pts * frames[0].time_base), end, [read_index(f.to_ndarray(format="rgb24")) for f in frames]


def ffprobe_video_span(path: Path) -> float | None:
    """Last shown frame's end minus the first one's time, from ffprobe's decoded frames, or from its
    packets (less those flagged discarded) when frames lack timestamps; None when both do (ffprobe 5
    gives AVI and MPEG-PS frames and packets no pts: there it has no opinion to offer)."""
    def run(entries: str) -> list[dict]:
        out = subprocess.run([FFPROBE, "-v", "error", "-select_streams", "v:0", "-show_entries", entries,
                              "-of", "json", str(path)], capture_output=True, text=True, check=True).stdout
        data = json.loads(out)
        return data.get("frames") or data.get("packets") or []

    items = run("frame=pts_time,duration_time,pkt_duration_time")
    if not all("pts_time" in f for f in items):
        items = [p for p in run("packet=pts_time,duration_time,flags") if "D" not in p.get("flags", "")]
        if not all("pts_time" in p for p in items):
            return None
    spans = [(float(f["pts_time"]), float(f.get("duration_time", f.get("pkt_duration_time", 0.04)))) for f in items]
    return max(a + b for a, b in spans) - min(a for a, _ in spans)


@pytest.mark.parametrize("name", CASES)
def test_probe_and_extract_frames_give_the_same_span(inputs, name):
    path = inputs[name]
    _, expected, start = CASES[name]
    info = probe(path)
    frames = extract_frames(path, [SPEC])
    assert info.duration_s == frames.duration_s  # the same float: the pipeline sizes audio from it
    assert round(info.duration_s * SR) == round(frames.duration_s * SR)
    if expected is None:  # VFR: the muxer guesses the last frame's length (one or two periods)
        ft = frame_times(SynthSpec(**small, seconds=2.0, vfr=True))
        assert ft[-1] + 0.04 - 1e-6 <= info.duration_s <= ft[-1] + 0.08 + 1e-6
    else:
        assert info.duration_s == pytest.approx(expected, abs=1e-9)
    if start is not None:
        assert info.start_s == pytest.approx(start, abs=1e-3)
    first, end, _ = decoded_video(path)
    assert end - first == pytest.approx(info.duration_s, abs=1e-6)  # what a full decode shows
    if FFPROBE and (second_opinion := ffprobe_video_span(path)) is not None:
        assert second_opinion == pytest.approx(info.duration_s, abs=2e-3)


@pytest.mark.parametrize("name", ["audio_longer_mp4", "audio_longer_mkv", "audio_much_longer_flv", "looped_mp4",
                                  "mpeg_ps", "late_start_mp4"])
def test_container_duration_is_kept_apart(inputs, name):
    """The cases where the container's duration is not the video's: it stays visible, separately."""
    info = probe(inputs[name])
    assert info.container_duration_s is not None
    assert info.container_duration_s > info.duration_s + 0.01


def burst(seconds: float, at: float) -> np.ndarray:
    """Quiet bed with a loud 3 kHz burst at `at` s: marks which audio sample plays with which frame."""
    x = (0.05 * np.sin(2 * np.pi * 300 * np.arange(int(seconds * SR)) / SR)).astype(np.float32)
    i = int(at * SR)
    x[i : i + 2400] += (0.8 * np.sin(2 * np.pi * 3000 * np.arange(2400) / SR)).astype(np.float32)
    return x


# Matroska cannot hide frames: hidden_start_mp4 -> .mkv is refused up front (test_media_mux_target)
MUXES = [(name, suffix) for name in CASES for suffix in (".mp4", ".mkv")
         if (name, suffix) != ("hidden_start_mp4", ".mkv")]


@pytest.mark.parametrize(("name", "suffix"), MUXES)
def test_mux_starts_at_zero_and_ends_with_the_video(inputs, tmp_path, name, suffix):
    src = inputs[name]
    span = probe(src).duration_s
    out = mux(src, burst(span + 1.0, at=0.5), SR, tmp_path / f"out{suffix}")
    info = probe(out)
    assert info.start_s == 0.0
    assert info.duration_s == pytest.approx(span, abs=1e-3)  # Matroska keeps ms
    first, end, shown = decoded_video(out)
    assert first == 0.0 and end == pytest.approx(span, abs=1e-3)
    assert shown == decoded_video(src)[2]  # the same frames, none added or lost
    with av.open(str(out)) as c:
        frames = list(c.decode(audio=0))
    a0 = float(frames[0].pts * frames[0].time_base)
    data = np.concatenate([f.to_ndarray()[0] for f in frames])
    assert -AAC_FRAME - 1e-6 <= a0 <= 1e-6
    assert a0 + len(data) / SR == pytest.approx(span, abs=AAC_FRAME)  # audio ends with the video
    assert a0 + np.argmax(np.abs(data) > 0.4) / SR == pytest.approx(0.5, abs=0.003)  # in sync with frame 0
    if FFPROBE:
        got = subprocess.run([FFPROBE, "-v", "error", "-show_entries", "stream=codec_type,start_time,duration",
                              "-of", "json", str(out)], capture_output=True, text=True, check=True).stdout
        streams = {s["codec_type"]: s for s in json.loads(got)["streams"]}
        assert float(streams["video"]["start_time"]) == pytest.approx(0, abs=1e-3)
        assert abs(float(streams["audio"]["start_time"])) <= AAC_FRAME + 1e-3
        if "duration" in streams["audio"]:  # MP4 stores per-stream durations, Matroska does not
            assert float(streams["audio"]["duration"]) == pytest.approx(span, abs=AAC_FRAME)


def test_a_matroska_stream_starting_late_is_not_called_truncated_but_a_cut_one_is(tmp_path):
    """Matroska counts its duration (and DURATION tags) from zero, MPEG-TS from the start time: a
    video whose first frame is at 1.4 s is complete; the same file cut short is still refused."""
    with av.open(str(tmp_path / "late.mkv"), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 90, "yuv420p"
        stream.options = {"crf": "23", "preset": "ultrafast", "g": "10"}
        for i in range(100):
            frame = av.VideoFrame.from_ndarray(np.full((90, 160, 3), i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = 35 + i, Fraction(1, 25)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    late = tmp_path / "late.mkv"
    info = probe(late)
    assert (info.start_s, info.duration_s) == (pytest.approx(1.4), pytest.approx(4.0))
    assert extract_frames(late, [SYNCHFORMER]).duration_s == pytest.approx(4.0)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(late.read_bytes()[: late.stat().st_size * 2 // 5])
    with pytest.raises(MediaError, match="truncated"):
        probe(cut)
