"""Every command agrees on what is a video: probe, extract_frames, prep, mux and is_video_file refuse the
same files with the same one-line message, and a folder's videos are found whatever their suffix.

All files are made with PyAV (images with its image2 muxer, a text file as text): a still PNG or JPEG
used to give 0.04 s of audio from extract_frames while probe refused it, a 20000x16 video was refused
by probe only, and FFmpeg opens a .txt as ANSI-art "video", which probe used to accept.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from foleyscope.errors import MediaError
from foleyscope.media.audio import check_mux_target, mux
from foleyscope.media.frames import FrameSpec, extract_frames
from foleyscope.media.prep import prep
from foleyscope.media.probe import is_video_file, probe
from foleyscope.media.synth import SynthSpec, make_video

SPEC = FrameSpec(fps=8.0, size=16, mode="squash")


def image(path: Path, codec: str, pix_fmt: str, frames: int = 1, fmt: str = "image2") -> Path:
    """A picture file written by FFmpeg's own image muxer (or an n-frame GIF)."""
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, pix_fmt
        for i in range(frames):
            rgb = np.full((48, 64, 3), 40 * i, np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt)
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def mjpeg_avi(path: Path, width: int, height: int) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mjpeg", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuvj420p"
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(np.full((height, width, 3), 50 * i, np.uint8), format="rgb24")
            frame = frame.reformat(format="yuvj420p")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def truncated_mkv(d: Path) -> Path:
    data = make_video(d / "long.mkv", SynthSpec(width=96, height=64, seconds=4.0)).read_bytes()
    (d / "cut.mkv").write_bytes(data[: len(data) // 2])
    return d / "cut.mkv"


BAD = {  # kind -> (maker, words the message must contain)
    "png": (lambda d: image(d / "still.png", "png", "rgb24"), "a still image (png_pipe format), not a video"),
    "jpeg": (lambda d: image(d / "still.jpg", "mjpeg", "yuvj420p"), "a still image (jpeg_pipe format)"),
    "webp": (lambda d: image(d / "still.webp", "libwebp", "yuv420p"), "a still image (webp_pipe format)"),
    "bmp": (lambda d: image(d / "still.bmp", "bmp", "bgr24"), "a still image (bmp_pipe format)"),
    "one-frame gif": (lambda d: image(d / "still.gif", "gif", "rgb8", fmt="gif"), "a still image (gif with one frame)"),
    "text": (lambda d: (d / "notes.txt").write_text("not a video\n" * 40) and d / "notes.txt", "a text file (tty"),
    "20000x16": (lambda d: mjpeg_avi(d / "wide.avi", 20000, 16), "absurd video dimensions 20000x16"),
    "audio only": (lambda d: make_video(d / "song.wav", SynthSpec(video=False, audio=True, audio_codec="pcm_s16le",
                                                                  seconds=0.5)), "has no video stream"),
    "empty": (lambda d: (d / "empty.mp4").write_bytes(b"") or d / "empty.mp4", "file is empty"),
    "truncated": (truncated_mkv, "truncated file (header says 4.00 s, data stops at"),
}


def refusal(call) -> str:
    with pytest.raises(MediaError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("kind", BAD)
def test_every_command_refuses_the_same_files_in_the_same_words(tmp_path, kind):
    make, words = BAD[kind]
    path = make(tmp_path)
    expected = refusal(lambda: probe(path))
    assert expected.startswith(f"{path}: ") and words in expected
    assert refusal(lambda: extract_frames(path, [SPEC])) == expected
    assert refusal(lambda: prep(path, tmp_path / "out" / "p.mp4")) == expected
    if kind != "truncated":  # mux and its pre-check read only headers; generate has decoded the video first
        assert refusal(lambda: check_mux_target(path, tmp_path / "out" / "m.mp4")) == expected
        assert refusal(lambda: mux(path, np.zeros(4800, np.float32), 48000, tmp_path / "out" / "m.mp4")) == expected
    assert is_video_file(path) == (False, expected.removeprefix(f"{path}: "))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_animated_gif_and_a_wide_but_sane_video_are_videos(tmp_path):
    """Quiet twins: more than one GIF frame is an animation, 4000x16 is within the limit."""
    gif = image(tmp_path / "anim.gif", "gif", "rgb8", frames=5, fmt="gif")
    for path in (gif, mjpeg_avi(tmp_path / "w.avi", 4000, 16)):
        info = probe(path)
        assert is_video_file(path) == (True, "")
        assert extract_frames(path, [SPEC]).duration_s == info.duration_s


def test_a_folder_is_sorted_by_what_probes_as_video_not_by_suffix(tmp_path):
    small = dict(width=96, height=64, seconds=0.6)
    videos = {
        make_video(tmp_path / "a.mpg", SynthSpec(**small, codec="mpeg2video", audio=True, audio_codec="mp2")),
        make_video(tmp_path / "b.mpeg", SynthSpec(**small, codec="mpeg1video")),
        make_video(tmp_path / "c.ts", SynthSpec(**small, audio=True)),
        make_video(tmp_path / "d.m2ts", SynthSpec(**small)),
        make_video(tmp_path / "e.wmv", SynthSpec(**small, codec="wmv2")),
        make_video(tmp_path / "f.flv", SynthSpec(**small, audio=True)),
        make_video(tmp_path / "g.avi", SynthSpec(**small, codec="mpeg4")),
        make_video(tmp_path / "h.webm", SynthSpec(**small, codec="libvpx-vp9")),
        make_video(tmp_path / "i.MOV", SynthSpec(**small)),
    }
    clip = make_video(tmp_path / "j.mp4", SynthSpec(**small))
    (tmp_path / "video_without_suffix").write_bytes(clip.read_bytes())
    videos |= {clip, tmp_path / "video_without_suffix"}
    skipped = {
        tmp_path / "readme.txt": "a text file (tty format), not a video",
        tmp_path / "song.wav": "has no video stream (found: audio)",
        tmp_path / "cover.png": "a still image (png_pipe format), not a video",
        tmp_path / "data.bin": "not a readable media file",
        tmp_path / "sub": "is a directory, not a media file",
    }
    (tmp_path / "readme.txt").write_text("not a video\n" * 40)
    make_video(tmp_path / "song.wav", SynthSpec(video=False, audio=True, audio_codec="pcm_s16le", seconds=0.3))
    image(tmp_path / "cover.png", "png", "rgb24")
    (tmp_path / "data.bin").write_bytes(bytes(range(256)) * 64)
    (tmp_path / "sub").mkdir()
    found = {p: is_video_file(p) for p in tmp_path.iterdir()}
    assert {p for p, (ok, _) in found.items() if ok} == videos
    for path, words in skipped.items():
        ok, why = found[path]
        assert not ok and words in why and str(path) not in why


def test_non_videos_are_turned_down_on_their_headers(tmp_path, monkeypatch):
    """Sorting a folder stays cheap: text, audio and pictures are refused before any packet is read."""
    import foleyscope.media.probe as probe_module

    def no_packets(*args, **kwargs):
        raise AssertionError("read packets of a file its headers already ruled out")

    files = [(tmp_path / "notes.txt").write_text("not a video\n" * 40) and tmp_path / "notes.txt",
             make_video(tmp_path / "song.wav", SynthSpec(video=False, audio=True, audio_codec="pcm_s16le", seconds=2)),
             image(tmp_path / "cover.jpg", "mjpeg", "yuvj420p"), mjpeg_avi(tmp_path / "wide.avi", 20000, 16)]
    monkeypatch.setattr(probe_module, "_scan_head", no_packets)
    for path in files:
        ok, why = is_video_file(path)
        assert not ok and why
