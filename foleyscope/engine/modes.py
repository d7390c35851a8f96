"""How the engine runs: one frozen `Mode`, each switch a small function applied in one place.

A mode changes speed and memory, never what the model computes beyond rounding (quantisation's
included) and the steps the step cache skips (bounded by its threshold). `dtype` is applied while
the weights load (cast straight to it, no second copy); every other switch is a function in
SWITCHES that `apply(components, mode, device)` runs over the loaded components (gpt-fast style).
A field's CLI flag is declared beside it (`metadata`), so adding a mode is one field, one function:

    attention: str = field(default="auto", metadata=flag("--attention", ...))
    def _attention(components, mode, device): ...

What each mode does, where it runs and what it costs in drift: docs/modes.md.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from foleyscope.engine.quant import quiet_import_noise
from foleyscope.errors import FoleyscopeError

quiet_import_noise()  # before anything imports transformers (which imports torchao when installed)

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
    tf32: bool = field(default=True, metadata=flag(
        "--no-tf32", "fp32 on CUDA: keep matmuls in full fp32 (default: TF32 tensor cores, about 1e-3 "
        "relative rounding, several times faster)", action="store_false"))

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
        parts += ["no tf32"] if not self.tf32 and self.dtype == "fp32" else []
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
        parts += [f"encoders={self.encoders}"] if self.encoders != "official" else []
        parts += ["no-tf32"] if not self.tf32 else []
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
    `int8dq`, `bf16+cache`, `bf16+cache=0.1`, `fp8+offload=blocks:4`, `attention=math`, `fp32+no-tf32`.
    A dtype part sets the dtype; every other part switches one field. What cannot run on a device is
    refused by resolve."""
    mode = base or Mode()
    for part in (p.strip() for p in spec.split("+")):
        key, _, value = part.partition("=")
        if key in ("auto", *DTYPES) and not value:
            mode = replace(mode, dtype=key)
        elif key in ("compile", "cudagraphs") and not value:
            mode = replace(mode, **{key: True})
        elif key in ("tf32", "no-tf32") and not value:
            mode = replace(mode, tf32=key == "tf32")
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
                                  "compile, cudagraphs, int8wo, int8dq, fp8, cache[=T], offload=..., attention=..., "
                                  "encoders=..., tf32, no-tf32)")
    return mode


def validate(mode: Mode) -> None:
    """What no device can run, refused in one line: unknown values and impossible combinations. Needs no
    device (the planner checks modes for a GPU it does not have)."""
    if mode.dtype not in ("auto", *DTYPES):
        raise FoleyscopeError(f"--dtype {mode.dtype}: expected auto, {', '.join(DTYPES)}")
    if mode.encoders not in ("official", "dtype"):
        raise FoleyscopeError(f"--encoders {mode.encoders}: expected official or dtype")
    if mode.attention not in ATTENTION_BACKENDS:
        raise FoleyscopeError(f"--attention {mode.attention}: expected {', '.join(ATTENTION_BACKENDS)}")
    if mode.quant not in QUANTS:
        raise FoleyscopeError(f"--quant {mode.quant}: expected {', '.join(QUANTS)}")
    if mode.cache < 0 or mode.cache != mode.cache:
        raise FoleyscopeError(f"--cache {mode.cache}: expected a threshold >= 0 (0: off)")
    from foleyscope.engine.offload import parse_offload

    offload, _ = parse_offload(mode.offload)
    if mode.cudagraphs and offload != "none":
        raise FoleyscopeError(f"--cudagraphs with --offload {mode.offload}: a CUDA graph replays fixed weight "
                              "addresses, offloading moves the weights; choose one")


def resolve(mode: Mode, device: torch.device) -> Mode:
    """`auto` made concrete for `device`, and what cannot run there refused in one line."""
    validate(mode)
    if mode.attention == "efficient" and device.type != "cuda":
        raise FoleyscopeError(f"--attention efficient: the memory-efficient SDPA kernel is CUDA-only "
                              f"(this run is on {device.type}); use auto, flash or math")
    _refuse_off_cuda(mode, device)
    if mode.dtype == "auto":
        from foleyscope.engine.device import auto_dtype

        mode = replace(mode, dtype=auto_dtype(device))
    return mode


def _refuse_off_cuda(mode: Mode, device: torch.device) -> None:
    """The modes that only mean something on a GPU, refused elsewhere with the reason (validate has run)."""
    if device.type == "cuda":
        if mode.quant == "fp8":
            from foleyscope.engine.quant import check_fp8

            check_fp8(device)
        return
    if mode.dtype == "fp16":
        raise FoleyscopeError("--dtype fp16: half precision is emulated on CPUs, many times slower than fp32; "
                              "use fp32 or bf16 on CPU")
    why = {"--cudagraphs": mode.cudagraphs, "--quant fp8": mode.quant == "fp8",
           f"--offload {mode.offload}": mode.offload != "none"}
    for what, asked in why.items():
        if asked:
            raise FoleyscopeError(f"{what}: CUDA only (this run is on {device.type})")


