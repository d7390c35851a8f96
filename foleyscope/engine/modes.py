"""Speed switches, each a small function applied to a loaded pipeline's components (gpt-fast style):
nothing else in the engine knows about them."""

from __future__ import annotations

import torch

from foleyscope.model.foley import FoleyDenoiser


def compile_denoiser(denoiser: FoleyDenoiser, *, mode: str | None = None, backend: str = "inductor") -> None:
    """torch.compile the denoiser's step (the only network that runs once per step). Shapes are
    static within a video, so `dynamic=False`; the first video pays the compile time (tens of seconds),
    which pays off over the 50 steps of every later video on a GPU. On CUDA the default mode is
    'max-autotune-no-cudagraphs'; 'reduce-overhead' adds CUDA graphs."""
    if mode is None and backend == "inductor":
        mode = "max-autotune-no-cudagraphs" if next(denoiser.parameters()).is_cuda else "default"
    denoiser.forward = torch.compile(denoiser.forward, mode=mode, backend=backend, dynamic=False)
