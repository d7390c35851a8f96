"""Modes side by side on one video: what `foleyscope bench` measures.

Each mode loads fresh (the same seeded weights), warms up on the clip (compile, autotuning, CUDA
graph capture happen there, not in the timings), then runs `repeat` times under a tracer that
synchronises the device at every stage boundary; medians and ranges over the repeats are reported.
Every mode gets the same seed, so the same noise: its latents and audio are compared with the first
mode's (relative L2, log-mel distance in dB). Throughput at batch B runs B copies of the clip
through one denoiser batch and one VAE batch; memory is CUDA's max allocated, or RSS on a CPU."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from foleyscope.engine.drift import log_mel_distance_db, rel_l2
from foleyscope.engine.jobs import DEFAULT_NEGATIVE_PROMPT
from foleyscope.engine.modes import Mode
from foleyscope.engine.pipeline import Conditions, FoleyPipeline
from foleyscope.engine.presets import Preset
from foleyscope.engine.sampler import sample
from foleyscope.stages import Stage
from foleyscope.trace import ModeReport, Tracer, listening, stage
from foleyscope.trace.events import Listener

WARMUP_STEPS = 2  # compile and graph capture depend on shapes, not on the step count


@dataclass(frozen=True)
class BenchSpec:
    video: Path
    prompt: str
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    preset: str | Preset = "tiny"
    weights: Path | None = None
    device: str = "auto"
    frames: str = "official"
    steps: int = 50
    cfg: float = 4.5
    solver: str = "euler"
    seed: int = 0
    repeat: int = 3
    batches: tuple[int, ...] = (1,)


@dataclass
class Runs:
    """One quantity over the repeats."""

    values: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def spread(self) -> float:
        """Half the range: the median is within +-spread of every run."""
        return (max(self.values) - min(self.values)) / 2

    def to_dict(self) -> dict[str, float | list[float]]:
        return {"median": self.median, "min": min(self.values), "max": max(self.values), "runs": self.values}


@dataclass
class ModeResult:
    requested: str
    mode: Mode
    load_s: float = 0.0
    warmup_s: float = 0.0
    stages: dict[str, Runs] = field(default_factory=dict)
    total: Runs = field(default_factory=lambda: Runs([]))
    memory_kind: str = "rss"  # or "cuda_max_allocated"
    peak_bytes: int = 0  # absolute: RSS of the process, or CUDA max allocated
    growth_bytes: int = 0  # peak minus what was in use before the load
    throughput: dict[int, Runs] = field(default_factory=dict)  # clips per minute, per batch size
    batch_peak_bytes: dict[int, int] = field(default_factory=dict)
    drift: dict[str, float] = field(default_factory=dict)  # against the first mode
    repeat_drift: float | None = None  # latents of the first vs the last repeat (run-to-run determinism)
    speedup: float | None = None  # the first mode's median total / this one's
    cache_steps: tuple[int, int] | None = None  # step cache: denoiser evaluations (computed, skipped), one run
    error: str | None = None

    @property
    def spec(self) -> str:
        return self.mode.spec


@dataclass
class Output:
    latents: torch.Tensor  # fp32, on the CPU
    audio: np.ndarray
    sample_rate: int


Phase = Callable[[str], None]


def bench(spec: BenchSpec, modes: list[tuple[str, Mode]], *, phase: Phase | None = None,
          listener: Listener | None = None, on_result: Callable[[list[ModeResult]], None] | None = None,
          ) -> list[ModeResult]:
    """Measure each (requested name, resolved mode) in turn; `phase` hears what starts (load,
    warm-up, run k/n), `listener` the engine's stage and step events, `on_result` the results so far
    after every mode (a JSON written there survives a run cut short)."""
    phase = phase or (lambda _: None)
    results: list[ModeResult] = []
    reference: Output | None = None
    phase("prime")
    prime(spec)
    for requested, mode in modes:
        result = ModeResult(requested, mode)
        try:
            output = _measure(spec, result, phase, listener)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # one mode failing (a kernel missing here) does not lose the others
            result.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
            output = None
        finally:
            release()
        if output is not None:
            reference = reference or output
            result.drift = drift(output, reference)
        results.append(result)
        _speedups(results)
        if on_result is not None:
            on_result(results)
    return results


def prime(spec: BenchSpec) -> None:
    """One tiny run on the clip first: the imports, the device's context and the code pages a first
    load and run touch are paid here, not in the first mode's load time and memory."""
    pipe = FoleyPipeline.load("tiny", device=spec.device, mode=Mode("fp32"), frames=spec.frames)
    with listening(None):
        pipe(spec.video, spec.prompt, steps=1, seed=spec.seed)
    del pipe
    release()


