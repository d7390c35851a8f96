"""Step 0, bound the problem: is the time the model's inherent cost or the environment?

Environment: a GPU present but unused (CPU-only torch build, CUDA that cannot start, or just not asked
for), parameters split across devices, memory nearly exhausted or swapping. Inherent cost: each stage's
FLOPs (from StageFlops events) over this device's measured matmul peak gives a floor.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from foleyscope import hardware
from foleyscope.doctor import ab
from foleyscope.doctor.registry import Found, check
from foleyscope.doctor.run import HOST_STAGES, RunData

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


def _gpu_left_idle(run: RunData) -> tuple[dict[str, Any], float] | None:
    """(evidence, seconds a GPU would save) when a GPU is visible but the model stages ran on the CPU;
    the three GPU checks below differ only in why."""
    env = run.env
    gpus = env.get("gpus_visible") or []
    names, model_s = _model_seconds(run)
    if not gpus or any(run.stage_device(n) == "cuda" for n in names) or run.run_device() == "cuda":
        return None
    ev: dict[str, Any] = {
        "gpus_visible": ", ".join(g.get("name", "?") for g in gpus),
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
    return ev, model_s * (1 - 1 / speedup) if speedup > 1 else 0.0


@check("torch_cpu_build_with_gpu", step=0,
       doc="A GPU is visible but torch is a CPU-only build, so everything ran on the CPU")
def torch_cpu_build_with_gpu(run: RunData) -> Found | None:
    idle = _gpu_left_idle(run) if run.env.get("torch_cuda") is None else None
    if idle is None:
        return None
    ev, est = idle
    version = str(run.env.get("torch") or "").split("+")[0]
    return Found(
        severity="critical",
        title=f"{ev['gpus_visible']} is visible but torch {run.env.get('torch')} has no CUDA: the run used the "
              "CPU",
        evidence=ev,
        fix=f"Install a CUDA build of torch {version} matching your driver, e.g. "
            f"`pip install torch=={version} --index-url https://download.pytorch.org/whl/cu128`, then run "
            "with --device cuda.",
        est_saving_s=est,
    )


@check("cuda_unavailable_with_gpu", step=0,
       doc="A GPU is visible and torch has CUDA, but CUDA cannot start (driver/build mismatch)")
def cuda_unavailable_with_gpu(run: RunData) -> Found | None:
    env = run.env
    idle = _gpu_left_idle(run) if env.get("torch_cuda") is not None and not env.get("cuda_available") else None
    if idle is None:
        return None
    ev, est = idle
    ev["cuda_error"] = _cuda_error()
    return Found(
        severity="critical",
        title=f"{ev['gpus_visible']} is visible but torch (CUDA {env.get('torch_cuda')}) cannot use it",
        evidence=ev,
        fix=f"torch was built for CUDA {env.get('torch_cuda')}; update the NVIDIA driver (nvidia-smi shows "
            f"{ev['driver'] or 'its version'}) or install the torch build for the driver's CUDA.",
        est_saving_s=est,
    )


@check("gpu_visible_unused", step=0, doc="CUDA works but the models ran on the CPU (device not set to cuda)")
def gpu_visible_unused(run: RunData) -> Found | None:
    env = run.env
    idle = _gpu_left_idle(run) if env.get("torch_cuda") is not None and env.get("cuda_available") else None
    if idle is None:
        return None
    ev, est = idle
    names = ev["stages_on_cpu"]
    return Found(
        severity="critical",
        title=f"CUDA works ({env.get('cuda_device') or ev['gpus_visible']}) but {', '.join(names) or 'the run'} "
              "ran on the CPU",
        evidence=ev,
        fix="Pass --device cuda (or move the model and its inputs with .to('cuda')).",
        est_saving_s=est,
    )


@check("params_split_devices", step=0,
       doc="A stage's parameters sit on several devices, so weights cross the bus on every call")
def params_split_devices(run: RunData) -> Iterator[Found]:
    for name in run.model_stages():
        per = run.modules.params.get(name) or {}
        devs: dict[str, int] = {}
        for (dev, _dt), n in per.items():
            devs[dev] = devs.get(dev, 0) + n
        if len(devs) > 1:
            yield Found(
                severity="warning",
                title=f"{name}: parameters on {', '.join(sorted(devs))}",
                evidence={"stage": name, "param_elements_by_device": devs,
                          "h2d_bytes": run.stages[name].h2d_bytes},
                fix="Keep a stage's weights on one device (model.to(device) once, after loading); if memory "
                    "forces offload, offload whole components between stages from pinned memory.",
                est_saving_s=0.0,
            )


@check("low_free_memory", step=0, doc="The run's peak memory came within 10% of what was free: OOM or swapping risk")
def low_free_memory(run: RunData) -> Iterator[Found]:
    before = run.mem_before
    if not before:
        return
    traced = run.traced()
    cuda_peak = max((s.peak_mem_bytes or 0 for s in traced if s.mem_kind == "cuda_allocated"), default=0)
    rss_peak = max([s.peak_rss_bytes or 0 for s in traced] + [s.rss_bytes for s in run.samples] + [0])
    cases = [("host RAM", rss_peak, before.get("ram_available_bytes", 0) + before.get("rss_bytes", 0))]
    if "cuda_free_bytes" in before:
        cases.append(("GPU memory", cuda_peak, before["cuda_free_bytes"] + before.get("cuda_allocated_bytes", 0)))
    for label, peak, usable in cases:
        if usable > 0 and peak > 0.9 * usable:
            quant = _smaller_weights(run, label)
            yield Found(
                severity="warning",
                title=f"{label}: peak {peak / 2**30:.2f} GiB of {usable / 2**30:.2f} GiB usable",
                evidence={"memory": label, "peak_bytes": peak, "usable_bytes": usable,
                          "peak_share": round(peak / usable, 3)},
                fix=(f"Lower the need: `--quant {quant}` (the denoiser's weights in 8 bits)" if quant else
                     "Lower the need: a smaller preset")
                    + (", `--offload model` or `--offload blocks:4` (weights in pinned host memory, on the GPU "
                       "only while they run)" if label == "GPU memory" else "")
                    + "; `foleyscope plan --gpu SIZE` lists the fastest mode that fits; fewer frames "
                      "(`foleyscope prep` to 720p/25 fps, trim to 15 s), or one video at a time.",
                est_saving_s=0.0, fix_mode={"quant": quant} if quant else None,
            )


def _smaller_weights(run: RunData, label: str) -> str | None:
    """The quantisation that shrinks the denoiser's weights where the run needs memory, if not on already:
    fp8 on a GPU that computes it (compute capability >= 8.9), else int8 weight-only."""
    if run.mode().get("quant", "none") not in (None, "none"):
        return None
    cap = run.env.get("cuda_capability")
    return "fp8" if label == "GPU memory" and cap and float(cap) >= 8.9 else "int8wo"


@check("swapping", step=0, doc="The system swapped pages in during the run")
def swapping(run: RunData) -> Found | None:
    before, after = run.mem_before, run.mem_after
    swapped = after.get("swap_in_bytes", 0) - before.get("swap_in_bytes", 0) if before and after else 0
    if swapped <= 64 * 2**20:
        return None
    rates = [s.disk_read_bps for s in run.samples if s.disk_read_bps]
    rate = max(rates) if rates else 200e6
    return Found(
        severity="critical",
        title=f"{swapped / 2**20:.0f} MiB swapped in during the run",
        evidence={"swap_in_bytes": swapped, "read_rate_bps": round(rate),
                  "rate_basis": "highest disk read rate sampled" if rates else "assumed 200 MB/s"},
        fix="Reduce memory use (see low_free_memory) or add RAM; swapping turns memory reads into disk reads.",
        est_saving_s=swapped / rate,
    )


def _shared(run: RunData, name: str) -> bool:
    """Threads of the stage waited for a core: other processes explain its slowness (cpu_contention)."""
    st = run.stages.get(name)
    return st is not None and (st.wait_cores or 0.0) >= 0.3


@check("low_compute_efficiency", step=0,
       doc="Model stages run far below the floor set by their FLOPs and the measured matmul peak (one finding "
           "per run, with each slow stage's numbers)")
def low_compute_efficiency(run: RunData) -> Found | None:
    slow = {name: row for name, row in run.tables.floor.get("stages", {}).items()
            if row["efficiency"] < MIN_EFFICIENCY and row["measured_s"] >= max(0.5, 0.05 * run.total_s)
            and not _shared(run, name)}
    if not slow:
        return None
    per_stage: dict[str, Any] = {}
    for name, row in slow.items():
        per_stage[name] = {"measured_s": round(row["measured_s"], 3), "floor_s": round(row["floor_s"], 4),
                           "efficiency": round(row["efficiency"], 4),
                           "gap_to_tuned_s": round(max(0.0, row["measured_s"] - row["floor_s"] / TUNED_EFFICIENCY), 3)}
        shapes = run.linears([name], row["device"])
        if shapes and run.probe:  # the floor at the model's own matmul shapes, timed
            own = ab.measure(shapes, ab.Setting())
            per_stage[name]["own_shapes_matmul_s"] = round(own, 4)
    worst = min(slow, key=lambda n: slow[n]["efficiency"])
    row = slow[worst]
    # No saving is claimed: no single fix is known to close this gap (small or memory-bound ops never
    # reach a large-matmul peak), so it ranks below findings whose fix has a priced saving.
    return Found(
        severity="info",
        title=f"{', '.join(slow)} run{'s' if len(slow) == 1 else ''} far below the measured {row['device']} "
              f"{row['dtype']} matmul peak (lowest: {worst} at {row['efficiency']:.1%})",
        evidence={"stages": list(slow), "per_stage": per_stage,
                  "peak_flops_per_s": round(row["peak_flops_per_s"]), "tuned_efficiency_assumed": TUNED_EFFICIENCY,
                  "how": "floor = the stage's FLOPs / the probe's peak; own_shapes_matmul_s = the stage's own "
                         "Linear calls timed at their shapes (what its matmuls can take on this device)"},
        fix="The time is not going to arithmetic: see the step 1 and step 3 findings (dtype, attention "
            "backend, compile, stalls); profile the stage with torch.profiler to find the gaps.",
        est_saving_s=0.0,
    )
