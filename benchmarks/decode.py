"""Decode benchmark (issue 2, item 8): our single-pass extraction vs the reference's approach vs a floor.

Methods, timed side by side on the same generated clips in the same run:
  (a) ours      extract_frames(path, [SIGLIP2, SYNCHFORMER]): one decode, 8 fps @ 512 squash and
                25 fps @ 224 crop, resized inside swscale, only picked frames converted.
  (b) official  re-created from ../shared/reference/hunyuanvideo-foley.md stage 1: one full decode
                per rate (8 and 25 fps), every picked frame converted to full-resolution rgb24, then
                resized per sample with PIL (SigLIP2: 512x512 bilinear; Synchformer: short side 224
                bicubic + centre crop). Resizing streams frame by frame here instead of first holding
                every full-resolution frame in memory as the reference does, so (b) is if anything
                flattered.
  (c) floor     one plain threaded decode of every frame, no conversion.
Targets: (a) at least 3x faster than (b); (a) at most 1.5x (c).

Usage: python benchmarks/decode.py [--repeat 7] [--repeat-4k 3] [--seconds-4k 10] [--cache DIR]
                                  [--clips 720p,720p-8M,4k]
Clips are generated once (camera-like: scrolling texture, moving bright blocks, per-frame grain) and
cached in --cache (default /tmp/foleyscope-bench; the 4K60 HEVC clip takes a few minutes to encode).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from foleyscope.media.atomic import atomic_output  # noqa: E402
from foleyscope.media.frames import SIGLIP2, SYNCHFORMER, extract_frames  # noqa: E402


@dataclass(frozen=True)
class Clip:
    key: str
    width: int
    height: int
    fps: int
    seconds: float
    codec: str
    options: dict[str, str]
    bit_rate: int | None = None  # average-bit-rate encode instead of constant quality

    @property
    def name(self) -> str:
        codec = {"libx264": "H.264", "libx265": "HEVC"}[self.codec]
        return f"{self.width}x{self.height} {self.fps} fps {codec}, {self.seconds:g} s"


CLIPS = {
    # web-like: what x264's default quality gives this content (~1.4 Mbit/s), cheap to decode
    "720p": Clip("720p", 1280, 720, 25, 10.0, "libx264", {"preset": "veryfast", "crf": "23"}),
    # camera-like: the bit rate a phone records 720p at; the grain survives, decoding costs more
    "720p-8M": Clip("720p-8M", 1280, 720, 25, 10.0, "libx264", {"preset": "veryfast"}, 8_000_000),
    "4k": Clip(
        "4k",
        3840,
        2160,
        60,
        10.0,
        "libx265",
        {"preset": "ultrafast", "crf": "24", "x265-params": "log-level=error"},
    ),
}


def make_clip(clip: Clip, path: Path) -> Path:
    """Camera-like content: a textured background scrolling diagonally, bright blocks moving across
    it, and sensor grain that changes every frame (so the codec cannot predict it away)."""
    rng = np.random.default_rng(0)
    w, h, margin, grain = clip.width, clip.height, 256, 5

    def texture(th: int, tw: int, cell: int) -> np.ndarray:
        coarse = rng.integers(0, 256, (th // cell + 2, tw // cell + 2), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(coarse, format="gray")
        return frame.reformat(width=tw, height=th, interpolation="BICUBIC").to_ndarray()

    # luma kept in [16, 235 - 2 * grain] so adding uint8 grain in [0, 2 * grain] cannot wrap
    luma = 16 + texture(h + margin, w + 2 * margin, 8).astype(np.uint16) * (219 - 2 * grain) // 255
    luma = luma.astype(np.uint8)
    noise = [rng.integers(0, 2 * grain + 1, (h, w), dtype=np.uint8) for _ in range(5)]
    cb, cr = (texture(h // 2 + margin, w // 2 + margin, 16) for _ in range(2))
    n = int(clip.seconds * clip.fps)
    with atomic_output(path) as tmp, av.open(str(tmp), "w") as out:
        stream = out.add_stream(clip.codec, rate=clip.fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = dict(clip.options)
        if clip.bit_rate:
            stream.bit_rate = clip.bit_rate
        for i in range(n):
            dx, dy = (3 * i) % (2 * margin), (2 * i) % margin
            buf = np.empty((h * 3 // 2, w), np.uint8)
            buf[:h] = luma[dy : dy + h, dx : dx + w]
            buf[:h] += noise[i % len(noise)]
            for k in range(3):  # "impacts": blocks sweeping across at different speeds
                bw = w // 20
                x = (i * (k + 1) * w // (clip.fps * 3)) % (w - bw)
                y = h * (k + 1) // 4
                buf[y : y + bw, x : x + bw] = 235
            ys, xs = slice(dy // 2, dy // 2 + h // 2), slice(dx // 2, dx // 2 + w // 2)
            buf[h : h + h // 4] = cb[ys, xs].reshape(h // 4, w)
            buf[h + h // 4 :] = cr[ys, xs].reshape(h // 4, w)
            frame = av.VideoFrame.from_ndarray(buf, format="yuv420p")
            frame.pts = i
            out.mux(stream.encode(frame))
            if (i + 1) % clip.fps == 0:
                print(f"  generating {clip.key}: {i + 1}/{n} frames", file=sys.stderr, flush=True)
        out.mux(stream.encode())
    return path


# ---- the three methods -----------------------------------------------------------------------


def ours(path: Path) -> int:
    out = extract_frames(path, [SIGLIP2, SYNCHFORMER])
    return sum(len(a) for a in out.arrays)


def _official_pass(path: Path, fps: float, resize: Callable[[Image.Image], Image.Image]) -> int:
    """One full decode at one rate, full-resolution rgb24 per picked frame, PIL resize per sample."""
    picked: list[np.ndarray] = []
    step, next_t = 1.0 / fps, 0.0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            t = frame.time
            if t < 0:
                continue
            if t > 15:  # the reference's hard cap
                break
            rgb = None
            while t >= next_t:  # emit this frame for every sample time it has reached
                if rgb is None:
                    rgb = frame.to_ndarray(format="rgb24")
                picked.append(np.asarray(resize(Image.fromarray(rgb).convert("RGB"))))
                next_t += step
    return len(picked)


def _squash_512(img: Image.Image) -> Image.Image:
    return img.resize((512, 512), Image.Resampling.BILINEAR)


def _short224_crop(img: Image.Image) -> Image.Image:
    w, h = img.size
    s = 224 / min(w, h)
    img = img.resize((max(224, int(w * s)), max(224, int(h * s))), Image.Resampling.BICUBIC)
    left, top = (img.width - 224) // 2, (img.height - 224) // 2
    return img.crop((left, top, left + 224, top + 224))


def official(path: Path) -> int:
    return _official_pass(path, 8.0, _squash_512) + _official_pass(path, 25.0, _short224_crop)


def floor(path: Path) -> int:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return sum(1 for _ in container.decode(stream))


METHODS: dict[str, Callable[[Path], int]] = {"(a) ours": ours, "(b) official": official, "(c) floor": floor}


# ---- driver ----------------------------------------------------------------------------------


def _cpu_seconds() -> float:
    """User + system CPU of this process, all threads (FFmpeg's decoder threads included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_name() -> str:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in text.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7, help="timed runs per method (the minimum is kept)")
    ap.add_argument("--repeat-4k", type=int, default=3, help="timed runs per method on the 4K clip")
    ap.add_argument("--seconds-4k", type=float, default=10.0, help="length of the 4K60 clip")
    ap.add_argument("--clips", default="720p,720p-8M,4k")
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "foleyscope-bench")
    args = ap.parse_args(argv)

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"machine: {cpu_name()}, {os.cpu_count()} logical CPUs; PyAV {av.__version__}, "
        f"FFmpeg {av.ffmpeg_version_info}; min of {args.repeat} runs ({args.repeat_4k} for 4K), "
        "methods interleaved; "
        f"load average at the start: {load}\n"
    )
    rows, verdicts = [], []
    for key in args.clips.split(","):
        clip = CLIPS[key]
        if key == "4k":
            clip = Clip(**{**clip.__dict__, "seconds": args.seconds_4k})
        path = args.cache / f"{key}-{clip.fps}fps-{clip.seconds:g}s-{clip.codec}-v2.mp4"
        if not path.exists():
            t0 = time.perf_counter()
            make_clip(clip, path)
            print(f"  generated {path} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        label = f"{clip.name} ({path.stat().st_size * 8 / clip.seconds / 1e6:.1f} Mbit/s)"
        wall: dict[str, list[float]] = {m: [] for m in METHODS}
        cpu: dict[str, list[float]] = {m: [] for m in METHODS}
        for _ in range(args.repeat_4k if key == "4k" else args.repeat):
            for name, fn in METHODS.items():
                c0, t0 = _cpu_seconds(), time.perf_counter()
                fn(path)
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(_cpu_seconds() - c0)
        best = {m: min(v) for m, v in wall.items()}
        for name in METHODS:
            rows.append(
                f"| {label} | {name} | {best[name]:.2f} | {statistics.median(wall[name]):.2f} | "
                f"{min(cpu[name]):.2f} | {best[name] / best['(a) ours']:.2f} | "
                f"{best[name] / best['(c) floor']:.2f} |"
            )
        speedup = best["(b) official"] / best["(a) ours"]
        over_floor = best["(a) ours"] / best["(c) floor"]
        verdicts.append(
            f"{label}: (a) is {speedup:.1f}x faster than (b) (target >= 3x: "
            f"{'met' if speedup >= 3 else 'MISSED'}); (a) is {over_floor:.2f}x the floor "
            f"(target <= 1.5x: {'met' if over_floor <= 1.5 else 'MISSED'})"
        )

    print("| clip | method | wall s (min) | wall s (median) | CPU s (min) | ratio vs ours | ratio vs floor |")
    print("|---|---|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    print(f"\nload average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    for line in verdicts:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
