"""Planted input and decode problems. Every twin runs the same small "user pipeline": a decode stage
(our one-pass extract_frames, unless the decode itself is the planted cause) and a visual-encode stage
whose work grows with the 8 fps frames, as a real encoder's does. The clean twin of an input problem
is the same pipeline on the file `foleyscope prep` wrote from the planted input; the clean twin of the
wasted decode is the same file decoded once.

Media is generated once per process, on first use (the cases' warm-up, which also runs the pipeline
once on each twin's file), in a temporary folder.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from foleyscope.doctor.api import DiagnoseContext
from foleyscope.media.frames import SIGLIP2, SYNCHFORMER, FrameSpec, extract_frames
from foleyscope.media.prep import prep
from foleyscope.media.probe import probe
from foleyscope.media.synth import SynthSpec, index_frame, make_video
from foleyscope.stages import Stage
from foleyscope.trace import stage

from . import case

_MEDIA: dict[str, Path] = {}
_WEIGHTS = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32) / 8


@functools.cache
def _root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="foleyscope-planted-input-"))
    atexit.register(shutil.rmtree, root, True)
    return root


def _media(name: str, make: Callable[[Path], object]) -> Path:
    """The file `name` in the session's folder, made by `make(path)` the first time it is asked for."""
    if name not in _MEDIA:
        make(_root() / name)
        _MEDIA[name] = _root() / name
    return _MEDIA[name]


def _prepped(name: str, source: Callable[[], Path], **kw: float) -> Path:
    """What `foleyscope prep` writes from `source()`: the clean twin's input."""
    return _media(name, lambda p: prep(source(), p, **kw))


# -- the pipeline ----------------------------------------------------------------------------------------

def one_pass(path: Path) -> list[np.ndarray]:
    return extract_frames(path, [SIGLIP2, SYNCHFORMER]).arrays


def pipeline(path: Path, decode: Callable[[Path], list[np.ndarray]] = one_pass) -> None:
    with stage(Stage.DECODE):
        frames = decode(path)
    with stage(Stage.VISUAL_ENCODE):
        _encode(frames[0])


def _encode(frames: np.ndarray) -> None:
    """About 2 ms of matmuls per 8 fps frame: the model work, proportional to the video's length."""
    for frame in frames:
        x = frame[::8, ::8, 0].astype(np.float32) / 255
        for _ in range(60):
            x = np.tanh(x @ _WEIGHTS)


def _warm(*paths: Callable[[], Path]) -> None:
    """Make the media, and run the pipeline once on each file: both twins then start from warm caches."""
    for path in paths:
        pipeline(path())


def _context(path: Callable[[], Path]) -> DiagnoseContext:
    p = path()
    return DiagnoseContext(video_path=str(p), input_info=probe(p))


# -- 4K HEVC 60 fps ------------------------------------------------------------------------------------

def _uhd() -> Path:
    spec = SynthSpec(width=3840, height=2160, fps=60, seconds=0.5, codec="libx265")
    return _media("uhd 60fps.mkv", lambda p: make_video(p, spec))


def _uhd_prepped() -> Path:
    return _prepped("uhd_prepped.mp4", _uhd, height=720, fps=25.0)


@case("input_uhd_hevc_60fps", "input_needs_normalising",
      context=lambda planted: _context(_uhd if planted else _uhd_prepped),
      warmup=lambda: _warm(_uhd, _uhd_prepped))
def uhd_hevc():
    """A 3840x2160 60 fps HEVC MKV: 9x the pixels and 2.4x the frames the model samples, in a costlier
    codec. Clean: the 720p 25 fps H.264 MP4 that prep writes from it."""
    return (lambda: pipeline(_uhd())), (lambda: pipeline(_uhd_prepped()))


# -- longer than the model's window ----------------------------------------------------------------

def _long() -> Path:
    return _media("long.mp4", lambda p: make_video(p, SynthSpec(width=320, height=180, fps=25, seconds=40.0)))


