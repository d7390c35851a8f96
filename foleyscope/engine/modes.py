"""How the engine runs: one frozen `Mode`, each switch a small function applied in one place.

A mode changes speed and memory, never what the model computes beyond rounding. `dtype` is applied
while the weights load (cast straight to it, no second copy); every other switch is a function in
SWITCHES that `apply(components, mode)` runs over the loaded components (gpt-fast style). A field's
CLI flag is declared beside it (`metadata`), so adding a mode is one field, one function:

    attention: str = field(default="auto", metadata=flag("--attention", ...))
    def _attention(components, mode): ...
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from foleyscope.errors import FoleyscopeError

if TYPE_CHECKING:  # the CLI builds a Mode before torch is imported
    import torch

    from foleyscope.engine.presets import Components

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}  # our names -> torch's
ATTENTION_BACKENDS = ("auto", "math", "flash", "efficient")


def flag(name: str, help: str, **argparse_kwargs: Any) -> dict[str, Any]:
    """A Mode field's command-line flag (read by `add_mode_args`)."""
    return {"flag": name, "help": help, **argparse_kwargs}


@dataclass(frozen=True)
class Mode:
    dtype: str = field(default="auto", metadata=flag(
        "--dtype", "model dtype (auto: bf16 on CUDA; on CPU whichever a quick measurement finds faster)",
        choices=("auto", *DTYPES)))
    attention: str = field(default="auto", metadata=flag(
        "--attention", "SDPA backend of the denoiser's attention (auto: torch picks; efficient is CUDA-only)",
        choices=ATTENTION_BACKENDS))
    encoders: str = field(default="official", metadata=flag(
        "--encoders", "precision of SigLIP2 and CLAP: official (fp32, as the official pipeline runs them, "
        "whatever --dtype says) or dtype (the mode's dtype: faster, about 1%% feature drift in bf16)",
        choices=("official", "dtype")))
    compile: bool = field(default=False, metadata=flag(
        "--compile", "torch.compile the denoiser (the first video pays tens of seconds; for batches/GPUs)",
        action="store_true"))

    def describe(self) -> str:
        """One line for people: `bf16, attention auto, compiled`."""
        parts = [self.dtype, f"attention {self.attention}"]
        if self.encoders != "official" and self.dtype != "fp32":
            parts.append(f"encoders {self.dtype}")
        return ", ".join(parts + (["compiled"] if self.compile else []))

    @property
    def encoder_dtype(self) -> torch.dtype:
        """SigLIP2 and CLAP: fp32 for `official`, else the mode's dtype."""
        import torch

        return torch.float32 if self.encoders == "official" else self.torch_dtype

    @property
    def torch_dtype(self) -> torch.dtype:
        import torch

        if self.dtype not in DTYPES:
            raise ValueError(f"mode dtype {self.dtype!r} is not resolved; call resolve(mode, device)")
        return getattr(torch, DTYPES[self.dtype])


def add_mode_args(parser: Any) -> None:
    """One CLI flag per Mode field, from the field's metadata."""
    for f in fields(Mode):
        meta = dict(f.metadata)
        parser.add_argument(meta.pop("flag"), dest=f.name, default=f.default, **meta)


def mode_from_args(args: Any) -> Mode:
    return Mode(**{f.name: getattr(args, f.name) for f in fields(Mode)})


def resolve(mode: Mode, device: torch.device) -> Mode:
    """`auto` made concrete for `device`, and what cannot run there refused in one line."""
    if mode.dtype not in ("auto", *DTYPES):
        raise FoleyscopeError(f"--dtype {mode.dtype}: expected auto, {', '.join(DTYPES)}")
    if mode.encoders not in ("official", "dtype"):
        raise FoleyscopeError(f"--encoders {mode.encoders}: expected official or dtype")
    if mode.attention not in ATTENTION_BACKENDS:
        raise FoleyscopeError(f"--attention {mode.attention}: expected {', '.join(ATTENTION_BACKENDS)}")
    if mode.attention == "efficient" and device.type != "cuda":
        raise FoleyscopeError(f"--attention efficient: the memory-efficient SDPA kernel is CUDA-only "
                              f"(this run is on {device.type}); use auto, flash or math")
    if mode.dtype == "auto":
        from foleyscope.engine.device import auto_dtype

        mode = replace(mode, dtype=auto_dtype(device))
    return mode


# -- the switches: each takes the loaded components and the mode, and changes only what it names ------


def _attention(components: Components, mode: Mode) -> None:
    """Pin the denoiser's scaled-dot-product attention to one backend (auto leaves torch's choice)."""
    if mode.attention == "auto":
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {"math": SDPBackend.MATH, "flash": SDPBackend.FLASH_ATTENTION,
               "efficient": SDPBackend.EFFICIENT_ATTENTION}[mode.attention]
    den = components.denoiser
    forward = den.forward

    @functools.wraps(forward)
    def pinned(*args: Any, **kwargs: Any) -> Any:
        with sdpa_kernel([backend]):
            return forward(*args, **kwargs)

    den.forward = pinned


def _compile(components: Components, mode: Mode) -> None:
    if mode.compile:
        compile_denoiser(components.denoiser)


SWITCHES: tuple[Callable[[Components, Mode], None], ...] = (_attention, _compile)  # compile wraps the rest


def apply(components: Components, mode: Mode) -> None:
    """Every switch of `mode` on freshly loaded components, in order."""
    for switch in SWITCHES:
        switch(components, mode)


def compile_denoiser(denoiser: torch.nn.Module, *, compile_mode: str | None = None,
                     backend: str = "inductor") -> None:
    """torch.compile the denoiser's step (the only network that runs once per step). Shapes are
    static within a video, so `dynamic=False`; the first video pays the compile time (tens of seconds),
    which pays off over the 50 steps of every later video on a GPU. On CUDA the default compile mode is
    'max-autotune-no-cudagraphs'; 'reduce-overhead' adds CUDA graphs."""
    import torch

    if compile_mode is None and backend == "inductor":
        compile_mode = "max-autotune-no-cudagraphs" if next(denoiser.parameters()).is_cuda else "default"
    denoiser.forward = torch.compile(denoiser.forward, mode=compile_mode, backend=backend, dynamic=False)
