"""Step 0, bound the problem: is the time the model's inherent cost or the environment?

Environment: a GPU present but unused (CPU-only torch build, CUDA that cannot start, or just not asked
for), parameters split across devices, memory nearly exhausted or swapping. Inherent cost: each stage's
FLOPs (from StageFlops events) over this device's measured matmul peak gives a floor.
"""

from __future__ import annotations

from typing import Any

from foleyscope import hardware
from foleyscope.doctor.finding import Finding
from foleyscope.doctor.run import HOST_STAGES, RunData

CHECKS = {
    "torch_cpu_build_with_gpu": "A GPU is visible but torch is a CPU-only build, so everything ran on the "
                                "CPU",
    "cuda_unavailable_with_gpu": "A GPU is visible and torch has CUDA, but CUDA cannot start (driver/build "
                                 "mismatch)",
    "gpu_visible_unused": "CUDA works but the models ran on the CPU (device not set to cuda)",
    "params_split_devices": "A stage's parameters sit on several devices, so weights cross the bus on every "
                            "call",
    "low_free_memory": "The run's peak memory came within 10% of what was free: OOM or swapping risk",
    "swapping": "The system swapped pages in during the run",
    "low_compute_efficiency": "A model stage runs far below the floor set by its FLOPs and the measured "
                              "matmul peak",
}

ASSUMED_GPU_SPEEDUP = 10.0  # used only when torch cannot reach the GPU to measure it
TUNED_EFFICIENCY = 0.4  # share of the matmul peak a tuned transformer pipeline reaches end to end
MIN_EFFICIENCY = 0.1


def _model_seconds(run: RunData) -> tuple[list[str], float]:
    names = run.outermost(run.model_stages())
    if not names:  # no models seen: every traced non-host stage is the candidate work
        names = run.outermost([s.name for s in run.traced() if s.name not in HOST_STAGES])
    return names, sum(run.stages[n].seconds for n in names)


def _cuda_error() -> str | None:
    try:
        import torch

        torch.cuda.init()
    except Exception as exc:  # noqa: BLE001 - the message is the evidence
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


def _gpu_findings(run: RunData) -> list[Finding]:
    env = run.env
    gpus = env.get("gpus_visible") or []
    names, model_s = _model_seconds(run)
    if not gpus or any(run.stage_device(n) == "cuda" for n in names) or run.run_device() == "cuda":
        return []
    gpu_names = ", ".join(g.get("name", "?") for g in gpus)
    ev: dict[str, Any] = {
        "gpus_visible": gpu_names,
        "driver": gpus[0].get("driver"),
        "torch": env.get("torch"),
        "torch_cuda": env.get("torch_cuda"),
        "stages_on_cpu": names,
        "stages_on_cpu_s": round(model_s, 3),
    }
    speedup = ASSUMED_GPU_SPEEDUP
    basis = f"assumed {ASSUMED_GPU_SPEEDUP:.0f}x (torch cannot reach the GPU)"
    if env.get("cuda_available") and run.probe:
        dt = next((run.stage_dtype(n) for n in names if run.stage_dtype(n)), "fp32")
        gpu = hardware.peak_flops("cuda", "bf16" if dt == "fp32" else dt)
        cpu = hardware.peak_flops("cpu", dt)
        speedup, basis = gpu / cpu, "measured matmul peaks, GPU bf16 / CPU at the run's dtype"
    ev.update(gpu_over_cpu_speedup=round(speedup, 1), speedup_basis=basis)
    est = model_s * (1 - 1 / speedup) if speedup > 1 else 0.0
    version = str(env.get("torch") or "").split("+")[0]
    if env.get("torch_cuda") is None:
        return [Finding(
            "torch_cpu_build_with_gpu", 0, "critical",
            f"{gpu_names} is visible but torch {env.get('torch')} has no CUDA: the run used the CPU",
            ev,
            f"Install a CUDA build of torch {version} matching your driver, e.g. "
            f"`pip install torch=={version} --index-url https://download.pytorch.org/whl/cu128`, then run "
            "with --device cuda.",
            est,
        )]
    if not env.get("cuda_available"):
        ev["cuda_error"] = _cuda_error()
        return [Finding(
            "cuda_unavailable_with_gpu", 0, "critical",
            f"{gpu_names} is visible but torch (CUDA {env.get('torch_cuda')}) cannot use it",
            ev,
            f"torch was built for CUDA {env.get('torch_cuda')}; update the NVIDIA driver (nvidia-smi shows "
            f"{gpus[0].get('driver') or 'its version'}) or install the torch build for the driver's CUDA.",
            est,
        )]
    return [Finding(
        "gpu_visible_unused", 0, "critical",
        f"CUDA works ({env.get('cuda_device') or gpu_names}) but {', '.join(names) or 'the run'} ran on "
        "the CPU",
        ev,
        "Pass --device cuda (or move the model and its inputs with .to('cuda')).",
        est,
    )]


def _split_devices(run: RunData) -> list[Finding]:
    out = []
    for name in run.model_stages():
        per = run.modules.params.get(name) or {}
        devs: dict[str, int] = {}
        for (dev, _dt), n in per.items():
            devs[dev] = devs.get(dev, 0) + n
        if len(devs) > 1:
            st = run.stages[name]
            out.append(Finding(
                "params_split_devices", 0, "warning",
                f"{name}: parameters on {', '.join(sorted(devs))}",
                {"stage": name, "param_elements_by_device": devs, "h2d_bytes": st.h2d_bytes},
                "Keep a stage's weights on one device (model.to(device) once, after loading); if memory "
                "forces offload, offload whole components between stages from pinned memory.",
                0.0,
            ))
    return out


