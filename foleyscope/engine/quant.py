"""Quantisation of the denoiser's linear layers through torchao (`--quant int8wo|int8dq|fp8`).

The denoiser holds almost all of the weights and runs 50 times per video, so it is the one network
worth quantising; the encoders and the VAE run once and stay as loaded. Only `nn.Linear` layers are
converted (the single blocks' kernel-3 convolutions are not linear layers and keep the mode's dtype),
and only those whose widths torchao's kernels take: both a multiple of 16 (float8's `_scaled_mm`
needs it; int8 is held to the same rule so every quant mode converts the same layers).

torchao is imported only when a quant mode is asked for; transformers imports it on its own when it
is installed, so the import-time noise it logs on a machine without its CUDA kernels is filtered
here, once, for everyone (`quiet_import_noise`, called when engine.modes is imported)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from foleyscope.errors import FoleyscopeError

if TYPE_CHECKING:
    import torch
    from torch import nn

FP8_MIN_CAPABILITY = (8, 9)  # Ada / Hopper: the first GPUs with float8 tensor cores
_NOISE = {  # logger -> messages logged at import on machines this build was not made for
    "torchao": ("Failed to load",),  # its CUDA/py3.10 extension libraries, unused by our configs
    "torch.utils._pytree": ("register_constant() on Enum subclasses",),  # torchao's deprecated call
}


class _Drop(logging.Filter):
    def __init__(self, needles: tuple[str, ...]):
        super().__init__()
        self.needles = needles

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(n in record.getMessage() for n in self.needles)


def quiet_import_noise() -> None:
    """Drop torchao's harmless import warnings (they would break the CLI's one-line errors)."""
    for name, needles in _NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Drop) for f in logger.filters):
            logger.addFilter(_Drop(needles))


def check_fp8(device: torch.device) -> None:
    """float8 matmuls need compute capability 8.9 or newer: refuse older GPUs with the reason."""
    import torch

    cap = torch.cuda.get_device_capability(device)
    if cap < FP8_MIN_CAPABILITY:
        raise FoleyscopeError(f"--quant fp8: float8 matmuls need compute capability >= 8.9 (Ada, Hopper); "
                              f"{torch.cuda.get_device_name(device)} is {cap[0]}.{cap[1]}; use int8wo or int8dq")


def quantisable(module: nn.Module, fqn: str = "") -> bool:
    """A linear layer torchao's int8 and float8 kernels take (both widths a multiple of 16)."""
    from torch import nn

    return isinstance(module, nn.Linear) and module.in_features % 16 == 0 and module.out_features % 16 == 0


def quantise(module: nn.Module, quant: str) -> int:
    """Convert `module`'s quantisable linear layers in place; returns how many were converted."""
    config = _config(quant)
    from torchao.quantization import quantize_

    count = sum(1 for _, m in module.named_modules() if quantisable(m))
    quantize_(module, config, filter_fn=quantisable)
    return count


def _config(quant: str):
    """The torchao config of a quant mode. `set_inductor_config=False`: torchao's own setter turns on
    coordinate-descent tuning for every later compile in the process (minutes on a CPU); only the
    int8 matmul-with-scale fusion is kept, and only where it applies."""
    quiet_import_noise()
    try:
        import torchao.quantization as tq
    except ImportError:
        raise FoleyscopeError(f"--quant {quant}: needs torchao (pip install torchao==0.18.0)") from None
    if quant == "int8wo":
        return tq.Int8WeightOnlyConfig(set_inductor_config=False)
    if quant == "int8dq":
        import torch._inductor.config as inductor

        inductor.force_fuse_int_mm_with_mul = True  # int8 x int8 -> int32 matmul fused with its rescale
        return tq.Int8DynamicActivationInt8WeightConfig(set_inductor_config=False)
    if quant == "fp8":
        return tq.Float8DynamicActivationFloat8WeightConfig(granularity=tq.PerRow(), set_inductor_config=False)
    raise FoleyscopeError(f"--quant {quant}: expected int8wo, int8dq or fp8")
