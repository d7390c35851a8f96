"""Resizing that reproduces the HunyuanVideo-Foley release's pixels, done by swscale on the small frame.

The release converts every picked frame to full-resolution RGB (`frame.to_ndarray("rgb24")`) and then
resizes it: SigLIP2 frames with PIL's bilinear resize to 512x512 (a triangle filter widened when
shrinking), Synchformer frames with torchvision's Resize(224, bicubic, antialias) (short side to 224,
long side int(224 * long / short); a Keys cubic with a = -0.5, widened when shrinking) and a centre
crop at int(round((long - 224) / 2)) of the resized frame. Here swscale scales the YUV frame straight
to that size and writes planar RGB, and three details make the pixels agree:

* The filters are the same family: swscale's bilinear, and its bicubic with B = 0, C = 0.5 (its
  default C = 0.6 is sharper), both widened when shrinking, with accurate rounding. On luma alone
  they match PIL and torch to 0.2 and 0.02 grey levels on average.
* Chroma. FFmpeg's unscaled 8-bit 4:2:0 -> RGB conversion, which the release's to_ndarray runs,
  repeats each chroma sample over its 2x2 block (higher bit depths and NV12 go through swscale's
  scaler, which repeats across and interpolates down), and the resize then filters those blocks.
  swscale's scaler interpolates chroma instead. Along an axis the frame shrinks by less than 2.5x
  (720p to 512x512 down, not across; 720p to 398x224 neither) that differs visibly, so there chroma
  is first repeated to full size by swscale (nearest neighbour): the picture the release filters.
* Level. That conversion (x86 SIMD) truncates: its RGB is 1 to 1.5 levels darker than the exact
  BT.601 conversion swscale's scaler does. `conversion_offset` measures the gap once per pixel
  format on this machine and the result is shifted by it (0 where the two agree).

Colours follow the release's conversion: BT.601 matrix and limited range whatever the stream's tags
say, full range only for the yuvj formats (swscale's defaults when PyAV sets no colour details).
"""

from __future__ import annotations

import functools
from fractions import Fraction

import av
import numpy as np

# Chroma is repeated along an axis the frame shrinks along by less than this (source / resized).
REPEAT_CHROMA_BELOW = 2.5
# How the release's conversion brings chroma to full size, per source format (measured against
# to_ndarray; formats not listed are converted directly):
# "repeat": FFmpeg's unscaled 8-bit planar converter repeats each sample over its block;
# "scaler": higher bit depths and NV12 go through swscale's scaler, which interpolates down
# (bilinear) and repeats across (its packed-RGB writer keeps chroma at half width).
_UNSCALED_420 = ("yuv420p", "yuvj420p", "yuva420p")
_UNSCALED_422 = ("yuv422p", "yuvj422p")
_SCALER_420 = ("nv12", "nv21", "p010le", "yuv420p10le", "yuv420p12le")
_SCALER_422 = ("yuv422p10le", "yuv422p12le")
_FILTERS = {  # swscale flag names for PyAV's Interpolation names, where they differ
    "BICUBIC": "bicubic:param0=0:param1=0.5",  # PIL's and torch's antialiasing cubic (a = -0.5)
    "POINT": "neighbor",
    "X": "experimental",
}


def official_size(width: int, height: int, size: int, mode: str) -> tuple[int, int]:
    """The resized (width, height) before the centre crop: squash -> S x S; crop -> short side S,
    long side int(S * long / short) (torchvision's rounding)."""
    if mode == "squash":
        return size, size
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def crop_offsets(width: int, height: int, size: int) -> tuple[int, int]:
    """(left, top) of the centre S x S crop of a resized frame, as torchvision's CenterCrop rounds."""
    return int(round((width - size) / 2.0)), int(round((height - size) / 2.0))


def _range(pix_fmt: str) -> str:
    return "pc" if pix_fmt.startswith("yuvj") else "tv"


def _scale_args(width: int, height: int, interpolation: str, rng: str) -> str:
    flags = _FILTERS.get(interpolation, interpolation.lower())
    name, _, params = flags.partition(":")
    args = f"w={width}:h={height}:flags={name}+accurate_rnd:in_color_matrix=bt601:in_range={rng}:out_range=pc"
    return f"{args}:{params}" if params else args


