"""Step 3, the inference mode: dtype, torch.compile, CUDA graphs, SDPA backend, TF32, pinned and
non_blocking copies, weights reloaded within a run.

Dtype advice is measured, not assumed: the matmul probe times fp32 against bf16/fp16 on the device the
stage ran on. (On CPUs without AVX512-BF16/AMX, bf16 is several times slower than fp32.) Mode settings
the engine reports in a ModeReport with every call; the dtype and the device are also read from the
modules each stage actually ran, so user code needs no notes for them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from foleyscope import hardware
from foleyscope.doctor import ab
from foleyscope.doctor.registry import Found, check
from foleyscope.doctor.run import RunData
from foleyscope.stages import Stage
from foleyscope.trace import ModelLoad, WeightsRead

MIN_SPEEDUP = 1.3  # below this the probe's noise could flip the advice
MIN_AB_SAVING_S = 0.03  # a measured dtype saving below this is noise, not advice
COMPILE_SPEEDUP = 1.3  # low end of the published 1.3-1.8x for diffusion transformers on GPUs
SDPA_SAVING_SHARE = 0.25
LAUNCH_GAP_SHARE = 0.5  # share of GPU idle time in the loop that CUDA graphs typically recover


def _groups(run: RunData) -> dict[tuple[str, str], list[str]]:
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for name in run.model_stages():
        dt = run.stage_dtype(name)
        if dt:
            groups[(run.stage_device(name), dt)].append(name)
    return {k: run.outermost(v) for k, v in groups.items()}


def _seconds(run: RunData, names: list[str]) -> float:
    return sum(run.stages[n].seconds for n in names)


@dataclass(frozen=True)
class _SlowDtype:
    """Model stages of one device and dtype where the probe measures the other precision faster."""

    device: str
    dtype: str
    names: list[str]
    ratio: float  # the other precision's measured speed-up
    evidence: dict[str, Any]
    est_saving_s: float


def _slow_dtypes(run: RunData) -> Iterator[_SlowDtype]:
    """Shared by the two dtype checks: the probe (cached per process) decides which precision is fast."""
    if not run.probe:
        return
    switchable = run.mode().get("dtype_stages")  # an engine that says which stages its dtype switch changes
    for (dev, dt), names in _groups(run).items():
        if switchable is not None:  # advice only where the fix changes something (our VAE stays fp32)
            names = [n for n in names if n in switchable]
        if not names or dev not in ("cpu", "cuda") or dt not in ("fp32", "bf16", "fp16"):
            continue
        secs = _seconds(run, names)
        if secs <= 0:
            continue
        other = "bf16" if dt == "fp32" else "fp32"
        probes = hardware.ratio_probe(dev, (dt, other))
        ratio = probes[other].flops_per_s / probes[dt].flops_per_s
        if ratio < MIN_SPEEDUP:
            continue
        ev: dict[str, Any] = {
            "device": dev, "dtype": dt, "stages": names, "stages_s": round(secs, 3),
            f"{dt}_gflops": round(probes[dt].flops_per_s / 1e9, 1),
            f"{other}_gflops": round(probes[other].flops_per_s / 1e9, 1),
            "measured_speedup": round(ratio, 2),
        }
        if dev == "cpu":
            ev["cpu_matrix_flags"] = run.env.get("cpu_matrix_flags") or "none (no AVX512-BF16/AMX)"
        est = _dtype_ab(run, names, dev, dt, other, ev)
        if est is None:
            est = secs * (1 - 1 / ratio)
            ev["saving_basis"] = ("no Linear calls seen: the stages' time scaled by the probe's matmul speed-up "
                                  "(an upper bound where time is not spent in matmuls)")
        if est < MIN_AB_SAVING_S:
            continue
        yield _SlowDtype(dev, dt, names, ratio, ev, min(est, secs))


def _dtype_ab(run: RunData, names: list[str], dev: str, dt: str, other: str, ev: dict[str, Any]) -> float | None:
    """The stages' own Linear calls timed in both dtypes (doctor/ab.py): the seconds the switch saves on
    them, or None when the run's Linear calls were not seen (a model without nn.Linear)."""
    shapes = run.linears(names, dev)
    result = ab.compare(shapes, ab.Setting(dtype=dt), ab.Setting(dtype=other)) if shapes else None
    if result is None:
        return None
    ev.update(result.evidence("matmul_ab"))
    ev["saving_basis"] = (f"the stages' own Linear calls ({sum(shapes.values())} calls, {len(shapes)} shapes) "
                          f"timed in {dt} and {other}, alternately: the difference")
    return max(0.0, result.saving_s) if result.saving_s > result.spread_s else 0.0


