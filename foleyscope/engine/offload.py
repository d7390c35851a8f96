"""Low-memory modes: weights parked in pinned host memory, on the GPU only while they work.

* `--offload model`: one network resident at a time. Calling a network (an encoder, the denoiser's
  `prepare` or step, the VAE's `decode`) brings it to the GPU and parks the one that was there, so
  the denoiser stays resident through all its steps and a stage pays one host-to-device copy.
* `--offload blocks[:N]`: the denoiser's first N blocks (default 4; the dual-stream ones, the
  largest) stay on the GPU with its small layers; every other block is copied in just before it
  runs and dropped after, the next one's copy started on a side CUDA stream while the current block
  computes (two streamed blocks on the GPU at most). The triple blocks' text projections stay
  resident: `prepare` uses them outside the block's forward. Each step copies every streamed block
  once, so the speed is the copy bandwidth's (PCIe): keep as many blocks resident as fit.

Parked weights are copied to host memory once, when the mode is applied; nothing is re-read from
disk per video. Quantised weights (torchao tensor subclasses) are moved through their inner tensors.
Off CUDA (the tests) the same code runs with plain synchronous copies and no pinning."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

from foleyscope.errors import FoleyscopeError

if TYPE_CHECKING:
    from foleyscope.engine.presets import Components

TEXT_KV = ("text_cross_kv", "text_cross_k_norm")  # used by `prepare`, outside the blocks' forward
DEFAULT_RESIDENT_BLOCKS = 4  # `blocks` without N (engine.memory plans with the same number)


def parse_offload(spec: str) -> tuple[str, int]:
    """`none`, `model`, `blocks` or `blocks:N` -> (kind, N resident blocks; 0 unless blocks)."""
    kind, _, n = spec.partition(":")
    if kind not in ("none", "model", "blocks") or (n and kind != "blocks"):
        raise FoleyscopeError(f"--offload {spec}: expected none, model or blocks[:N]")
    if n and not n.isdigit():
        raise FoleyscopeError(f"--offload {spec}: N (blocks kept on the GPU) must be a whole number >= 0")
    if kind != "blocks":
        return kind, 0
    return kind, int(n) if n else DEFAULT_RESIDENT_BLOCKS


def map_tensor(t: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
    """`fn` applied to a plain tensor, or to each inner tensor of a tensor subclass (torchao's)."""
    if not is_traceable_wrapper_subclass(t):
        return fn(t)
    names, ctx = t.__tensor_flatten__()
    inner = {n: map_tensor(getattr(t, n), fn) for n in names}
    return type(t).__tensor_unflatten__(inner, ctx, t.shape, t.stride())


def _inner(t: Tensor) -> Iterable[Tensor]:
    if not is_traceable_wrapper_subclass(t):
        yield t
        return
    for n in t.__tensor_flatten__()[0]:
        yield from _inner(getattr(t, n))


class Parked:
    """A module's weights kept in host memory (pinned when CUDA is present) that visit `device`."""

    def __init__(self, module: nn.Module, device: torch.device, keep: Callable[[str], bool] = lambda name: False):
        self.device = device
        self.resident = False
        self.slots = [t for name, t in _tensors(module) if not keep(name)]
        pin = torch.cuda.is_available()
        self.host = [map_tensor(t.data, lambda x: x.to("cpu").pin_memory() if pin else x.to("cpu"))
                     for t in self.slots]
        self.park()

    def load(self, stream: torch.cuda.Stream | None = None) -> None:
        """Host -> device (non_blocking: from pinned memory the copy overlaps whatever runs)."""
        for t, host in zip(self.slots, self.host, strict=True):
            _set(t, map_tensor(host, lambda x: x.to(self.device, non_blocking=True)))
        self.resident = True

    def used_on(self, stream: torch.cuda.Stream) -> None:
        """Tell the allocator the device copies are read on `stream` (they were made on another),
        so their memory is not handed out again before that stream is done with them."""
        for t in self.slots:
            for inner in _inner(t.data):
                inner.record_stream(stream)

    def park(self) -> None:
        """Point the weights back at their host copies; the device copies are freed."""
        for t, host in zip(self.slots, self.host, strict=True):
            _set(t, host)
        self.resident = False


def _set(t: Tensor, data: Tensor) -> None:
    """`t.data = data`, also inside inference mode (where torchao's subclasses refuse the swap)."""
    with torch.inference_mode(False):
        t.data = data


def _tensors(module: nn.Module) -> list[tuple[str, Tensor]]:
    return [*module.named_parameters(), *module.named_buffers()]


class ModelOffload:
    """One network on the device at a time: calling one parks the previous."""

    def __init__(self, components: Components, device: torch.device):
        self.current: Parked | None = None
        c = components
        for module, methods in ((c.visual_encoder, ("forward",)), (c.text_encoder, ("forward",)),
                                (c.sync_encoder, ("forward",)), (c.denoiser, ("prepare", "forward")),
                                (c.vae, ("decode",))):
            parked = Parked(module, device)
            for name in methods:
                setattr(module, name, self._on_call(parked, getattr(module, name)))

    def _on_call(self, parked: Parked, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def run(*args: Any, **kwargs: Any) -> Any:
            if self.current is not parked:
                if self.current is not None:
                    self.current.park()
                parked.load()
                self.current = parked
            return method(*args, **kwargs)

        return run


class BlockStream:
    """The denoiser's blocks after the first `resident` streamed in run order, one prefetched ahead."""

    def __init__(self, denoiser: nn.Module, device: torch.device, resident: int):
        blocks = [*denoiser.triple_blocks, *denoiser.single_blocks]
        streamed = blocks[resident:]
        keep = lambda name: name.startswith(TEXT_KV)  # noqa: E731
        self.parked = [Parked(b, device, keep) for b in streamed]
        parked = {id(t) for p in self.parked for t in p.slots}
        for _, t in _tensors(denoiser):  # the rest lives on the device: small layers, resident blocks, text kv
            if id(t) not in parked:
                _set(t, map_tensor(t.data, lambda x: x.to(device)))
        self.side = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.ready: list[torch.cuda.Event | None] = [None] * len(streamed)
        for i, block in enumerate(streamed):
            block.register_forward_pre_hook(functools.partial(self._before, i))
            block.register_forward_hook(functools.partial(self._after, i))

    def _fetch(self, i: int) -> None:
        if self.parked[i].resident:
            return
        if self.side is None:
            self.parked[i].load()
            return
        self.side.wait_stream(torch.cuda.current_stream())  # the copy's memory may be one just freed there
        with torch.cuda.stream(self.side):
            self.parked[i].load()
            self.ready[i] = torch.cuda.current_stream().record_event()

    def _before(self, i: int, module: nn.Module, args: Any) -> None:
        self._fetch(i)
        if self.side is not None and self.ready[i] is not None:
            main = torch.cuda.current_stream()
            main.wait_event(self.ready[i])
            self.parked[i].used_on(main)
            self.ready[i] = None
        self._fetch((i + 1) % len(self.parked))  # the next block (or the next step's first) meanwhile

    def _after(self, i: int, module: nn.Module, args: Any, output: Any) -> None:
        if len(self.parked) > 1:
            self.parked[i].park()


def offload(components: Components, spec: str, device: torch.device) -> ModelOffload | BlockStream | None:
    """Apply an `--offload` spec to loaded components (resolve has already refused it off CUDA)."""
    kind, resident = parse_offload(spec)
    if kind == "model":
        return ModelOffload(components, device)
    if kind == "blocks":
        c = components
        for module in (c.visual_encoder, c.text_encoder, c.sync_encoder, c.vae):
            module.to(device)  # only the denoiser is streamed
        return BlockStream(c.denoiser, device, resident)
    return None