def chroma_steps(pix_fmt: str, width: int, height: int, out_width: int, out_height: int) -> list[tuple[str, str]]:
    """swscale passes (flags, format) that bring chroma to full size the release's way before the
    resize, or none: only along an axis the frame shrinks by less than REPEAT_CHROMA_BELOW does it
    matter; where it shrinks more, filtering the half-size chroma directly is close enough."""
    across = width < REPEAT_CHROMA_BELOW * out_width
    down = height < REPEAT_CHROMA_BELOW * out_height
    j = "yuvj" if pix_fmt.startswith("yuvj") else "yuv"
    if pix_fmt in _UNSCALED_420 and (across or down):
        layout = "444" if across and down else "422" if down else "440"  # repeated: full size
        return [("neighbor", f"{j}{layout}p")]
    if pix_fmt in _UNSCALED_422 and across:
        return [("neighbor", f"{j}444p")]
    if pix_fmt in _SCALER_420 and (across or down):
        return [("bilinear", "yuv422p16le"), ("neighbor", "yuv444p16le")]
    if pix_fmt in _SCALER_422 and across:
        return [("neighbor", "yuv444p16le")]
    return []


def _graph(frame: av.VideoFrame, width: int, height: int, interpolation: str, steps: list[tuple[str, str]]
           ) -> av.filter.Graph:
    fmt = frame.format.name
    graph = av.filter.Graph()
    tb = frame.time_base or Fraction(1, 1000)
    chain = [graph.add_buffer(width=frame.width, height=frame.height, format=fmt, time_base=tb)]
    rng = _range(fmt)
    same = f"in_color_matrix=bt601:out_color_matrix=bt601:in_range={rng}:out_range={rng}"
    for flags, step_fmt in steps:  # chroma to full size, same size, range and matrix untouched
        chain.append(graph.add("scale", f"flags={flags}:{same}"))
        chain.append(graph.add("format", step_fmt))
        fmt = step_fmt
    chain.append(graph.add("scale", _scale_args(width, height, interpolation, rng)))
    chain.append(graph.add("format", "gbrp"))
    chain.append(graph.add("buffersink"))
    for a, b in zip(chain, chain[1:], strict=False):
        a.link_to(b)
    graph.configure()
    return graph


def _rgb_planes(out: av.VideoFrame) -> list[np.ndarray]:
    """R, G, B planes of a gbrp frame (which stores G, B, R) as (height, width) uint8 views."""
    planes = []
    for i in (2, 0, 1):
        plane = out.planes[i]
        rows = np.frombuffer(plane, np.uint8).reshape(out.height, plane.line_size)
        planes.append(rows[:, : out.width])
    return planes


class Converter:
    """Scale + convert frames of one source shape to planar RGB at (width, height) through a
    libavfilter graph (swscale inside). Built for a first frame; `matches` says if a frame still fits."""

    def __init__(self, frame: av.VideoFrame, width: int, height: int, interpolation: str) -> None:
        fmt = frame.format.name
        self.shape = (frame.width, frame.height, fmt)
        self.steps = chroma_steps(fmt, frame.width, frame.height, width, height)
        self.graph = _graph(frame, width, height, interpolation, self.steps)
        self.offset = conversion_offset(fmt)  # subtract from every value (saturating)

    def matches(self, frame: av.VideoFrame) -> bool:
        return (frame.width, frame.height, frame.format.name) == self.shape

    def __call__(self, frame: av.VideoFrame) -> tuple[list[np.ndarray], av.VideoFrame]:
        """R, G, B planes as (height, width) uint8 views, and the frame that owns their memory."""
        self.graph.push(frame)
        out = self.graph.pull()
        return _rgb_planes(out), out


@functools.cache
def conversion_offset(pix_fmt: str) -> int:
    """How many levels darker the release's RGB conversion (`to_ndarray("rgb24")`, FFmpeg's unscaled
    converter) comes out than swscale's exact one for this pixel format, on this machine: 1 for 8-bit
    4:2:0 on x86, 0 where they agree. Measured once on a synthetic frame, rounded to whole levels;
    only YUV formats are measured (PyAV crashes writing some others, such as pal8)."""
    if not pix_fmt.startswith(("yuv", "nv", "p0")):
        return 0
    rng = np.random.default_rng(0)
    rgb = rng.integers(40, 216, (64, 96, 3), dtype=np.uint8)  # in gamut: no clipping either way
    try:
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt)
        theirs = frame.to_ndarray(format="rgb24").astype(np.float64)
        graph = _graph(frame, frame.width, frame.height, "BILINEAR", steps=[])
        graph.push(frame)
        ours = np.stack(_rgb_planes(graph.pull()), axis=-1).astype(np.float64)
    except (ValueError, av.error.FFmpegError):
        return 0
    return max(-3, min(3, round(float((ours - theirs).mean()))))