@check("fp32_where_bf16_fast", step=3,
       doc="Models ran in fp32 on a device where the probe measures bf16 matmuls faster")
def fp32_where_bf16_fast(run: RunData) -> Iterator[Found]:
    for case in _slow_dtypes(run):
        if case.dtype != "fp32":
            continue
        yield Found(
            severity="warning",
            title=f"{', '.join(case.names)} ran in fp32; bf16 matmuls measure {case.ratio:.1f}x faster on this "
                  f"{case.device}",
            evidence=case.evidence,
            fix="Run in bf16: `--dtype bf16` (foleyscope), or model.to(torch.bfloat16) / "
                f"torch.autocast('{case.device}', dtype=torch.bfloat16); check the output drift.",
            est_saving_s=case.est_saving_s, fix_mode={"dtype": "bf16"},
        )


@check("half_precision_slow", step=3,
       doc="Models ran in bf16/fp16 on a device where the probe measures fp32 faster (CPUs without native "
           "bf16; fp16 on CPU)")
def half_precision_slow(run: RunData) -> Iterator[Found]:
    for case in _slow_dtypes(run):
        dev, dt = case.device, case.dtype
        if dt == "fp32":
            continue
        why = ("fp16 is emulated on CPUs" if dt == "fp16" and dev == "cpu" else
               "this CPU has no native bf16 matrix instructions" if dev == "cpu" else
               "this GPU has no fast half-precision matmuls")
        yield Found(
            severity="warning",
            title=f"{', '.join(case.names)} ran in {dt}; fp32 matmuls measure {case.ratio:.1f}x faster on this {dev}",
            evidence=case.evidence,
            fix=f"Run in fp32 on this machine: `--dtype fp32` (foleyscope), or model.float() and no autocast ({why}).",
            est_saving_s=case.est_saving_s, fix_mode={"dtype": "fp32"},
        )


def _on_cuda(run: RunData) -> bool:
    return hardware.norm_device(run.mode().get("device") or run.run_device()) == "cuda"


@check("compile_off", step=3, doc="The denoiser runs without torch.compile on CUDA")
def compile_off(run: RunData) -> Found | None:
    den = run.stages.get(Stage.DENOISE)
    if not _on_cuda(run) or den is None or run.mode().get("compile") is not False:
        return None
    return Found(
        severity="info",
        title=f"the denoiser ({den.seconds:.2f} s) runs uncompiled",
        evidence={"denoise_s": round(den.seconds, 3), "assumed_speedup": COMPILE_SPEEDUP,
                  "saving_basis": "published 1.3-1.8x for DiTs on GPUs; --try-fixes measures it"},
        fix="Add `--compile` (torch.compile(mode='max-autotune-no-cudagraphs') on the denoiser); the first "
            "video pays the compile time, so it pays off on batches or a server.",
        est_saving_s=den.seconds * (1 - 1 / COMPILE_SPEEDUP), fix_mode={"compile": True},
    )


@check("cuda_graphs_off", step=3,
       doc="The GPU idles between kernels of the denoising loop and CUDA graphs are off")
def cuda_graphs_off(run: RunData) -> Found | None:
    den = run.stages.get(Stage.DENOISE)
    gpu = den.gpu_util_mean if den is not None else None
    if not _on_cuda(run) or den is None or run.mode().get("cuda_graphs") is not False or gpu is None or gpu >= 85:
        return None
    idle = den.self_s * (1 - gpu / 100)
    return Found(
        severity="info",
        title=f"GPU {gpu:.0f}% busy in the denoising loop with CUDA graphs off",
        evidence={"denoise_s": round(den.seconds, 3), "gpu_util_mean": round(gpu, 1), "gpu_idle_s": round(idle, 3),
                  "saving_basis": f"{LAUNCH_GAP_SHARE:.0%} of the GPU idle time in the loop"},
        fix="Capture the denoiser step in a CUDA graph: `--cudagraphs` (foleyscope); elsewhere "
            "torch.compile(mode='reduce-overhead') with static shapes, and keep scheduler sigmas on the CPU so "
            "indexing them does not sync.",
        est_saving_s=idle * LAUNCH_GAP_SHARE, fix_mode={"cudagraphs": True},
    )


