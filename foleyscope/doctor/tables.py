"""The report's two tables, computed once per report before any check runs: the compute floor (step 0),
then the stage table (step 2), which shows each stage's floor. Checks read them from `run.tables`, so
no check depends on another having run first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from foleyscope import hardware
from foleyscope.doctor.checks.utilisation import reading
from foleyscope.doctor.run import RunData


@dataclass(frozen=True)
class Tables:
    floor: dict[str, Any]  # {"peak_flops_per_s": {"dev/dtype": FLOP/s}, "stages": {name: stage_floor row}}
    stages: dict[str, dict[str, Any]]  # stage name -> row; top-level rows plus OTHER add up to total_s


def compute(run: RunData) -> tuple[Tables, dict[str, str]]:
    """Both tables, floor first; returns (tables, {"floor": error}) since a failed probe costs the
    floor, not the report."""
    errors: dict[str, str] = {}
    try:
        floor = floor_table(run)
    except Exception as exc:  # noqa: BLE001
        floor, errors["floor"] = {}, f"{type(exc).__name__}: {exc}"
    return Tables(floor, stage_table(run, floor.get("stages", {}))), errors


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


def floor_table(run: RunData) -> dict[str, Any]:
    """Per stage with known FLOPs: its FLOPs over the measured matmul peak at its device and dtype."""
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
    return {"peak_flops_per_s": peaks, "stages": stages}


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(x, nd)


def stage_table(run: RunData, floors: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Stage name -> its row (with `floor_s`/`efficiency` where `floors` has the stage)."""
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
            "blocked_s": _r(st.self_blocked_s),  # its own time blocked: sleeping, a lock, I/O
            "step_blocked_s": _r(st.step_blocked_s),
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
