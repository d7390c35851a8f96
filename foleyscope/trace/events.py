"""What the engine tells whoever listens, as typed events.

Two kinds of traffic:
- `Progress`: a stage starting or ending, a step done (with its time), decode advancing. One type
  feeds the CLI's bars, the doctor's tracer and the server's event stream; listeners subscribe with
  `listening(callback)` for the current context only, so two jobs in one process never hear each other.
- Facts a tracer records for the doctor, each with one reader: `ModeReport` (how the engine runs),
  `StageFlops` (a stage's analytic FLOPs: the compute floor), `ModelLoad` (a component's load time),
  `WeightsRead` (a checkpoint file read, seen by the load hooks). `emit(event)` costs a context-variable
  lookup when no tracer is active.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Literal


@dataclass(frozen=True)
class Progress:
    """`start`/`end` of a stage (`seconds`: its wall time at the end), or `step` k of N in it
    (`seconds`: that step's time). Decode reports seconds of video done (`unit="s"`)."""

    kind: Literal["start", "step", "end"]
    stage: str
    done: float = 0
    total: float = 0
    seconds: float = 0.0
    unit: str = "steps"


Listener = Callable[[Progress], None]
_LISTENERS: contextvars.ContextVar[tuple[Listener, ...]] = contextvars.ContextVar("foleyscope_listeners",
                                                                                   default=())


@contextmanager
def listening(*callbacks: Listener | None) -> Iterator[None]:
    """Send this context's Progress events to `callbacks` too (a callback may raise, e.g. Cancelled)."""
    token = _LISTENERS.set(_LISTENERS.get() + tuple(cb for cb in callbacks if cb is not None))
    try:
        yield
    finally:
        _LISTENERS.reset(token)


def publish(event: Progress) -> None:
    for callback in _LISTENERS.get():
        callback(event)


def has_listeners() -> bool:
    return bool(_LISTENERS.get())


class Fact:
    """A typed event a tracer records; `kind` names it in reports."""

    kind: ClassVar[str] = ""

    def fields(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True)
class ModeReport(Fact):
    """How the engine runs this call (reported on every call, so a pipeline loaded before the doctor
    started is still seen). `dtype_stages`: the stages its dtype switch changes. `tf32`: whether fp32
    matmuls may use TF32 (None off CUDA). With the step cache on, a second report follows the denoise
    stage with its denoiser evaluations computed and skipped (None before it, and with the cache off)."""

    kind: ClassVar[str] = "inference_mode"
    device: str
    dtype: str
    attention: str = "auto"
    compile: bool = False
    cuda_graphs: bool = False
    tf32: bool | None = None
    dtype_stages: tuple[str, ...] | None = None
    quant: str = "none"
    cache: float = 0.0  # First-Block-Cache threshold; 0: off
    cache_steps_computed: int | None = None
    cache_steps_skipped: int | None = None
    offload: str = "none"


@dataclass(frozen=True)
class StageFlops(Fact):
    kind: ClassVar[str] = "flops"
    stage: str
    flops: float


@dataclass(frozen=True)
class ModelLoad(Fact):
    kind: ClassVar[str] = "model_load"
    component: str
    seconds: float
    summary: str = ""


@dataclass(frozen=True)
class WeightsRead(Fact):
    """A checkpoint read (torch.load, safetensors, load_state_dict), timed by the tracer's load hooks."""

    kind: ClassVar[str] = "weights_read"
    loader: str
    seconds: float
    path: str | None = None
    bytes: int | None = None
    module: str | None = None
    params: int | None = None
