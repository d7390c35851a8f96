"""First-Block-Cache for the denoiser's step loop: skip the rest of the network on a step whose first
block barely changed its input since the last fully computed step.

Adjacent flow-matching steps feed the network nearly the same latent; the first block's residual
(its output minus its input) is a cheap probe of how much the step's work will differ. When its
relative L1 change against the last full step is under `threshold`, the residual the remaining
blocks added on that full step is reused (output of the last block minus output of the first),
and only the embedding, the first block and the final layer run. One `StepCache` lives in one
Conditioning, so a new video (a new `prepare`) starts with an empty cache, and chunks of windows
never share one.

The decision reads one number back from the device per step (`.item()`): a host sync that costs
nothing on a CPU and a few microseconds of pipeline drain per step on CUDA."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class StepCache:
    threshold: float
    computed: int = 0
    skipped: int = 0
    first_residual: Tensor | None = None  # the first block's residual on the last full step
    rest_residual: Tensor | None = None  # what the other blocks added on that step

    def can_skip(self, first_residual: Tensor) -> bool:
        """Whether this step may reuse `rest_residual`; counts the step either way."""
        skip = self.rest_residual is not None and self.change(first_residual) < self.threshold
        if skip:
            self.skipped += 1
        else:
            self.computed += 1
            self.first_residual = first_residual
        return skip

    def change(self, first_residual: Tensor) -> float:
        """Relative L1 change of the first block's residual since the last full step (fp32, one sync)."""
        assert self.first_residual is not None
        prev = self.first_residual.float()
        with torch.no_grad():
            ratio = (first_residual.float() - prev).abs().mean() / prev.abs().mean()
        return float(ratio.item())  # NaN (an all-zero residual) compares False: the step is computed

    def store(self, rest_residual: Tensor) -> None:
        self.rest_residual = rest_residual
