"""Step 2, time each stage: the stage table (seconds, share, steps per second, peak memory, utilisation),
and two findings about the shape of the run rather than one stage's behaviour."""

from __future__ import annotations

from typing import Any

from foleyscope.doctor.checks.utilisation import reading
from foleyscope.doctor.finding import Finding
from foleyscope.doctor.run import HOST_STAGES, MODEL_STAGES, OTHER, RunData

CHECKS = {
    "stage_dominates": "Decoding or post-processing takes over 40% of a run that also runs models",
    "untraced_time": "Over 25% of the run is outside every marked stage: mark more stages to see where it "
                     "goes",
}

DOMINANT_SHARE = 0.4
UNTRACED_SHARE = 0.25


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(x, nd)


def stage_table(run: RunData) -> dict[str, dict[str, Any]]:
    """Stage name -> its row; top-level rows plus OTHER add up to total_s."""
    floors = run.cache.get("floor", {}).get("stages", {})
    total = run.total_s or 1e-12
    table: dict[str, dict[str, Any]] = {}
    for name, st in run.stages.items():
        row: dict[str, Any] = {
            "seconds": round(st.seconds, 6),
            "share": round(st.seconds / total, 6),
            "count": st.count,
            "self_s": round(st.self_s, 6),
            "parent": st.parent,
            "depth": st.depth,
            "cpu_s": round(st.cpu_s, 4),
            "busy_cores": _r(st.busy_cores, 3),
            "peak_mem_bytes": st.peak_mem_bytes,
            "mem_kind": st.mem_kind,
            "peak_rss_bytes": st.peak_rss_bytes,
            "h2d_copies": st.h2d_copies,
            "h2d_bytes": st.h2d_bytes,
            "steps": st.steps,
            "steps_per_s": _r(st.steps_per_s),
            "step_mean_s": _r(st.step_s / st.steps if st.steps else None, 6),
            "samples": len(st.samples),
            "gpu_util_mean": _r(st.gpu_util_mean, 1),
            "proc_cpu_percent_mean": _r(st.proc_cpu_mean, 1),
            "disk_read_bps_mean": _r(st.disk_read_mean_bps, 0),
            "dtype": run.stage_dtype(name) if not st.untraced else None,
            "reading": reading(run, st),
            "untraced": st.untraced,
        }
        if name in floors:
            row["floor_s"] = _r(floors[name]["floor_s"], 6)
            row["efficiency"] = _r(floors[name]["efficiency"])
        table[name] = row
    return table


def check_timing(run: RunData) -> list[Finding]:
    out: list[Finding] = []
    total = run.total_s
    if total <= 0:
        return out
    has_models = bool(run.model_stages()) or any(s.name in MODEL_STAGES for s in run.traced())
    # Loading is left out: one load per run is expected, loads per video are model_reloaded's case.
    for name in (n for n in HOST_STAGES if has_models and n != "load"):
        st = run.stages.get(name)
        if st is None or st.seconds / total < DOMINANT_SHARE:
            continue
        fix = {
            "decode": "Normalise the input first: `foleyscope prep VIDEO -o prepped.mp4` (720p, 25 fps, "
                      "H.264, <= 15 s); see the step 4 findings.",
            "postprocess": "Write the WAV and mux without re-encoding the video (stream copy), and skip the "
                           "mux when only audio is needed.",
        }[str(name)]
        out.append(Finding(
            "stage_dominates", 2, "info",
            f"{name} takes {st.seconds / total:.0%} of the run ({st.seconds:.2f} s of {total:.2f} s)",
            {"stage": str(name), "seconds": round(st.seconds, 3), "share": round(st.seconds / total, 3),
             "count": st.count},
            fix,
            0.0,  # where to look, not a saving by itself: the step 1/3/4 findings estimate the saving
        ))
    other = run.stages.get(OTHER)
    if other is not None and other.seconds >= 0.5 and other.seconds / total >= UNTRACED_SHARE:
        out.append(Finding(
            "untraced_time", 2, "info",
            f"{other.seconds:.2f} s ({other.seconds / total:.0%}) of the run is outside every stage",
            {"untraced_s": round(other.seconds, 3), "share": round(other.seconds / total, 3),
             "stages_marked": len(run.traced())},
            "Wrap the remaining work in `with foleyscope.trace.stage('name'):` (or decorate the "
            "function with @stage('name')) so the doctor can time and judge it.",
            0.0,
        ))
    return out
