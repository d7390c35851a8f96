"""Ours against the official HunyuanVideo-Foley code, stage by stage, same inputs, side by side.

    .venv/bin/python benchmarks/official.py --official-src DIR [--deps DIR] [--seconds 5] [--repeat 5]
                                            [--vae-dim 512] [--clip 640x360]

DIR is a copy of https://github.com/Tencent-Hunyuan/HunyuanVideo-Foley (e.g. `git clone` it, or
unpack a release archive) and is never part of this repository. Its frame reader needs `einops` and
`loguru`, its DAC module `einops`, `argbind` and `tqdm`, its denoiser `diffusers`: install them
outside our venv, e.g. `.venv/bin/pip install --target /tmp/official-deps einops loguru argbind tqdm
requests && .venv/bin/pip install --no-deps --target /tmp/official-deps diffusers==0.35.2 timm==1.0.22
omegaconf==2.3.0 antlr4-python3-runtime==4.9.3`, and pass `--deps /tmp/official-deps`. Its Synchformer
module imports torchvision and torchaudio at the top (timm too), which do not import beside our torch
pin; its video branch uses neither, so empty stand-ins are registered for them, and for two
transformers helpers its audio branch names that transformers 5 removed. `audiotools` (its training
toolkit, which the DAC module imports at the top but decoding never calls) is replaced by an empty
shim here.

Stages compared (medians over --repeat, each after one warm-up, interleaved ours/official):
- frames: the official `get_frames_av` at 8 fps and again at 25 fps (two full decodes, every picked
  frame converted to full-size RGB), then its resizing (torchvision does not import beside our torch
  pin, so it is re-created: PIL bilinear 512x512 for SigLIP2, as torchvision does on PIL images; torch
  bicubic with antialias, short side 224, centre crop for Synchformer, as torchvision v2 does on
  tensors), against our single-pass `extract_frames`, which resizes inside the scaler.
- vae_decode: the official `DAC.decode` against our `DacVAE.decode`, the same random weights (ours
  loaded into theirs by state dict: the output must match to the bit) at --vae-dim decoder width.
- sync_encode: the official `Synchformer` (video branch, release size) against our `SyncEncoder` on the
  same normalised segments, the same random weights (ours loaded into theirs by state dict).
- denoise step: one CFG forward (batch 2) of the official `HunyuanVideoFoley` against ours
  (`prepare()` once, then the step), the same random weights (ours loaded into theirs), at the
  benchmarks' `mid` structure (the XL design at 768 wide, 4 dual + 8 single blocks) and --dtype.
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

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from foleyscope.engine.modes import DTYPES  # noqa: E402
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
    def placeholder(name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (), {"__init__": lambda self, *a, **k: None})

    shim.__getattr__ = placeholder
    shim.ml.__getattr__ = placeholder
    sys.modules.update({"audiotools": shim, "audiotools.ml": shim.ml})
    for name, sub in (("hunyuanvideo_foley", ""), ("hunyuanvideo_foley.models", "models"),
                      ("hunyuanvideo_foley.utils", "utils")):
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(src / "hunyuanvideo_foley" / sub)]
        sys.modules[name] = pkg
    from hunyuanvideo_foley.models.dac_vae.model.dac import DAC
    from hunyuanvideo_foley.models.hifi_foley import HunyuanVideoFoley
    from hunyuanvideo_foley.utils.feature_utils import get_frames_av

    _stand_in("torchvision", "torchaudio")
    import transformers.pytorch_utils as pytorch_utils

    for name in ("find_pruneable_heads_and_indices", "prune_linear_layer"):  # gone in transformers 5
        if not hasattr(pytorch_utils, name):
            setattr(pytorch_utils, name, None)
    from hunyuanvideo_foley.models.synchformer.synchformer import Synchformer

    return types.SimpleNamespace(DAC=DAC, get_frames_av=get_frames_av, Foley=HunyuanVideoFoley, src=src,
                                 Synchformer=Synchformer)


class _Anything(type):
    """A stand-in class whose every attribute is another stand-in (enum members, nested classes)."""

    def __getattr__(cls, attr: str) -> type:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Anything(attr, (), {"__init__": lambda self, *a, **k: None})

    def __hash__(cls) -> int:
        return id(cls)


def _stand_in(*roots: str) -> None:
    """Importing anything under `roots` gives an empty module whose names are stand-ins."""
    import importlib.abc
    import importlib.machinery

    class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, name, path=None, target=None):  # noqa: ANN001, ANN202
            if name.split(".")[0] in roots:
                return importlib.machinery.ModuleSpec(name, self, is_package=True)
            return None

        def create_module(self, spec):  # noqa: ANN001, ANN202
            module = types.ModuleType(spec.name)
            module.__path__ = []

            def anything(attr: str) -> type:
                if attr.startswith("__"):
                    raise AttributeError(attr)
                return _Anything(attr, (), {"__init__": lambda self, *a, **k: None})

            module.__getattr__ = anything
            return module

        def exec_module(self, module) -> None:  # noqa: ANN001
            pass

    sys.meta_path.insert(0, Finder())


def sync_pair(off: types.SimpleNamespace, segments: int):
    """(ours, theirs) Synchformer video-branch callables on the same weights and segments, and their
    max relative difference."""
    from foleyscope.model.synchformer import SYNC_PRESETS, SyncEncoder

    torch.manual_seed(0)
    ours = SyncEncoder(SYNC_PRESETS["official"]).eval()
    theirs = off.Synchformer().eval()
    theirs.load_state_dict(ours.state_dict(), strict=False)  # its audio branch stays unused
    x = torch.randn(segments, 1, 16, 3, 224, 224)  # normalised segments, channels first (theirs)
    channels_last = x[:, 0].permute(0, 1, 3, 4, 2).contiguous()  # ours
    mine = lambda: ours.vfeat_extractor(channels_last)  # noqa: E731
    official = lambda: theirs(x)  # noqa: E731
    a, b = mine().reshape(-1), official().reshape(-1)
    return mine, official, float((a - b).norm() / b.norm())


def denoise_pair(off: types.SimpleNamespace, seconds: float, dtype: torch.dtype):
    """(ours, theirs) step callables on the same weights and inputs, and their max relative difference."""
    import yaml

    from foleyscope.engine.presets import PRESETS
    from foleyscope.model.foley import FoleyDenoiser

    cfg = PRESETS["mid"].denoiser
    kwargs = yaml.safe_load((off.src / "configs" / "hunyuanvideo-foley-xl.yaml").read_text())["model_config"]
    kwargs = {**kwargs["model_kwargs"], "depth_triple_blocks": cfg.depth_triple, "depth_single_blocks":
              cfg.depth_single, "hidden_size": cfg.hidden, "num_heads": cfg.heads, "clip_dim": cfg.clip_dim,
              "condition_dim": cfg.text_dim, "sync_feat_dim": cfg.sync_dim}
    config = types.SimpleNamespace(model_config=types.SimpleNamespace(model_kwargs=kwargs))
    torch.manual_seed(0)
    ours = FoleyDenoiser(cfg).eval().to(dtype)
    theirs = off.Foley(config).eval().to(dtype)
    theirs.load_state_dict(ours.state_dict(), strict=False)
    latent = int(seconds * 50)
    clip = torch.randn(2, int(seconds * 8), cfg.clip_dim, dtype=dtype)
    sync = torch.randn(2, ((int(seconds * 25) - 16) // 8 + 1) * 8, cfg.sync_dim, dtype=dtype)
    text = torch.randn(2, 12, cfg.text_dim, dtype=dtype)
    x, t = torch.randn(2, cfg.latent_channels, latent, dtype=dtype), torch.full((2,), 500.0)
    cond = ours.prepare(clip, sync, text, latent)
    mine = lambda: ours(x, t, cond)  # noqa: E731 - prepare() is step-invariant: once per video
    official = lambda: theirs(x=x, t=t, cond=text, clip_feat=clip, sync_feat=sync)["x"]  # noqa: E731
    a, b = mine().float(), official().float()
    return mine, official, float((a - b).norm() / b.norm())


def official_frames(off: types.SimpleNamespace, clip: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The official frame reading (two decodes) plus its preprocessing resizes, re-created."""
    from PIL import Image

    frames8, _ = off.get_frames_av(str(clip), 8)
    squashed = [Image.fromarray(f).resize((512, 512), Image.Resampling.BILINEAR) for f in frames8]
    frames25, _ = off.get_frames_av(str(clip), 25)
    x = torch.from_numpy(frames25).permute(0, 3, 1, 2).float()
    h, w = x.shape[-2:]
    size = (224, int(224 * w / h)) if h <= w else (int(224 * h / w), 224)
    x = torch.nn.functional.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)
    top, left = int(round((size[0] - 224) / 2)), int(round((size[1] - 224) / 2))
    crops = x[..., top : top + 224, left : left + 224].round().clamp(0, 255).to(torch.uint8)
    return torch.stack([torch.from_numpy(np.asarray(im)) for im in squashed]), crops


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
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="of the denoiser step")
    ap.add_argument("--sync-segments", type=int, default=2, help="Synchformer segments (16 frames each)")
    args = ap.parse_args()
    off = import_official(args.official_src.resolve(), args.deps)
    w, h = map(int, args.clip.split("x"))
    clip = make_video(Path(tempfile.mkdtemp()) / "clip.mp4", SynthSpec(width=w, height=h, seconds=args.seconds))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.seconds:g} s {args.clip} clip, "
          f"median of {args.repeat}")
    rows = []
    ours_t, theirs_t = side_by_side(lambda: extract_frames(clip, [SIGLIP2, SYNCHFORMER]),
                                    lambda: official_frames(off, clip), args.repeat)
    rows.append(("frames (8 + 25 fps, resized)", ours_t, theirs_t, "official resizing re-created"))

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

    with torch.inference_mode():
        mine, official, rel = sync_pair(off, args.sync_segments)
        ours_t, theirs_t = side_by_side(mine, official, args.repeat)
    rows.append((f"sync_encode ({args.sync_segments} segments, release size, fp32)", ours_t, theirs_t,
                 f"rel diff {rel:.1e}"))

    dtype = getattr(torch, DTYPES[args.dtype])
    with torch.inference_mode():
        mine, official, rel = denoise_pair(off, args.seconds, dtype)
        ours_t, theirs_t = side_by_side(mine, official, args.repeat)
    rows.append((f"denoise step (mid, {args.dtype}, CFG batch 2)", ours_t, theirs_t, f"rel diff {rel:.1e}"))

    print("\n| stage | ours (s) | official (s) | official / ours | note |\n|---|---|---|---|---|")
    for name, a, b, note in rows:
        print(f"| {name} | {a:.3f} | {b:.3f} | {b / a:.2f}x | {note} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