def _measure(spec: BenchSpec, result: ModeResult, phase: Phase, listener: Listener | None) -> Output:
    name = result.spec
    device_before = memory_in_use(spec.device)
    phase(f"{name}: load")
    start = time.perf_counter()
    with _random_init_on(spec):
        pipe = FoleyPipeline.load(spec.preset, spec.weights, spec.device, result.mode, frames=spec.frames)
    result.load_s = time.perf_counter() - start
    gc.collect()
    _trim_heap()  # what loading freed (fp32 drawn before the cast, weights before quantising) leaves RSS
    result.memory_kind = "cuda_max_allocated" if pipe.device.type == "cuda" else "rss"
    phase(f"{name}: warm-up")
    start = time.perf_counter()
    run_once(pipe, spec, min(spec.steps, WARMUP_STEPS), listener)
    result.warmup_s = time.perf_counter() - start
    outputs, peaks = [], []
    for i in range(spec.repeat):
        phase(f"{name}: run {i + 1}/{spec.repeat}")
        tracer, output = run_once(pipe, spec, spec.steps, listener)
        _add_times(result, tracer)
        result.cache_steps = _cache_steps(tracer) or result.cache_steps
        outputs.append(output)
        peaks.append(_peak(tracer))
    result.peak_bytes = max(peaks)
    result.growth_bytes = max(0, result.peak_bytes - device_before)
    result.repeat_drift = rel_l2(outputs[-1].latents.numpy(), outputs[0].latents.numpy())
    for batch in spec.batches:
        _throughput(pipe, spec, result, batch, phase, listener)
    return outputs[0]


def run_once(pipe: FoleyPipeline, spec: BenchSpec, steps: int, listener: Listener | None) -> tuple[Tracer, Output]:
    """prepare -> denoise -> decode under a tracer that synchronises the device at each boundary."""
    with Tracer(sync=True, count_h2d=False, observe_modules=False, watch_loads=False) as tracer, \
            listening(listener):
        cond = pipe.prepare(spec.video, spec.prompt, negative_prompt=spec.negative_prompt)
        latents = pipe.denoise(cond, steps=steps, cfg=spec.cfg, solver=spec.solver, seed=spec.seed)
        result = pipe.decode(cond, latents)
    return tracer, Output(latents.float().cpu(), result.audio, result.sample_rate)


def _add_times(result: ModeResult, tracer: Tracer) -> None:
    seconds: dict[str, float] = {}
    for rec in tracer.stages:
        if rec.parent is None:
            seconds[rec.name] = seconds.get(rec.name, 0.0) + rec.seconds
    for name, s in seconds.items():
        result.stages.setdefault(name, Runs([])).values.append(s)
    result.total.values.append(tracer.total_s)


def _cache_steps(tracer: Tracer) -> tuple[int, int] | None:
    counted = [m for m in tracer.facts(ModeReport) if m.cache_steps_computed is not None]
    return (counted[-1].cache_steps_computed, counted[-1].cache_steps_skipped or 0) if counted else None


def _peak(tracer: Tracer) -> int:
    return max((rec.peak_mem_bytes or 0 for rec in tracer.stages), default=0)


def _throughput(pipe: FoleyPipeline, spec: BenchSpec, result: ModeResult, batch: int, phase: Phase,
                listener: Listener | None) -> None:
    """Clips per minute with `batch` copies of the clip per denoiser batch (batch 1: the runs above)."""
    if batch == 1:
        result.throughput[1] = Runs([60.0 / s for s in result.total.values])
        result.batch_peak_bytes[1] = result.peak_bytes
        return
    phase(f"{result.spec}: batch {batch} warm-up")
    run_batch(pipe, spec, batch, min(spec.steps, WARMUP_STEPS), listener)
    runs, peak = [], 0
    for i in range(spec.repeat):
        phase(f"{result.spec}: batch {batch} run {i + 1}/{spec.repeat}")
        tracer = run_batch(pipe, spec, batch, spec.steps, listener)
        runs.append(60.0 * batch / tracer.total_s)
        peak = max(peak, _peak(tracer))
    result.throughput[batch], result.batch_peak_bytes[batch] = Runs(runs), peak