@check("tf32_off", step=3, doc="fp32 matmuls on an Ampere+ GPU with TF32 disabled")
def tf32_off(run: RunData) -> Found | None:
    if not _on_cuda(run):
        return None
    cap = run.env.get("cuda_capability")
    tf32 = run.mode().get("tf32", run.env.get("tf32_matmul"))
    fp32 = [n for (dev, dt), names in _groups(run).items() if dev == "cuda" and dt == "fp32" for n in names]
    if not (fp32 and cap and float(cap) >= 8.0 and tf32 is False and run.probe):
        return None
    ratio = hardware.speedup("cuda", "tf32")
    if ratio < MIN_SPEEDUP:
        return None
    secs = _seconds(run, fp32)
    return Found(
        severity="warning",
        title=f"fp32 on a compute {cap} GPU with TF32 off; TF32 matmuls measure {ratio:.1f}x faster",
        evidence={"stages": fp32, "stages_s": round(secs, 3), "measured_speedup": round(ratio, 2)},
        fix="Drop `--no-tf32` (foleyscope turns TF32 on for fp32 on CUDA); elsewhere "
            "torch.backends.cuda.matmul.allow_tf32 = True (or torch.set_float32_matmul_precision('high')), or "
            "better, run in bf16.",
        est_saving_s=secs * (1 - 1 / ratio), fix_mode={"tf32": True},
    )


@check("sdpa_math_fallback", step=3,
       doc="Attention uses SDPA's math backend instead of flash/memory-efficient kernels")
def sdpa_math_fallback(run: RunData) -> Found | None:
    """The engine reports its SDPA backend (`--attention`); math is the slow reference kernel. The saving
    is measured: the run's own attention calls (every shape the tracer saw) timed on the math kernel and
    on torch's choice."""
    den = run.stages.get(Stage.DENOISE)
    backend = str(run.mode().get("attention", "")).lower()
    if den is None or backend != "math":
        return None
    shapes = {k: n for stage, per in run.modules.attention.items() if run._within(stage, {Stage.DENOISE})
              for k, n in per.items()}
    ev: dict[str, Any] = {"attention": backend, "denoise_s": round(den.seconds, 3)}
    result = ab.compare_attention(shapes) if shapes and run.probe else None
    if result is not None:
        est = max(0.0, result.saving_s) if result.saving_s > result.spread_s else 0.0
        ev.update(result.evidence("attention_ab"))
        ev["saving_basis"] = (f"the denoiser's own attention calls ({sum(shapes.values())} calls, {len(shapes)} "
                              "shapes) timed on the math kernel and on torch's choice, alternately")
    else:
        est = den.seconds * SDPA_SAVING_SHARE
        ev.update(assumed_saving_share=SDPA_SAVING_SHARE,
                  saving_basis="no attention calls seen: an assumed share of the denoise time")
    return Found(
        severity="warning",
        title="attention runs on SDPA's math backend",
        evidence=ev,
        fix="Let torch pick the fused kernel: `--attention auto` (foleyscope); elsewhere use bf16/fp16 inputs with "
            "head_dim <= 256 and no explicit float mask so SDPA picks flash or memory-efficient kernels.",
        est_saving_s=min(est, den.seconds), fix_mode={"attention": "auto"},
    )


@check("pageable_h2d_copies", step=3, doc="Host-to-device copies from pageable memory or with non_blocking=False")
def pageable_h2d_copies(run: RunData) -> Found | None:
    slow = [(n, st) for n, st in run.stages.items() if (st.pageable_h2d or 0) + (st.blocking_h2d or 0) > 0]
    nbytes = sum(st.h2d_bytes or 0 for _, st in slow)
    if not slow or nbytes < 16 * 2**20 or not run.env.get("cuda_available") or not run.probe:
        return None
    bw = hardware.copy_bandwidth()
    est = nbytes / bw["pageable"] - nbytes / bw["pinned"]
    return Found(
        severity="warning",
        title=f"{sum(st.h2d_copies or 0 for _, st in slow)} host-to-GPU copies ({nbytes / 2**20:.0f} MiB) from "
              "pageable memory or blocking",
        evidence={"stages": [n for n, _ in slow], "bytes": nbytes,
                  "pageable": sum(st.pageable_h2d or 0 for _, st in slow),
                  "blocking": sum(st.blocking_h2d or 0 for _, st in slow),
                  "pageable_gb_s": round(bw["pageable"] / 1e9, 2), "pinned_gb_s": round(bw["pinned"] / 1e9, 2)},
        fix="Copy from pinned memory without blocking: `x.pin_memory().to('cuda', non_blocking=True)` "
            "(pin once, reuse the buffer); for offloaded weights keep the CPU copy pinned.",
        est_saving_s=max(0.0, est),
    )


