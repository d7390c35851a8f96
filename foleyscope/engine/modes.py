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
QUANTS = ("none", "int8wo", "int8dq", "fp8")
DEFAULT_CACHE_THRESHOLD = 0.05  # `cache` in a mode spec: First-Block-Cache at this relative change


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
    cudagraphs: bool = field(default=False, metadata=flag(
        "--cudagraphs", "capture the denoising step in a CUDA graph once per shape (CUDA only)",
        action="store_true"))
    quant: str = field(default="none", metadata=flag(
        "--quant", "quantise the denoiser's linear layers with torchao: int8wo (weight-only), int8dq (dynamic "
        "int8 activations), fp8 (float8 rowwise, CUDA compute capability >= 8.9)", choices=QUANTS))
    cache: float = field(default=0.0, metadata=flag(
        "--cache", "step caching (First-Block-Cache): skip the rest of the denoiser on a step when the first "
        "block's residual changed less than this relative amount since the last full step; 0: off",
        type=float, metavar="THRESHOLD"))
    offload: str = field(default="none", metadata=flag(
        "--offload", "low memory on CUDA: model (each stage's network on the GPU only while it runs) or "
        "blocks[:N] (the denoiser's blocks streamed from pinned host memory, N resident)", metavar="MODE"))

    def describe(self) -> str:
        """One line for people: `bf16, attention auto, compiled`."""
        parts = [self.dtype, f"attention {self.attention}"]
        if self.encoders != "official" and self.dtype != "fp32":
            parts.append(f"encoders {self.dtype}")
        parts += ["compiled"] if self.compile else []
        parts += ["cudagraphs"] if self.cudagraphs else []
        parts += [self.quant] if self.quant != "none" else []
        parts += [f"cache {self.cache:g}"] if self.cache else []
        parts += [f"offload {self.offload}"] if self.offload != "none" else []
        return ", ".join(parts)

    @property
    def spec(self) -> str:
        """The short name `parse_mode` reads back: `bf16+compile+int8dq+cache`."""
        parts = [self.dtype]
        parts += ["compile"] if self.compile else []
        parts += ["cudagraphs"] if self.cudagraphs else []
        parts += [self.quant] if self.quant != "none" else []
        if self.cache:
            parts.append("cache" if self.cache == DEFAULT_CACHE_THRESHOLD else f"cache={self.cache:g}")
        parts += [f"offload={self.offload}"] if self.offload != "none" else []
        parts += [f"attention={self.attention}"] if self.attention != "auto" else []
        return "+".join(parts)

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


def parse_mode(spec: str, base: Mode | None = None) -> Mode:
    """A mode from its short name, on top of `base`: parts joined by '+', e.g. `fp32`, `bf16+compile`,
    `int8dq`, `bf16+cache`, `bf16+cache=0.1`, `fp8+offload=blocks:4`, `attention=math`. A dtype part sets
    the dtype; every other part switches one field. What cannot run on a device is refused by resolve."""
    mode = base or Mode()
    for part in (p.strip() for p in spec.split("+")):
        key, _, value = part.partition("=")
        if key in ("auto", *DTYPES) and not value:
            mode = replace(mode, dtype=key)
        elif key in ("compile", "cudagraphs") and not value:
            mode = replace(mode, **{key: True})
        elif key in QUANTS[1:] and not value:
            mode = replace(mode, quant=key)
        elif key == "cache":
            try:
                mode = replace(mode, cache=float(value) if value else DEFAULT_CACHE_THRESHOLD)
            except ValueError:
                raise FoleyscopeError(f"mode {spec!r}: cache={value} is not a number") from None
        elif key in ("offload", "attention", "encoders") and value:
            mode = replace(mode, **{key: value})
        else:
            raise FoleyscopeError(f"mode {spec!r}: unknown part {part!r} (expected a dtype {'/'.join(DTYPES)}, "
                                  "compile, cudagraphs, int8wo, int8dq, fp8, cache[=T], offload=..., attention=...)")
    return mode


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
    _refuse_off_cuda(mode, device)
    if mode.dtype == "auto":
        from foleyscope.engine.device import auto_dtype

        mode = replace(mode, dtype=auto_dtype(device))
    return mode


def _refuse_off_cuda(mode: Mode, device: torch.device) -> None:
    """The modes that only mean something on a GPU, refused elsewhere with the reason."""
    if mode.quant not in QUANTS:
        raise FoleyscopeError(f"--quant {mode.quant}: expected {', '.join(QUANTS)}")
    if mode.cache < 0 or mode.cache != mode.cache:
        raise FoleyscopeError(f"--cache {mode.cache}: expected a threshold >= 0 (0: off)")
    offload = mode.offload.split(":")[0]
    if offload not in ("none", "model", "blocks"):
        raise FoleyscopeError(f"--offload {mode.offload}: expected none, model or blocks[:N]")
    if device.type == "cuda":
        return
    if mode.dtype == "fp16":
        raise FoleyscopeError("--dtype fp16: half precision is emulated on CPUs, many times slower than fp32; "
                              "use fp32 or bf16 on CPU")
    why = {"--cudagraphs": mode.cudagraphs, "--quant fp8": mode.quant == "fp8",
           f"--offload {mode.offload}": offload != "none"}
    for what, asked in why.items():
        if asked:
            raise FoleyscopeError(f"{what}: CUDA only (this run is on {device.type})")


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