def run_batch(pipe: FoleyPipeline, spec: BenchSpec, batch: int, steps: int, listener: Listener | None) -> Tracer:
    """`batch` videos (this clip each time) prepared one by one, denoised as one batch, decoded as one."""
    with Tracer(sync=True, count_h2d=False, observe_modules=False, watch_loads=False) as tracer, \
            listening(listener):
        conds = [pipe.prepare(spec.video, spec.prompt, negative_prompt=spec.negative_prompt) for _ in range(batch)]
        latents = denoise_batch(pipe, conds, steps=steps, cfg=spec.cfg, solver=spec.solver, seed=spec.seed)
        vae = pipe.components.vae
        with stage(Stage.VAE_DECODE), torch.inference_mode():
            vae.decode(latents.to(next(vae.parameters()).dtype)).float().cpu()
    return tracer


@torch.inference_mode()
def denoise_batch(pipe: FoleyPipeline, conds: list[Conditions], *, steps: int, cfg: float, solver: str,
                  seed: int) -> torch.Tensor:
    """Several one-window videos through one denoiser batch (the pipeline batches one video's windows):
    features stacked, each video its own noise from one seeded generator, no window averaging."""
    if any(len(c.windows) != 1 for c in conds) or len({c.latent_len for c in conds}) != 1:
        raise ValueError("a denoiser batch of videos needs one-window clips of the same length")
    first = conds[0]
    clip, sync = torch.cat([c.clip for c in conds]), torch.cat([c.sync for c in conds])
    gen = torch.Generator("cpu").manual_seed(seed)
    channels = pipe.preset.denoiser.latent_channels
    noise = torch.cat([c.layout.noise(channels, gen) for c in conds]).to(pipe.device)
    with stage(Stage.DENOISE, total=steps):
        prepared = [pipe._condition(clip, sync, first.text, first.latent_len, cfg)]
        velocity = pipe.velocity(prepared, [slice(0, len(conds))], cfg)
        return sample(velocity, noise, steps=steps, cfg=cfg, solver=solver)  # type: ignore[arg-type]


def drift(output: Output, reference: Output) -> dict[str, float]:
    """Relative L2 of the latents and the waveform, and the log-mel distance in dB, against the reference."""
    return {"latents_rel_l2": rel_l2(output.latents.numpy(), reference.latents.numpy()),
            "audio_rel_l2": rel_l2(output.audio, reference.audio),
            "log_mel_db": log_mel_distance_db(output.audio, reference.audio, reference.sample_rate)}


def _speedups(results: list[ModeResult]) -> None:
    base = next((r for r in results if r.total.values), None)
    for r in results:
        r.speedup = base.total.median / r.total.median if base and r.total.values else None


# -- memory between modes -----------------------------------------------------------------------------


def memory_in_use(device: str) -> int:
    """CUDA bytes allocated now, or the process's RSS (what a mode's growth is measured from)."""
    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return int(torch.cuda.memory_allocated())
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def release() -> None:
    """Free the last mode's model before the next one loads: compiled graphs hold on to it, and glibc
    keeps freed heap pages unless trimmed, which would count in the next mode's RSS."""
    gc.collect()
    torch._dynamo.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    _trim_heap()


def _trim_heap() -> None:
    """Hand the heap's free pages back to the OS (glibc keeps them otherwise, and RSS counts them)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@contextlib.contextmanager
def _random_init_on(spec: BenchSpec) -> Iterator[None]:
    """Random weights on CUDA are drawn on the GPU (seconds for xxl, not minutes on the CPU's serial
    generator): the load runs under the device as the default for new tensors."""
    if spec.weights is None and (spec.device.startswith("cuda") or (spec.device == "auto" and
                                                                    torch.cuda.is_available())):
        with torch.device(spec.device if spec.device != "auto" else "cuda"):
            yield
    else:
        yield
