"""Feature and latent parity with the HunyuanVideo-Foley release's inputs, end to end through our networks.

Our networks were checked against the release's classes on identical inputs (SigLIP2 and the VAE
bit-identical, Synchformer 8.5e-7, the denoiser 2e-6 per step: tests and benchmarks/official.py),
so what remains between the two pipelines is what they feed those networks. This script feeds our
networks both ways on each VIDEO and compares:

  release   the release's own frame reader (`get_frames_av` from --official-src, both rates) and its
            resizing (re-created as in scripts/parity_frames.py), its latent count int(T/25*50)
  ours      FoleyPipeline.prepare with --frames official (the default) and with --frames exact

Reported: picked frame counts, latent counts, SigLIP2 and Synchformer features and the final latents
(same noise, 10 Euler steps, CFG 4.5, fp32) as relative L2 against the release's. The networks are
the tiny preset's seeded random ones (real weights are not downloadable here); give --preset and
--weights to run the released checkpoints.

Usage: python scripts/parity_features.py VIDEO... --official-src DIR [--steps 10] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from parity_frames import load_official, official_samples, siglip_pixels, synchformer_pixels  # noqa: E402

from foleyscope.engine.modes import Mode  # noqa: E402
from foleyscope.engine.pipeline import Conditions, FoleyPipeline  # noqa: E402
from foleyscope.engine.windows import LatentLayout, Window, official_latent_count  # noqa: E402


def rel(a: torch.Tensor, b: torch.Tensor) -> float | None:
    if a.shape != b.shape:
        return None
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


@torch.inference_mode()
def release_conditions(pipe: FoleyPipeline, module, video: str, prompt: str) -> Conditions:
    """The release's frames and counts through our encoders (what its pipeline would feed the models)."""
    c, p = pipe.components, pipe.preset
    f8, _ = official_samples(module, video, 8)
    f25, _ = official_samples(module, video, 25)
    clip = pipe._batched(c.visual_encoder, np.stack([siglip_pixels(f) for f in f8]), p.visual_batch)[None]
    sync_px = np.stack([synchformer_pixels(f) for f in f25])
    sync = c.sync_encoder(torch.from_numpy(sync_px[None]).to(pipe.device)).to(pipe.dtype)
    text = c.text_encoder(["noisy, harsh", prompt])[0].to(pipe.dtype)
    windows = [Window(0.0, len(f25) / 25)]
    latent_len = official_latent_count(len(f25))
    return Conditions(len(f25) / 25, windows, LatentLayout(windows, latent_len, p.latent_rate), clip, sync, text)


def compare(pipe: FoleyPipeline, module, video: str, prompt: str, steps: int) -> dict:
    theirs = release_conditions(pipe, module, video, prompt)
    ref_latents = pipe.denoise(theirs, steps=steps, seed=0)
    out: dict = {"video": video, "release": {"clip_frames": theirs.clip.shape[1], "latents": theirs.latent_len}}
    for rule in ("official", "exact"):
        ours = FoleyPipeline(pipe.components, pipe.preset, pipe.device, pipe.mode, frames=rule)
        cond = ours.prepare(video, prompt)
        latents = ours.denoise(cond, steps=steps, seed=0)
        out[rule] = {
            "clip_frames": cond.clip.shape[1], "latents": cond.latent_len,
            "siglip2_rel_l2": rel(cond.clip, theirs.clip), "synchformer_rel_l2": rel(cond.sync, theirs.sync),
            "final_latents_rel_l2": rel(latents, ref_latents),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("videos", nargs="+")
    ap.add_argument("--official-src", type=Path, required=True)
    ap.add_argument("--prompt", default="footsteps on gravel")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    module = load_official(args.official_src.resolve())
    pipe = FoleyPipeline.load(args.preset, args.weights, device="cpu", mode=Mode("fp32"), seed=0)
    rows = [compare(pipe, module, v, args.prompt, args.steps) for v in args.videos]
    print("| video | rule | clip frames (release) | latents (release) | SigLIP2 rel L2 | Synchformer rel L2 "
          "| final latents rel L2 |\n|---|---|---|---|---|---|---|")
    for r in rows:
        for rule in ("official", "exact"):
            m = r[rule]
            fmt = lambda x: "shape differs" if x is None else f"{x:.2e}"  # noqa: E731
            print(f"| {Path(r['video']).name} | {rule} | {m['clip_frames']} ({r['release']['clip_frames']}) | "
                  f"{m['latents']} ({r['release']['latents']}) | {fmt(m['siglip2_rel_l2'])} | "
                  f"{fmt(m['synchformer_rel_l2'])} | {fmt(m['final_latents_rel_l2'])} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
