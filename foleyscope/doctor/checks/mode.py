"""Step 3, the inference mode: dtype, torch.compile, CUDA graphs, SDPA backend, TF32, pinned and
non_blocking copies, weights reloaded within a run.

Dtype advice is measured, not assumed: the matmul probe times fp32 against bf16/fp16 on the device the
stage ran on. (On CPUs without AVX512-BF16/AMX, bf16 is several times slower than fp32.) Mode settings
the engine reports in a ModeReport with every call; the dtype and the device are also read from the
modules each stage actually ran, so user code needs no notes for them.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from foleyscope import hardware
from foleyscope.doctor.finding import Finding
from foleyscope.doctor.run import RunData
from foleyscope.stages import Stage
from foleyscope.trace import ModelLoad, WeightsRead

CHECKS = {
    "fp32_where_bf16_fast": "Models ran in fp32 on a device where the probe measures bf16 matmuls faster",
    "half_precision_slow": "Models ran in bf16/fp16 on a device where the probe measures fp32 faster "
                           "(CPUs without native bf16; fp16 on CPU)",
    "compile_off": "The denoiser runs without torch.compile on CUDA",
    "cuda_graphs_off": "The GPU idles between kernels of the denoising loop and CUDA graphs are off",
    "sdpa_math_fallback": "Attention uses SDPA's math backend instead of flash/memory-efficient kernels",
    "tf32_off": "fp32 matmuls on an Ampere+ GPU with TF32 disabled",
    "pageable_h2d_copies": "Host-to-device copies from pageable memory or with non_blocking=False",
    "model_reloaded": "The same weights were loaded more than once in one run (reloaded per video or call)",
}

MIN_SPEEDUP = 1.3  # below this the probe's noise could flip the advice
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


def _dtype_findings(run: RunData) -> list[Finding]:
    if not run.probe:
        return []
    out = []
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
        probes = hardware.measure(dev, (dt, other))
        ratio = probes[other].flops_per_s / probes[dt].flops_per_s
        if ratio < MIN_SPEEDUP:
            continue
        ev: dict[str, Any] = {
            "device": dev, "dtype": dt, "stages": names, "stages_s": round(secs, 3),
            f"{dt}_gflops": round(probes[dt].flops_per_s / 1e9, 1),
            f"{other}_gflops": round(probes[other].flops_per_s / 1e9, 1),
            "measured_speedup": round(ratio, 2),
            "saving_basis": "stage time scaled by the measured matmul speed-up (an upper bound where "
                            "time is not spent in matmuls)",
        }
        flags = run.env.get("cpu_matrix_flags")
        if dev == "cpu":
            ev["cpu_matrix_flags"] = flags or "none (no AVX512-BF16/AMX)"
        est = secs * (1 - 1 / ratio)
        if dt == "fp32":
            out.append(Finding(
                "fp32_where_bf16_fast", 3, "warning",
                f"{', '.join(names)} ran in fp32; bf16 matmuls measure {ratio:.1f}x faster on this {dev}",
                ev,
                "Run in bf16: `--dtype bf16` (foleyscope), or model.to(torch.bfloat16) / "
                f"torch.autocast('{dev}', dtype=torch.bfloat16); check the output drift.",
                est, fix_mode={"dtype": "bf16"},
            ))
        else:
            why = ("fp16 is emulated on CPUs" if dt == "fp16" and dev == "cpu" else
                   "this CPU has no native bf16 matrix instructions" if dev == "cpu" else
                   "this GPU has no fast half-precision matmuls")
            out.append(Finding(
                "half_precision_slow", 3, "warning",
                f"{', '.join(names)} ran in {dt}; fp32 matmuls measure {ratio:.1f}x faster on this {dev}",
                ev,
                "Run in fp32 on this machine: `--dtype fp32` (foleyscope), or model.float() and no "
                f"autocast ({why}).",
                est, fix_mode={"dtype": "fp32"},
            ))
    return out


def _cuda_mode_findings(run: RunData) -> list[Finding]:
    mode = run.mode()
    if hardware.norm_device(mode.get("device") or run.run_device()) != "cuda":
        return []
    out: list[Finding] = []
    den = run.stages.get(Stage.DENOISE)
    if den is not None and mode.get("compile") is False:
        out.append(Finding(
            "compile_off", 3, "info",
            f"the denoiser ({den.seconds:.2f} s) runs uncompiled",
            {"denoise_s": round(den.seconds, 3), "assumed_speedup": COMPILE_SPEEDUP,
             "saving_basis": "published 1.3-1.8x for DiTs on GPUs; --try-fixes measures it"},
            "Add `--compile` (torch.compile(mode='max-autotune-no-cudagraphs') on the denoiser); the first "
            "video pays the compile time, so it pays off on batches or a server.",
            den.seconds * (1 - 1 / COMPILE_SPEEDUP), fix_mode={"compile": True},
        ))
    gpu = den.gpu_util_mean if den is not None else None
    if den is not None and mode.get("cuda_graphs") is False and gpu is not None and gpu < 85:
        idle = den.self_s * (1 - gpu / 100)
        out.append(Finding(
            "cuda_graphs_off", 3, "info",
            f"GPU {gpu:.0f}% busy in the denoising loop with CUDA graphs off",
            {"denoise_s": round(den.seconds, 3), "gpu_util_mean": round(gpu, 1), "gpu_idle_s": round(idle, 3),
             "saving_basis": f"{LAUNCH_GAP_SHARE:.0%} of the GPU idle time in the loop"},
            "Capture the denoiser step in a CUDA graph: torch.compile(mode='reduce-overhead') with static "
            "shapes, and keep scheduler sigmas on the CPU so indexing them does not sync.",
            idle * LAUNCH_GAP_SHARE,
        ))
    cap = run.env.get("cuda_capability")
    tf32 = mode.get("tf32", run.env.get("tf32_matmul"))
    groups = _groups(run)
    fp32 = [n for (dev, dt), names in groups.items() if dev == "cuda" and dt == "fp32" for n in names]
    if fp32 and cap and float(cap) >= 8.0 and tf32 is False and run.probe:
        ratio = hardware.speedup("cuda", "tf32")
        secs = _seconds(run, fp32)
        if ratio >= MIN_SPEEDUP:
            out.append(Finding(
                "tf32_off", 3, "warning",
                f"fp32 on a compute {cap} GPU with TF32 off; TF32 matmuls measure {ratio:.1f}x faster",
                {"stages": fp32, "stages_s": round(secs, 3), "measured_speedup": round(ratio, 2)},
                "torch.backends.cuda.matmul.allow_tf32 = True (or "
                "torch.set_float32_matmul_precision('high')), or better, run in bf16.",
                secs * (1 - 1 / ratio),
            ))
    return out


def _attention_findings(run: RunData) -> list[Finding]:
    """The engine reports its SDPA backend (`--attention`); math is the slow reference kernel."""
    den = run.stages.get(Stage.DENOISE)
    backend = str(run.mode().get("attention", "")).lower()
    if den is None or backend != "math":
        return []
    return [Finding(
        "sdpa_math_fallback", 3, "warning",
        "attention runs on SDPA's math backend",
        {"attention": backend, "denoise_s": round(den.seconds, 3), "assumed_saving_share": SDPA_SAVING_SHARE,
         "saving_basis": "an assumed share of the denoise time; --try-fixes measures it"},
        "Let torch pick the fused kernel: `--attention auto` (foleyscope); elsewhere use bf16/fp16 inputs with "
        "head_dim <= 256 and no explicit float mask so SDPA picks flash or memory-efficient kernels.",
        den.seconds * SDPA_SAVING_SHARE, fix_mode={"attention": "auto"},
    )]


def _copy_findings(run: RunData) -> list[Finding]:
    slow = [(n, st) for n, st in run.stages.items() if (st.pageable_h2d or 0) + (st.blocking_h2d or 0) > 0]
    nbytes = sum(st.h2d_bytes or 0 for _, st in slow)
    if not slow or nbytes < 16 * 2**20 or not run.env.get("cuda_available") or not run.probe:
        return []
    bw = hardware.copy_bandwidth()
    est = nbytes / bw["pageable"] - nbytes / bw["pinned"]
    return [Finding(
        "pageable_h2d_copies", 3, "warning",
        f"{sum(st.h2d_copies or 0 for _, st in slow)} host-to-GPU copies ({nbytes / 2**20:.0f} MiB) from "
        "pageable memory or blocking",
        {"stages": [n for n, _ in slow], "bytes": nbytes,
         "pageable": sum(st.pageable_h2d or 0 for _, st in slow),
         "blocking": sum(st.blocking_h2d or 0 for _, st in slow),
         "pageable_gb_s": round(bw["pageable"] / 1e9, 2), "pinned_gb_s": round(bw["pinned"] / 1e9, 2)},
        "Copy from pinned memory without blocking: `x.pin_memory().to('cuda', non_blocking=True)` "
        "(pin once, reuse the buffer); for offloaded weights keep the CPU copy pinned.",
        max(0.0, est),
    )]


def _repeats(items: list[tuple[str, float]]) -> tuple[dict[str, int], float]:
    """(count per key, seconds of every occurrence after the first per key)."""
    counts: dict[str, int] = defaultdict(int)
    extra = 0.0
    for key, secs in items:
        counts[key] += 1
        if counts[key] > 1:
            extra += secs
    return {k: c for k, c in counts.items() if c > 1}, extra


def _reload_findings(run: RunData) -> list[Finding]:
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
    if not ests and not rebuilt:
        return []
    est, basis = max(ests) if ests else (0.0, "no load time recorded: mark the load with stage('load')")
    ev.update(repeat_load_s=round(est, 4), saving_basis=basis)
    times = max([load.count if load is not None else 0, *comp.values(), *files.values(), *rebuilt.values()])
    return [Finding(
        "model_reloaded", 3, "critical" if est > 0.2 * run.total_s else "warning",
        f"weights loaded {times} times in one run ({est:.2f} s spent on the reloads)",
        ev,
        "Load the model once and reuse it for every video/request: build the pipeline outside the loop "
        "(FoleyPipeline.load(...) once), or keep it in a long-running server process.",
        est,
    )]


def check_mode(run: RunData) -> list[Finding]:
    return (_dtype_findings(run) + _cuda_mode_findings(run) + _attention_findings(run) + _copy_findings(run)
            + _reload_findings(run))
