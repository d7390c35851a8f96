"""Planted reloads in a user's loop over videos: the model built and its weights read again for every
video, once through torch.load + load_state_dict and once through a numpy loader the doctor has no
hook for beyond np.load itself. The clean twins load once and reuse the model."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from foleyscope.stages import Stage
from foleyscope.trace import stage
from planted import case

WIDTH, DEPTH, VIDEOS = 2048, 12, 2


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(WIDTH, WIDTH) for _ in range(DEPTH))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.relu(layer(x))
        return x


_DIR = Path(tempfile.mkdtemp(prefix="foleyscope-planted-"))


def _files() -> tuple[Path, Path]:
    pt, npz = _DIR / "net.pt", _DIR / "net.npz"
    if not pt.exists():
        torch.manual_seed(0)
        state = Net().state_dict()
        torch.save(state, pt)
        np.savez(npz, **{k: v.numpy() for k, v in state.items()})
    return pt, npz


def _dtype() -> torch.dtype:
    from planted.compute import fast_dtype

    return fast_dtype()


def _torch_loader() -> Net:
    net = Net()
    net.load_state_dict(torch.load(_files()[0], weights_only=True))
    return net.to(_dtype()).eval()


def _numpy_loader() -> Net:
    """A loader the doctor cannot see into: arrays from np.load copied into the parameters by hand."""
    net = Net()
    with np.load(_files()[1]) as arrays, torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(torch.from_numpy(arrays[name]))
    return net.to(_dtype()).eval()


def _videos(load: Callable[[], Net], per_video: bool) -> None:
    """Process VIDEOS videos: decode (a stand-in that takes time), then the model on the frames."""
    net = None if per_video else load()
    for _ in range(VIDEOS):
        with stage(Stage.DECODE):
            frames = torch.randn(64, WIDTH, generator=torch.Generator().manual_seed(1)).to(_dtype())
            torch.nn.functional.avg_pool1d(frames[None], 1)
        model = load() if per_video else net
        with stage(Stage.DENOISE), torch.inference_mode():
            for _ in range(4):
                model(frames)


@case("reload_per_video_torch", "model_reloaded", warmup=lambda: (_torch_loader(), _numpy_loader()))
def _reload_torch():
    """The model built and torch.load'ed for every video."""
    return (lambda: _videos(_torch_loader, True)), (lambda: _videos(_torch_loader, False))


@case("reload_per_video_numpy", "model_reloaded", warmup=lambda: (_torch_loader(), _numpy_loader()))
def _reload_numpy():
    """The model built and filled from an .npz for every video."""
    return (lambda: _videos(_numpy_loader, True)), (lambda: _videos(_numpy_loader, False))
