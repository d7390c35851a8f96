"""Frame parity with the HunyuanVideo-Foley release: which frames it picks and the pixels its models get.

Runs the release's own sampler (`get_frames_av` from hunyuanvideo_foley/utils/feature_utils.py of a
checkout given by --official-src) on each video at 8 and 25 fps, learns which decoded frame each of
its samples is (through a thin wrapper around the `av` module it uses, which records the frames it
converts), resizes its frames the way its preprocessing does (SigLIP2: PIL bilinear to 512x512;
Synchformer: torch bicubic antialias, short side to 224, centre crop = torchvision's v2 Resize +
CenterCrop on uint8, which this venv cannot import), and compares with extract_frames:

  picks      samples whose source frame differs, for frames="official" and frames="exact"
  count      len(release's samples) vs Frames.official_counts
  pixels     mean / max absolute difference (grey levels, 0..255) over samples that show the same
             source frame, for both rules (exact: today's one-pass swscale resize)

The release module imports loguru and einops at the top (not used by get_frames_av); where they are
not installed, empty stand-ins are registered so the import succeeds. Memory: the release holds
every sample as full-resolution RGB; keep clips short (a few seconds at 4K).

Usage: python scripts/parity_frames.py VIDEO... [--official-src /tmp/official] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import types
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from foleyscope.media.frames import SIGLIP2, SYNCHFORMER, extract_frames  # noqa: E402


def load_official(src: Path):
    """The release's feature_utils module, with stand-ins for loguru/einops if they are missing."""
    for name, attrs in (("loguru", {"logger": types.SimpleNamespace(info=print, warning=print)}),
                        ("einops", {"rearrange": None})):
        try:
            importlib.import_module(name)
        except ImportError:
            sys.modules[name] = types.SimpleNamespace(**attrs)  # type: ignore[assignment]
    sys.path.insert(0, str(src))
    return importlib.import_module("hunyuanvideo_foley.utils.feature_utils")


class _Recorder:
    """Stands in for the `av` module inside the release's code: frames it converts are recorded."""

    def __init__(self, real_av) -> None:
        self.real, self.converted = real_av, []

    def __getattr__(self, name):
        return getattr(self.real, name)

    def open(self, *args, **kwargs):
        return _Container(self.real.open(*args, **kwargs), self)


class _Container:
    def __init__(self, inner, rec: _Recorder) -> None:
        self.inner, self.rec, self.index = inner, rec, -1

    def __enter__(self):
        self.inner.__enter__()
        return self

    def __exit__(self, *exc):
        return self.inner.__exit__(*exc)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def demux(self, *args, **kwargs):
        for packet in self.inner.demux(*args, **kwargs):
            yield _Packet(packet, self)


class _Packet:
    def __init__(self, inner, box: _Container) -> None:
        self.inner, self.box = inner, box

    def decode(self):
        out = []
        for frame in self.inner.decode():
            self.box.index += 1
            out.append(_Frame(frame, self.box.index, self.box.rec))
        return out


class _Frame:
    def __init__(self, inner, index: int, rec: _Recorder) -> None:
        self.inner, self.index, self.rec, self.time = inner, index, rec, inner.time

    def to_ndarray(self, **kwargs):
        rgb = self.inner.to_ndarray(**kwargs)
        self.rec.converted.append((self.index, rgb))
        return rgb


def official_samples(module, video: str, fps: float) -> tuple[np.ndarray, list[int]]:
    """The release's frames at `fps` and the decoded-frame index of each sample."""
    recorder = _Recorder(module.av)
    module.av = recorder
    try:
        frames, _ = module.get_frames_av(video, fps)
    finally:
        module.av = recorder.real
    indices, j = [], 0
    for frame in frames:  # each sample repeats the latest converted frame or takes the next one
        while not np.array_equal(frame, recorder.converted[j][1]):
            j += 1
        indices.append(recorder.converted[j][0])
    return frames, indices


def siglip_pixels(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).resize((512, 512), Image.Resampling.BILINEAR))


def synchformer_pixels(rgb: np.ndarray, size: int = 224) -> np.ndarray:
    h, w = rgb.shape[:2]
    nh, nw = (int(size * h / w), size) if w <= h else (size, int(size * w / h))
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float()
    y = torch.nn.functional.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
    y = y.clamp(0, 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    return y[top : top + size, left : left + size]


def compare(video: str, module) -> dict:
    report: dict = {"video": video}
    ours = {rule: extract_frames(video, [SIGLIP2, SYNCHFORMER], frames=rule) for rule in ("official", "exact")}
    for i, (spec, resize) in enumerate(((SIGLIP2, siglip_pixels), (SYNCHFORMER, synchformer_pixels))):
        theirs, idx = official_samples(module, video, spec.fps)
        entry: dict = {"release_samples": len(idx), "official_count": ours["official"].official_counts[i]}
        for rule, out in ours.items():
            mine = out.source_indices[i][: len(idx)]
            n = min(len(mine), len(idx))
            same = [k for k in range(n) if mine[k] == idx[k]]
            diffs = [np.abs(out.arrays[i][k].astype(np.int16) - resize(theirs[k])) for k in same]
            entry[rule] = {
                "samples": len(out.source_indices[i]),
                "picks_differing": int(n - len(same)),
                "compared": n,
                "first_difference": next((k for k in range(n) if mine[k] != idx[k]), None),
                "pixel_mean_abs": round(float(np.mean([d.mean() for d in diffs])), 3) if diffs else None,
                "pixel_max_abs": int(max(d.max() for d in diffs)) if diffs else None,
            }
        report[f"{spec.fps:g}fps"] = entry
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("videos", nargs="+")
    ap.add_argument("--official-src", type=Path, default=Path("/tmp/official"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    module = load_official(args.official_src)
    reports = []
    for video in args.videos:
        rep = compare(video, module)
        reports.append(rep)
        print(video)
        for key in ("8fps", "25fps"):
            e = rep[key]
            print(f"  {key}: release {e['release_samples']} samples, official_counts {e['official_count']}")
            for rule in ("official", "exact"):
                r = e[rule]
                print(f"    {rule:8s} {r['samples']} samples; picks differing {r['picks_differing']}/{r['compared']}"
                      f" (first at {r['first_difference']}); pixels on equal picks: mean {r['pixel_mean_abs']}"
                      f" max {r['pixel_max_abs']}")
    if args.json:
        args.json.write_text(json.dumps(reports, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