def _long_trimmed() -> Path:
    return _prepped("long_first15s.mp4", _long, max_seconds=15.0)


@case("input_long_clip_40s", "input_long_clip",
      context=lambda planted: _context(_long if planted else _long_trimmed),
      warmup=lambda: _warm(_long, _long_trimmed))
def long_clip():
    """A 40 s clip where the model needs 15 s: decode and the per-frame encoder do 2.7x the work.
    Clean: the first 15 s, as `prep --max-seconds 15` writes them."""
    return (lambda: pipeline(_long())), (lambda: pipeline(_long_trimmed()))


# -- decoded twice at full resolution, resized in Python -------------------------------------------

def _hd() -> Path:
    return _media("hd.mp4", lambda p: make_video(p, SynthSpec(width=1280, height=720, fps=25, seconds=3.0)))


def decode_twice(path: Path) -> list[np.ndarray]:
    """The released pipeline's way: one full decode per frame rate, every frame to full-size float RGB,
    the sampled ones resized by PIL."""
    return [_full_resolution_pass(path, spec) for spec in (SIGLIP2, SYNCHFORMER)]


def _full_resolution_pass(path: Path, spec: FrameSpec) -> np.ndarray:
    out, due = [], 0.0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            rgb = frame.to_ndarray(format="rgb24").astype(np.float32) / 255  # every frame, full size, float
            while frame.time is not None and frame.time + 1e-6 >= due:
                small = Image.fromarray((rgb * 255).astype(np.uint8)).resize((spec.size, spec.size), Image.BILINEAR)
                out.append(np.asarray(small))
                due += 1 / spec.fps
    return np.stack(out)


@case("decode_twice_in_python", "decode_wasted_work",
      context=lambda planted: _context(_hd), warmup=lambda: _warm(_hd))
def wasted_decode():
    """A 720p 25 fps H.264 clip (nothing wrong with the input) decoded once per frame rate at full
    resolution and resized in Python. Clean: one extract_frames pass for both rates."""
    return (lambda: pipeline(_hd(), decode_twice)), (lambda: pipeline(_hd()))


# -- a mezzanine bit rate ----------------------------------------------------------------------------

def _grainy() -> Path:
    return _media("grainy.mp4", lambda p: write_grainy(p, 1280, 720, 25, 3.0, grain=6.0, crf=0))


def _grainy_prepped() -> Path:
    return _prepped("grainy_prepped.mp4", _grainy)


def write_grainy(path: Path, width: int, height: int, fps: int, seconds: float, *, grain: float, crf: int) -> Path:
    """H.264 index frames under film grain (`grain`: its standard deviation in 8-bit levels), at `crf`. At
    720p, grain 6 and crf 0 (lossless) that is about 100 Mb/s, 4-5 bits per pixel, where prep's delivery
    encode of the same pictures needs well under 1 Mb/s."""
    rng = np.random.default_rng(0)
    noise = [rng.normal(0, grain, (height, width, 3)).astype(np.int16) for _ in range(4)]
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.options = {"crf": str(crf), "preset": "ultrafast"}
        for i in range(round(fps * seconds)):
            rgb = np.clip(index_frame(i, width, height) + noise[i % 4], 0, 255).astype(np.uint8)
            for packet in s.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in s.encode():
            out.mux(packet)
    return path


@case("input_high_bit_rate", "input_needs_normalising",
      context=lambda planted: _context(_grainy if planted else _grainy_prepped),
      warmup=lambda: _warm(_grainy, _grainy_prepped))
def high_bit_rate():
    """720p 25 fps H.264 MP4 at a mezzanine bit rate (lossless over grain): the right geometry and codec,
    but entropy decoding of 100 Mb/s costs several times that of a delivery encode. Clean: prep's copy."""
    return (lambda: pipeline(_grainy())), (lambda: pipeline(_grainy_prepped()))
