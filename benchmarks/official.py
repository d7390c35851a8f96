"""Ours against the official HunyuanVideo-Foley code, stage by stage, same inputs, side by side.

    .venv/bin/python benchmarks/official.py --official-src DIR [--deps DIR] [--seconds 5] [--repeat 5]
                                            [--vae-dim 512] [--clip 640x360]

DIR is a copy of https://github.com/Tencent-Hunyuan/HunyuanVideo-Foley (e.g. `git clone` it, or
unpack a release archive) and is never part of this repository. Its frame reader needs `einops` and
`loguru`, its DAC module `einops`, `argbind` and `tqdm`: install them outside our venv, e.g.
`.venv/bin/pip install --target /tmp/official-deps einops loguru argbind tqdm`, and pass
`--deps /tmp/official-deps`. `audiotools` (its training toolkit, which the DAC module imports at the
top but decoding never calls) is replaced by an empty shim here.

Stages compared (medians over --repeat, each after one warm-up, interleaved ours/official):
- frames: the official `get_frames_av` at 8 fps and again at 25 fps (two full decodes, every picked
  frame converted to full-size RGB; its torchvision resizing is not run: torchvision does not import
  beside our torch pin) against our single-pass `extract_frames`, which also resizes.
- vae_decode: the official `DAC.decode` against our `DacVAE.decode`, the same random weights (ours
  loaded into theirs by state dict: the output must match to the bit) at --vae-dim decoder width.
The denoiser is not here: the official class needs `diffusers`; per step it matched ours to 2e-6 and
ran 1.1-1.2x slower than ours in earlier measurements (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from foleyscope.media.frames import SIGLIP2, SYNCHFORMER, extract_frames  # noqa: E402
from foleyscope.media.synth import SynthSpec, make_video  # noqa: E402
from foleyscope.model.dac_vae import DAC_PRESETS, DacVAE  # noqa: E402


def import_official(src: Path, deps: Path | None) -> types.SimpleNamespace:
    """The official frame reader and DAC class, imported from `src` without running its package
    __init__ (which loads every model) and with `audiotools` shimmed."""
    if deps is not None:
        sys.path.insert(0, str(deps))
    shim = types.ModuleType("audiotools")
    shim.ml = types.ModuleType("audiotools.ml")
    shim.ml.BaseModel = type("BaseModel", (torch.nn.Module,), {"INTERN": [], "EXTERN": []})
    placeholder = lambda name: type(name, (), {"__init__": lambda self, *a, **k: None})  # noqa: E731
    shim.__getattr__ = placeholder
    shim.ml.__getattr__ = placeholder
    sys.modules.update({"audiotools": shim, "audiotools.ml": shim.ml})
    for name, sub in (("hunyuanvideo_foley", ""), ("hunyuanvideo_foley.models", "models"),
                      ("hunyuanvideo_foley.utils", "utils")):
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(src / "hunyuanvideo_foley" / sub)]
        sys.modules[name] = pkg
    from hunyuanvideo_foley.models.dac_vae.model.dac import DAC
    from hunyuanvideo_foley.utils.feature_utils import get_frames_av

    return types.SimpleNamespace(DAC=DAC, get_frames_av=get_frames_av)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def side_by_side(ours: Callable[[], object], theirs: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Medians, runs interleaved so load from elsewhere hurts both alike."""
    ours(), theirs()
    a, b = [], []
    for _ in range(repeat):
        a.append(timed(ours))
        b.append(timed(theirs))
    return statistics.median(a), statistics.median(b)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official-src", type=Path, required=True, help="a copy of the official repository")
    ap.add_argument("--deps", type=Path, default=None, help="folder with einops, loguru, argbind, tqdm")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--vae-dim", type=int, default=512, help="decoder width (2048 is the release's)")
    ap.add_argument("--clip", default="640x360")
    args = ap.parse_args()
    off = import_official(args.official_src.resolve(), args.deps)
    w, h = map(int, args.clip.split("x"))
    clip = make_video(Path(tempfile.mkdtemp()) / "clip.mp4", SynthSpec(width=w, height=h, seconds=args.seconds))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.seconds:g} s {args.clip} clip, "
          f"median of {args.repeat}")
    rows = []
    ours_t, theirs_t = side_by_side(lambda: extract_frames(clip, [SIGLIP2, SYNCHFORMER]),
                                    lambda: (off.get_frames_av(str(clip), 8), off.get_frames_av(str(clip), 25)),
                                    args.repeat)
    rows.append(("frames (8 + 25 fps)", ours_t, theirs_t, "official without its resizing"))

    cfg = dataclasses.replace(DAC_PRESETS["official"], decoder_dim=args.vae_dim)
    torch.manual_seed(0)
    ours_vae = DacVAE(cfg, encoder=True).eval()
    theirs_vae = off.DAC(**cfg.to_metadata()).eval()
    theirs_vae.load_state_dict(ours_vae.state_dict())
    z = torch.randn(1, cfg.latent_dim, int(args.seconds * 50))
    with torch.inference_mode():
        same = torch.equal(ours_vae.decode(z), theirs_vae.decode(z))
        ours_t, theirs_t = side_by_side(lambda: ours_vae.decode(z), lambda: theirs_vae.decode(z), args.repeat)
    rows.append((f"vae_decode (decoder {args.vae_dim})", ours_t, theirs_t, "bit-identical" if same else "DIFFERS"))

    print("\n| stage | ours (s) | official (s) | official / ours | note |\n|---|---|---|---|---|")
    for name, a, b, note in rows:
        print(f"| {name} | {a:.3f} | {b:.3f} | {b / a:.2f}x | {note} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