# -- the switches: each takes the loaded components, the mode and the device the run is on, and changes
#    only what it names. Order: quantise the weights before anything wraps or moves them; compile wraps
#    the denoiser's math last; offload's hooks stay outside compiled code (they move weights). ---------

Switch = Callable[["Components", Mode, "torch.device"], None]
log = logging.getLogger(__name__)


def _quant(components: Components, mode: Mode, device: torch.device) -> None:
    """int8/fp8 linear layers of the denoiser (torchao), converted where they were loaded."""
    if mode.quant != "none":
        from foleyscope.engine.quant import quantise

        n = quantise(components.denoiser, mode.quant)
        log.info("quant %s: %d linear layers of the denoiser converted", mode.quant, n)


def _cache(components: Components, mode: Mode, device: torch.device) -> None:
    """First-Block-Cache: each video's conditioning carries a StepCache at this threshold."""
    components.denoiser.step_cache = mode.cache or None


def _tf32(components: Components, mode: Mode, device: torch.device) -> None:
    """fp32 on CUDA: TF32 tensor-core matmuls unless --no-tf32 (process-wide torch flags, so set for
    every fp32 CUDA load, either way; the ModeReport says what the run got)."""
    if device.type == "cuda" and mode.dtype == "fp32":
        import torch

        torch.backends.cuda.matmul.allow_tf32 = mode.tf32
        torch.backends.cudnn.allow_tf32 = mode.tf32


def _attention(components: Components, mode: Mode, device: torch.device) -> None:
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


def _compile(components: Components, mode: Mode, device: torch.device) -> None:
    """`compile`, or `cudagraphs` (compile mode reduce-overhead: the step captured once per shape)."""
    if mode.compile or mode.cudagraphs:
        compile_denoiser(components.denoiser, compile_mode="reduce-overhead" if mode.cudagraphs else None,
                         per_block=mode.offload.startswith("blocks"))


def _offload(components: Components, mode: Mode, device: torch.device) -> None:
    if mode.offload != "none":
        from foleyscope.engine.offload import offload

        offload(components, mode.offload, device)  # its hooks keep what they need alive


SWITCHES: tuple[Switch, ...] = (_quant, _cache, _tf32, _attention, _compile, _offload)


def apply(components: Components, mode: Mode, device: torch.device | None = None) -> None:
    """Every switch of `mode` on freshly loaded components, in order. `device`: where the run is
    (default: where the denoiser was loaded; an offload mode loads on the host and names the GPU)."""
    if device is None:
        device = next(components.denoiser.parameters()).device
    for switch in SWITCHES:
        switch(components, mode, device)


def compile_denoiser(denoiser: torch.nn.Module, *, compile_mode: str | None = None,
                     backend: str = "inductor", per_block: bool = False) -> None:
    """torch.compile the denoiser's step (the only network that runs once per step). Shapes are
    static within a video, so `dynamic=False`; the first video pays the compile time (tens of seconds),
    which pays off over the 50 steps of every later video on a GPU. On CUDA the default compile mode is
    'max-autotune-no-cudagraphs'; 'reduce-overhead' adds CUDA graphs.

    What is compiled: the whole step; with the step cache, its three parts (the skip decision between
    them reads a number on the host, which would split one graph anyway); `per_block` (blocks streamed
    from the host): each block, so the streaming hooks run between blocks, outside compiled code."""
    import torch

    if compile_mode is None and backend == "inductor":
        compile_mode = "max-autotune-no-cudagraphs" if next(denoiser.parameters()).is_cuda else "default"

    def compiled(fn: Callable[..., Any]) -> Callable[..., Any]:
        out = torch.compile(fn, mode=compile_mode, backend=backend, dynamic=False)
        return _fresh_outputs(out) if compile_mode == "reduce-overhead" else out

    if per_block:
        for block in (*denoiser.triple_blocks, *denoiser.single_blocks):
            block.forward = compiled(block.forward)
    elif getattr(denoiser, "step_cache", None) is not None:
        for part in ("head", "body", "final"):
            setattr(denoiser, part, compiled(getattr(denoiser, part)))
    else:
        denoiser.forward = compiled(denoiser.forward)


def _fresh_outputs(graphed: Callable[..., Any]) -> Callable[..., Any]:
    """A CUDA-graphed function whose outputs outlive its next replay: each call starts a new graph
    step and its tensors are cloned out of the graph's static buffers (windows run in chunks call
    the denoiser several times per step and keep every output)."""
    import torch
    from torch.utils._pytree import tree_map

    @functools.wraps(graphed)
    def run(*args: Any, **kwargs: Any) -> Any:
        torch.compiler.cudagraph_mark_step_begin()
        out = graphed(*args, **kwargs)
        return tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, out)

    return run