def _memory(run: RunData) -> list[Finding]:
    out: list[Finding] = []
    before, after = run.mem_before, run.mem_after
    traced = run.traced()
    if before:
        cuda_peak = max((s.peak_mem_bytes or 0 for s in traced if s.mem_kind == "cuda_allocated"), default=0)
        rss_peak = max([s.peak_rss_bytes or 0 for s in traced] + [s.rss_bytes for s in run.samples] + [0])
        cases = [("host RAM", rss_peak, before.get("ram_available_bytes", 0) + before.get("rss_bytes", 0))]
        if "cuda_free_bytes" in before:
            cases.append(("GPU memory", cuda_peak,
                          before["cuda_free_bytes"] + before.get("cuda_allocated_bytes", 0)))
        for label, peak, usable in cases:
            if usable > 0 and peak > 0.9 * usable:
                out.append(Finding(
                    "low_free_memory", 0, "warning",
                    f"{label}: peak {peak / 2**30:.2f} GiB of {usable / 2**30:.2f} GiB usable",
                    {"memory": label, "peak_bytes": peak, "usable_bytes": usable,
                     "peak_share": round(peak / usable, 3)},
                    "Free memory or lower the need: a smaller preset, bf16 weights on GPU, fewer frames "
                    "(`foleyscope prep` to 720p/25 fps, trim to 15 s), or one video at a time.",
                    0.0,
                ))
    if before and after:
        swapped = after.get("swap_in_bytes", 0) - before.get("swap_in_bytes", 0)
        if swapped > 64 * 2**20:
            rates = [s.disk_read_bps for s in run.samples if s.disk_read_bps]
            rate = max(rates) if rates else 200e6
            out.append(Finding(
                "swapping", 0, "critical",
                f"{swapped / 2**20:.0f} MiB swapped in during the run",
                {"swap_in_bytes": swapped, "read_rate_bps": round(rate),
                 "rate_basis": "highest disk read rate sampled" if rates else "assumed 200 MB/s"},
                "Reduce memory use (see low_free_memory) or add RAM; swapping turns memory reads into disk "
                "reads.",
                swapped / rate,
            ))
    return out


def floor_table(run: RunData) -> dict[str, Any]:
    """Per stage with known FLOPs: floor_s, efficiency; cached on the run (the report shows it too)."""
    if "floor" in run.cache:
        return run.cache["floor"]
    stages: dict[str, Any] = {}
    peaks: dict[str, float] = {}
    if run.probe:
        for name, flops in run.flops().items():
            st = run.stages.get(name)
            if st is None or flops <= 0 or st.seconds <= 0:
                continue
            dev, dt = run.stage_device(name), run.stage_dtype(name) or "fp32"
            peak = hardware.peak_flops(dev, dt)
            peaks[f"{dev}/{dt}"] = peak
            stages[name] = {"device": dev, "dtype": dt, **stage_floor(flops, peak, st.seconds)}
    table = {"peak_flops_per_s": peaks, "stages": stages, "probes": hardware.cached()}
    run.cache["floor"] = table
    return table


def _efficiency(run: RunData) -> list[Finding]:
    out = []
    for name, row in floor_table(run)["stages"].items():
        measured = row["measured_s"]
        if row["efficiency"] >= MIN_EFFICIENCY or measured < max(0.5, 0.05 * run.total_s):
            continue
        target = row["floor_s"] / TUNED_EFFICIENCY
        # No saving is claimed: no single fix is known to close this gap (small or memory-bound ops
        # never reach a large-matmul peak), so it ranks below findings whose fix has a priced saving.
        out.append(Finding(
            "low_compute_efficiency", 0, "info",
            f"{name} runs at {row['efficiency']:.1%} of the measured {row['device']} {row['dtype']} "
            "matmul peak",
            {"stage": name, "flops": row["flops"], "peak_flops_per_s": round(row["peak_flops_per_s"]),
             "floor_s": round(row["floor_s"], 4), "measured_s": round(measured, 3),
             "efficiency": round(row["efficiency"], 4), "tuned_efficiency_assumed": TUNED_EFFICIENCY,
             "gap_to_tuned_s": round(max(0.0, measured - target), 3)},
            "The time is not going to arithmetic: see this stage's step 1 and step 3 findings (dtype, "
            "attention backend, compile, stalls); profile it with torch.profiler to find the gaps.",
            0.0,
        ))
    return out


def stage_floor(flops: float, peak: float, measured_s: float) -> dict[str, float]:
    """{'flops', 'peak_flops_per_s', 'floor_s', 'measured_s', 'efficiency'} for one stage."""
    floor_s = flops / peak if peak > 0 else 0.0
    return {
        "flops": float(flops),
        "peak_flops_per_s": float(peak),
        "floor_s": floor_s,
        "measured_s": measured_s,
        "efficiency": floor_s / measured_s if measured_s > 0 else 0.0,
    }


def check_bound(run: RunData) -> list[Finding]:
    return _gpu_findings(run) + _split_devices(run) + _memory(run) + _efficiency(run)
