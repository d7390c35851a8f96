"""`diagnose(fn, *args, **kwargs) -> Report`: run any callable under the tracer and the resource sampler,
then run the checks over what was recorded.

Users mark stages in their own code with `foleyscope.trace.stage`; without marks the doctor still
reports utilisation, the modules that ran (device, dtype), weight reloads and the untraced total.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from foleyscope import hardware
from foleyscope.doctor import checks, environment, tables
from foleyscope.doctor.report import Report
from foleyscope.doctor.resources import ResourceSampler, Sample
from foleyscope.doctor.run import RunData
from foleyscope.trace import Tracer, suspended


@dataclass
class DiagnoseContext:
    """What the caller knows beyond the trace, read by the checks from `run.context`: `input_info` (a media
    probe of `video_path`) for step 4, `service` (checks.service.measure_service's measurements) for step 5;
    `flops` gives stage -> FLOPs for the floor (the same as emitting StageFlops(stage, flops))."""

    video_path: str | None = None
    input_info: Any = None
    service: dict[str, Any] | None = None
    flops: dict[str, float] = field(default_factory=dict)
    probe: bool = True  # allow the matmul / copy probes after the run (about 1 s on CPU, cached)
    tracer_options: dict[str, Any] = field(default_factory=dict)  # Tracer(**options)
    meta: dict[str, Any] = field(default_factory=dict)


def _as_dict(obj: Any) -> dict[str, Any] | None:
    if obj is None:
        return None
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if isinstance(obj, dict):
        return dict(obj)
    return dict(vars(obj))


def build_report(
    tracer: Tracer,
    samples: list[Sample],
    context: DiagnoseContext | None = None,
    *,
    result: Any = None,
    mem_before: dict[str, Any] | None = None,
    mem_after: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
) -> Report:
    """Checks and report from a stopped tracer (for callers that drive Tracer/ResourceSampler themselves).

    The tables come first, once, and every registered check then reads the same RunData."""
    from foleyscope import __version__

    ctx = context or DiagnoseContext()
    env = environment.collect(tracer.modules)
    if tracer.steps and ctx.probe and env.get("torch"):
        from foleyscope.doctor.ab import pool_spin_s

        with suspended():
            env["pool_spin_s"] = round(pool_spin_s(), 5)
    run = RunData.from_tracer(tracer, samples, env, mem_before=mem_before or {}, mem_after=mem_after or {},
                              context=ctx, probe=ctx.probe)
    with suspended():  # the probes must not land in a tracer of an enclosing diagnosis
        run.tables, errors = tables.compute(run)
        findings, check_errors = checks.run_checks(run)
    errors.update(check_errors)
    stages = run.tables.stages
    # every probe this process ran (the checks' own included), next to the floor they set
    floor = {**run.tables.floor, "probes": hardware.cached()} if run.tables.floor else {}
    env["memory_before"] = mem_before or {}
    env["memory_after"] = mem_after or {}
    env["modules"] = tracer.modules.to_dict()
    env.update(_bound_summary(run, stages))
    info = {
        "uncertain": _uncertain(tracer),
        "foleyscope": __version__,
        "created_unix": time.time(),
        "cpu_s": tracer.cpu_s_total,
        "check_errors": errors,
        **(meta or {}),
        **ctx.meta,
    }
    return Report(
        findings=findings,
        stages=stages,
        total_s=tracer.total_s,
        steps=[{"index": s.index, "stage": s.stage, "start_s": s.start_s, "end_s": s.end_s,
                "seconds": s.seconds, "total": s.total} for s in tracer.steps],
        samples=[s.to_dict() for s in samples],
        environment=env,
        floor=floor,
        input=_as_dict(ctx.input_info),
        service=ctx.service,
        meta=info,
        spans=[dataclasses.asdict(r) | {"seconds": r.seconds} for r in tracer.stages],
        events=[{"kind": e.kind, "t_s": e.t_s, "stage": e.stage, "fields": e.fields} for e in tracer.events],
        result=result,
    )


CONTENDED_SHARE = 0.1


def _uncertain(tracer: Tracer) -> str | None:
    """A warning for the report's header when other processes held the cores during the run, or the
    hypervisor gave them to other machines (steal): its times, and the estimates made from them, then
    say as much about the machine's load as about the job."""
    wait, steal, cpu = tracer.cpu_wait_s_total or 0.0, tracer.steal_s_total or 0.0, tracer.cpu_s_total
    floor = max(0.1, CONTENDED_SHARE * max(cpu, tracer.total_s))
    if wait >= floor:
        return (f"other processes held the cores: threads waited {wait:.2f} thread-s for one during the "
                f"{tracer.total_s:.2f} s run, so these times and estimates are uncertain; re-run on a quiet machine")
    if steal >= floor:
        return (f"the hypervisor gave this machine's cores to other machines for {steal:.2f} s of the "
                f"{tracer.total_s:.2f} s run (steal), so these times and estimates are uncertain; re-run when "
                "the host is quieter")
    return None


def _bound_summary(run: RunData, stages: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Step 0's one-line facts: the device that ran, a GPU left idle, memory needed versus free."""
    device = run.run_device()
    before = run.mem_before or {}
    cuda = device == "cuda" and "cuda_free_bytes" in before
    peaks = [row.get("peak_mem_bytes") or 0 for row in stages.values()
             if row.get("mem_kind") == ("cuda_allocated" if cuda else "rss")]
    free = (before.get("cuda_free_bytes", 0) + before.get("cuda_allocated_bytes", 0) if cuda
            else before.get("ram_available_bytes", 0) + before.get("rss_bytes", 0))
    return {
        "device": device,
        "gpu_visible_but_unused": bool(run.env.get("gpus_visible")) and device != "cuda",
        "memory_needed_bytes": max(peaks, default=0),  # the run's peak (CUDA allocated or RSS)
        "memory_free_bytes": free,  # free + already used by this process when the run started
    }


def diagnose(fn: Callable[..., Any], *args: Any, sample_hz: float = 10.0,
             context: DiagnoseContext | None = None, **kwargs: Any) -> Report:
    """Run `fn(*args, **kwargs)` once under tracing and sampling; return the ranked Report (its `result`
    holds fn's return value). Exceptions from fn propagate after tracing stops."""
    ctx = context or DiagnoseContext()
    tracer = Tracer(**ctx.tracer_options)
    mem_before = environment.memory_snapshot()
    sampler = ResourceSampler(sample_hz, tracer) if sample_hz else None
    tracer.start()
    if sampler is not None:
        sampler.start()
    try:
        result = fn(*args, **kwargs)
    finally:
        if sampler is not None:
            sampler.stop()
        tracer.stop()
    mem_after = environment.memory_snapshot()
    samples = sampler.samples if sampler is not None else []
    meta = {
        "fn": getattr(fn, "__qualname__", repr(fn)),
        "sample_hz": sample_hz,
        "sampler_tick_s": sampler.tick_seconds if sampler is not None else 0.0,
    }
    return build_report(tracer, samples, ctx, result=result, mem_before=mem_before, mem_after=mem_after,
                        meta=meta)