def _repeats(items: list[tuple[str, float]]) -> tuple[dict[str, int], float]:
    """(count per key, seconds of every occurrence after the first per key)."""
    counts: dict[str, int] = defaultdict(int)
    extra = 0.0
    for key, secs in items:
        counts[key] += 1
        if counts[key] > 1:
            extra += secs
    return {k: c for k, c in counts.items() if c > 1}, extra


def _reload_windows(run: RunData, sigs: set[str]) -> list[float]:
    """Seconds of every load of a rebuilt model after its first: parameters created, weights read and
    copied, up to its first forward; time inside other marked stages in that window (decoding the next
    video, say) is not load time and is taken out."""
    seen: set[str] = set()
    out = []
    for sig, start, first_forward in run.modules.loads:
        if sig not in sigs:
            continue
        if sig in seen:
            out.append(max(0.0, first_forward - start - _staged_within(run, start, first_forward)))
        seen.add(sig)
    return out


def _staged_within(run: RunData, start: float, end: float) -> float:
    """Wall time of the marked stages that began and ended inside [start, end] (outermost only, the load
    stage aside): work done between building a model and using it that is not the load."""
    inside = {r.index: r for r in run.spans if r.end_s is not None and r.start_s >= start and r.end_s <= end
              and r.name != Stage.LOAD}
    return sum(r.seconds for r in inside.values() if r.parent_index not in inside)


@check("model_reloaded", step=3,
       doc="The same weights were loaded more than once in one run (reloaded per video or call)")
def model_reloaded(run: RunData) -> Found | None:
    ev: dict[str, Any] = {}
    ests: list[tuple[float, str]] = []
    load = run.stages.get(Stage.LOAD)
    if load is not None and load.count > 1:
        repeat_s = sum(load.occurrences[1:])
        ev.update(load_stage_count=load.count, load_stage_s=[round(x, 3) for x in load.occurrences])
        ests.append((repeat_s, "the repeated load stages' measured time"))
    comp, extra = _repeats([(f.component, f.seconds) for f in run.facts(ModelLoad)])
    if comp:
        ev["model_load_notes"] = comp
        ests.append((extra, "the repeated model_load notes' seconds"))
    reads = [(f.path or f"{f.module}[{f.params}]", f.seconds) for f in run.facts(WeightsRead)]
    files, extra = _repeats(reads)
    if files:
        ev["weights_read_repeats"] = files
        ests.append((extra, "the repeated weight reads' measured time"))
    rebuilt = {sig: n for sig, n in run.modules.builds.items() if n > 1}
    if rebuilt:
        ev["models_rebuilt"] = rebuilt
        windows = _reload_windows(run, set(rebuilt))
        if windows:
            ev["reload_windows_s"] = [round(w, 3) for w in windows]
            ests.append((sum(windows), "each rebuilt model's whole load: from its first parameter to its first "
                                       "forward, less the marked stages in between (any loader)"))
    if not ests and not rebuilt:
        return None
    # the marked load stages measure the whole load directly; then a rebuilt model's whole load window;
    # the notes and file reads see only part of it (the reading, not building the model or copying)
    whole = [e for e in ests if e[1].startswith(("the repeated load stages", "each rebuilt"))]
    est, basis = (whole[0] if whole else max(ests)) if ests else \
        (0.0, "no load time recorded: mark the load with stage('load')")
    ev.update(repeat_load_s=round(est, 4), saving_basis=basis)
    times = max([load.count if load is not None else 0, *comp.values(), *files.values(), *rebuilt.values()])
    return Found(
        severity="critical" if est > 0.2 * run.total_s else "warning",
        title=f"weights loaded {times} times in one run ({est:.2f} s spent on the reloads)",
        evidence=ev,
        fix="Load the model once and reuse it for every video/request: build the pipeline outside the loop "
            "(FoleyPipeline.load(...) once), or keep it in a long-running server process.",
        est_saving_s=est,
    )
