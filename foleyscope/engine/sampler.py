"""Flow-matching sampler: linear sigmas 1 -> 0, velocity prediction, Euler or Heun, batched CFG.

The denoiser sees t = sigma * 1000 (the official convention) and predicts v = noise - x0, so one
Euler step is x <- x + (sigma_next - sigma) * v. CFG runs one batched forward over
[uncond, cond]; the guidance combine and the solver step run in fp32 whatever the model dtype.
Sigmas stay a Python list so reading them never forces a device sync.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from foleyscope.trace import step as trace_step

Solver = Literal["euler", "heun"]
Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x [2B,C,L], t [2B]) -> v


def sigmas(steps: int, shift: float = 1.0) -> list[float]:
    """`steps + 1` sigmas from 1 to 0; `shift` != 1 bends them toward high noise (SD3 shift)."""
    if steps < 1:
        raise ValueError("steps must be >= 1")
    out = [1 - i / steps for i in range(steps + 1)]
    if shift != 1.0:
        out = [shift * s / (1 + (shift - 1) * s) for s in out]
    return out


def guided(velocity: Velocity, cfg: float) -> Callable[[torch.Tensor, float], torch.Tensor]:
    """Wrap a batched [uncond, cond] velocity model into one guided velocity in fp32."""

    def fn(x: torch.Tensor, sigma: float) -> torch.Tensor:
        if cfg == 1.0:  # no guidance: only the conditional half is needed
            return velocity(x, torch.full((x.shape[0],), sigma * 1000.0, device=x.device)).float()
        both = torch.cat([x, x])
        t = torch.full((both.shape[0],), sigma * 1000.0, device=x.device)
        v_uncond, v_cond = velocity(both, t).float().chunk(2)
        return v_uncond + cfg * (v_cond - v_uncond)

    return fn


def sample(
    velocity: Velocity,
    noise: torch.Tensor,
    *,
    steps: int = 50,
    cfg: float = 4.5,
    solver: Solver = "euler",
    shift: float = 1.0,
    on_step: Callable[[int, int], None] | None = None,
    consensus: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Integrate from pure noise (sigma 1) to a clean latent (sigma 0); returns fp32 latents.

    `velocity` takes the CFG-doubled batch when cfg != 1 (uncond half first). `consensus`, if given,
    maps the batch after every step (joint denoising: overlapping windows agree on shared frames)."""
    if solver not in ("euler", "heun"):
        raise ValueError(f"unknown solver {solver!r} (euler, heun)")
    v = guided(velocity, cfg)
    x = noise.float()
    sig = sigmas(steps, shift)
    for i in range(steps):
        with trace_step(i, steps):
            s, s_next = sig[i], sig[i + 1]
            d = v(x, s)
            if solver == "heun" and s_next > 0:
                x_pred = x + (s_next - s) * d
                d = 0.5 * (d + v(x_pred, s_next))
            x = x + (s_next - s) * d
            if consensus is not None:
                x = consensus(x)
        if on_step is not None:
            on_step(i + 1, steps)
    return x
