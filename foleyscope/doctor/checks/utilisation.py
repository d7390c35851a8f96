"""Step 1, hardware utilisation: the five-steps table as rules over each stage's own time.

| GPU util | CPU | reading |
| > 80%    | any | compute-bound: normal |
| 0%       |  -  | a model stage whose data never reached the GPU |
| < 30%    | > 80% of a core | the GPU waits on the CPU (decoding) |
| < 30%    | < 30% of a core | stalled or synchronous |

CPU use comes from the process's CPU time read at the stage boundaries (exact, all threads); GPU use from
the sampler's NVML samples tagged with the stage. Without a GPU the same CPU test finds stalls: a stage
whose process kept less than 0.3 of a core busy while its wall time ran on was waiting, not working.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from foleyscope import hardware
from foleyscope.doctor.registry import Found, check
from foleyscope.doctor.run import RunData, StageStats

MIN_SELF_S = 0.25  # shorter stage time is noise at 10 Hz sampling
MIN_SHARE = 0.02
IDLE_CORES = 0.3  # below this many busy cores the CPU is idle ("< 30%" of a core)
BUSY_CORES = 0.8  # at least a core's worth of work ("> 80%")
IO_BPS = 20e6


def _gpu(st: StageStats) -> tuple[float, float] | None:
    vals = [s.gpu_util for s in st.samples if s.gpu_util is not None]
    return (sum(vals) / len(vals), max(vals)) if len(vals) >= 3 else None


def _judged_gpu(run: RunData, st: StageStats) -> tuple[float, float] | None:
    """The GPU reading (mean, peak) the table judges a stage on: in a CUDA run, or a GPU that did work."""
    gpu = _gpu(st)
    return gpu if gpu is not None and (run.run_device() == "cuda" or gpu[1] > 0) else None


def _gpu_blind(run: RunData, st: StageStats) -> bool:
    """A stage of a CUDA run with too few GPU samples to judge (short, or no NVML)."""
    return run.run_device() == "cuda" and not st.untraced and run.stage_device(st.name) == "cuda"


Row = Literal["not_sampled", "gpu_bound", "gpu_idle", "gpu_waits_on_cpu", "stalled", "mixed", "disk", "cpu"]
PHRASES: dict[str, str] = {
    "not_sampled": "GPU not sampled", "gpu_bound": "GPU-bound (normal)", "gpu_idle": "GPU idle: data not on GPU",
    "gpu_waits_on_cpu": "CPU-bound, GPU waiting", "stalled": "stalled", "mixed": "mixed",
    "disk": "waiting on disk",
}


def _row(run: RunData, st: StageStats, model: set[str]) -> Row:
    """The row of the table above that a stage's own time falls in."""
    busy, wait = st.busy_cores, st.wait_cores or 0.0
    if _gpu(st) is None and _gpu_blind(run, st):
        return "not_sampled"  # an idle CPU here may just be waiting on GPU work we could not see
    if (judged := _judged_gpu(run, st)) is not None:
        mean, peak = judged
        if mean > 80:
            return "gpu_bound"
        if peak == 0 and st.name in model:
            return "gpu_idle"
        if mean < 30 and busy >= BUSY_CORES:
            return "gpu_waits_on_cpu"
        if mean < 30 and busy < IDLE_CORES:
            return "stalled"
        return "mixed"
    if busy + wait < IDLE_CORES:
        return "disk" if (st.disk_read_mean_bps or 0.0) > IO_BPS else "stalled"
    return "cpu"


def reading(run: RunData, st: StageStats) -> str:
    """One phrase for the stage table: what the utilisation says about this stage."""
    if st.self_s < 0.05:
        return ""
    row = _row(run, st, set(run.model_stages()))
    if row != "cpu":
        return PHRASES[row]
    wait = st.wait_cores or 0.0
    starved = f", {wait:.1f} waiting" if wait >= IDLE_CORES else ""  # cores' worth of threads kept off a core
    return f"CPU-bound, {st.busy_cores:.1f}/{run.ncores} cores{starved}"


def _stages_in(run: RunData, row: Row) -> list[StageStats]:
    """The stages (in run order) long enough to judge whose own time falls in `row`."""
    model = set(run.model_stages())
    return [st for st in run.stages.values()
            if st.self_s >= MIN_SELF_S and st.self_s >= MIN_SHARE * run.total_s and _row(run, st, model) == row]


def stalled_stages(run: RunData) -> list[StageStats]:
    """The stages the stall check judges (the CPU checks leave their blocked time to it)."""
    return _stages_in(run, "stalled")


def _label(st: StageStats) -> str:
    return "untraced time" if st.untraced else f"stage {st.name}"


def _common(run: RunData, st: StageStats) -> dict:
    ev = {
        "stage": st.name,
        "stage_s": round(st.seconds, 3),
        "own_s": round(st.self_s, 3),
        "busy_cores": round(st.busy_cores, 3),
        "waiting_cores": None if st.wait_cores is None else round(st.wait_cores, 3),
        "cores": run.ncores,
        "samples": len(st.samples),
    }
    if st.system_cpu_mean is not None:
        ev["system_cpu_percent"] = round(st.system_cpu_mean, 1)
    if st.disk_read_mean_bps is not None:
        ev["disk_read_mb_s"] = round(st.disk_read_mean_bps / 1e6, 2)
    gpu = _gpu(st)
    if gpu is not None:
        ev.update(gpu_util_mean=round(gpu[0], 1), gpu_util_max=round(gpu[1], 1))
        if st.gpu_dec_util_mean is not None:
            ev["nvdec_util_mean"] = round(st.gpu_dec_util_mean, 1)
    return ev


@check("stall", step=1,
       doc="A stage where neither the CPU nor the GPU is busy: sleeping, waiting on a lock, a network or a "
           "synchronous call")
def stall(run: RunData) -> Iterator[Found]:
    for st in _stages_in(run, "stalled"):
        busy, judged = st.busy_cores, _judged_gpu(run, st)
        gpu_mean = judged[0] if judged is not None else None
        used = max(min(busy, 1.0), (gpu_mean or 0.0) / 100)
        idle = st.self_s * (1 - used)
        if gpu_mean is None and st.self_blocked_s is not None:
            idle = min(st.self_s, st.self_blocked_s)  # measured: the thread's time off every core
        yield Found(
            severity="critical" if idle > 0.2 * run.total_s else "warning",
            title=f"{_label(st)} stalled: {st.self_s:.2f} s with {busy:.2f} cores busy"
                  + (f" and GPU at {gpu_mean:.0f}%" if gpu_mean is not None else ""),
            evidence=_common(run, st) | {"idle_s": round(idle, 3)},
            fix=f"Find what {st.name} waits on (sleep, lock, network, subprocess, a blocking .item()/.cpu() "
                "sync) and remove the wait or overlap it with work; `py-spy dump --pid <pid>` during the stage "
                "shows where it blocks.",
            est_saving_s=idle,
        )


@check("io_wait", step=1, doc="A stage with an idle CPU while the process reads from disk: waiting on storage")
def io_wait(run: RunData) -> Iterator[Found]:
    for st in _stages_in(run, "disk"):
        idle = st.self_s * (1 - min(st.busy_cores, 1.0))
        yield Found(
            severity="warning",
            title=f"{_label(st)} waits on disk: {st.disk_read_mean_bps / 1e6:.0f} MB/s read with "
                  f"{st.busy_cores:.2f} cores busy",
            evidence=_common(run, st) | {"idle_s": round(idle, 3), "saving_basis": "upper bound: all idle time"},
            fix="Put weights and media on local SSD (or keep them in the page cache by loading once), and "
                "overlap reading with compute (prefetch the next video while this one runs).",
            est_saving_s=idle,
        )


@check("decode_bound", step=1,
       doc="GPU under 30% while the CPU is saturated: the GPU waits for the CPU (usually decoding)")
def decode_bound(run: RunData) -> Iterator[Found]:
    for st in _stages_in(run, "gpu_waits_on_cpu"):
        busy, mean = st.busy_cores, _gpu(st)[0]
        spare = max(0.0, 1 - busy / run.ncores)
        yield Found(
            severity="warning",
            title=f"{_label(st)}: GPU at {mean:.0f}% while the CPU runs {busy:.1f} cores",
            evidence=_common(run, st) | {"spare_core_share": round(spare, 3)},
            fix="Make decoding cheaper and parallel: `foleyscope prep VIDEO -o small.mp4` (720p, 25 fps, "
                "H.264), decode with threads (PyAV thread_type='AUTO') or NVDEC.",
            est_saving_s=st.self_s * spare,
        )


@check("gpu_idle_in_model_stage", step=1, doc="GPU at 0% through a model stage: its data never reached the GPU")
def gpu_idle_in_model_stage(run: RunData) -> Iterator[Found]:
    for st in _stages_in(run, "gpu_idle"):
        cpu = hardware.peak_flops("cpu", run.stage_dtype(st.name) or "fp32") if run.probe else 0
        gpu_peak = hardware.peak_flops("cuda", "bf16") if run.probe else 0
        ratio = cpu / gpu_peak if gpu_peak else 0.1
        yield Found(
            severity="critical",
            title=f"GPU at 0% through {st.name} ({st.self_s:.2f} s): its work ran elsewhere",
            evidence=_common(run, st) | {"cpu_over_gpu_peak": round(ratio, 4)},
            fix=f"Check the .to(device) path of {st.name}'s model and inputs: every parameter and input tensor "
                "should be on cuda before the forward call.",
            est_saving_s=st.self_s * (1 - ratio),
        )


@check("cpu_contention", step=1,
       doc="The process's threads waited for a core: other processes (or too many threads) held the CPU")
def cpu_contention(run: RunData) -> Found | None:
    """One run-level finding: time lost to threads that were ready but had no core."""
    est, rows = 0.0, []
    for st in run.stages.values():
        busy, wait = st.busy_cores, st.wait_cores
        if wait is None or st.self_s <= 0:
            continue
        # Thread-seconds of waiting over the threads that waited side by side: the wall time lost.
        lost = min(st.self_s, st.self_s * wait / max(1.0, min(busy + wait, float(run.ncores))))
        if lost <= 0:
            continue
        est += lost
        rows.append((lost, st.name, round(busy, 2), round(wait, 2)))
    if est < max(0.25, 0.1 * run.total_s):
        return None
    rows.sort(reverse=True)
    wait_total = sum((st.self_cpu_wait_s or 0.0) for st in run.stages.values())
    ev = {"cores": run.ncores, "torch_threads": run.env.get("num_threads"), "cpu_s": round(run.cpu_s, 3),
          "wait_thread_s": round(wait_total, 3),
          "worst_stages": [f"{name}: {busy} busy + {wait} waiting cores" for _, name, busy, wait in rows[:3]],
          "saving_basis": "per stage: thread-seconds waited / threads that ran side by side (at most the core "
                          "count); the numbers of a shared machine are uncertain"}
    fix = ("Give the job the cores: stop other CPU-heavy processes (see `top`) or run it where nothing else "
           "does.")
    slowed = _slowed_matmuls(run)
    if slowed is not None:
        during, now, stages_s = slowed
        ev.update(linear_during_run_s=round(during, 3), linear_retimed_s=round(now, 3))
        if now < during:  # the load had eased by the time the probe ran: the model stages' slow-down, measured
            est = max(est, stages_s * (1 - now / during))
            ev["saving_basis"] = ("the model stages' time x (1 - the run's Linear calls re-timed after the run / "
                                  "as they ran), or the threads' wait, whichever is larger")
    fewer = _fewer_threads(run)
    if fewer is not None:  # measured now, under whatever load is still there
        ev.update(fewer.evidence("one_thread_ab"))
        fix += (f" Under the load measured after the run, one torch thread ran the run's matmuls "
                f"{fewer.a_s / fewer.b_s:.1f}x faster than {run.env.get('num_threads')}: "
                "torch.set_num_threads(1) while the machine is shared.")
    return Found(
        severity="warning",
        title=f"threads waited {wait_total:.2f} thread-s for a core: the CPU was shared",
        evidence=ev, fix=fix, est_saving_s=est,
    )


def _slowed_matmuls(run: RunData) -> tuple[float, float, float] | None:
    """(seconds the CPU model stages' Linear calls took during the run, the same calls re-timed now, those
    stages' seconds): under contention the first is inflated; a quiet re-time shows by how much."""
    names = run.outermost([n for n in run.model_stages() if run.stage_device(n) == "cpu"])
    during = run.linear_seconds(names)
    shapes = run.linears(names, "cpu")
    if not names or during <= 0 or not shapes or not run.probe:
        return None
    from foleyscope.doctor import ab

    return during, ab.measure(shapes, ab.Setting()), sum(run.stages[n].self_s for n in names)


def _fewer_threads(run: RunData):  # noqa: ANN202 - ab.AB | None, imported late
    """The run's Linear calls with its torch threads against one thread, if one measures faster."""
    threads = run.env.get("num_threads") or 1
    names = [n for n in run.model_stages() if run.stage_device(n) == "cpu"]
    if threads <= 1 or not names or not run.probe:
        return None
    from foleyscope.doctor import ab

    shapes = run.linears(run.outermost(names), "cpu")
    result = ab.compare(shapes, ab.Setting(threads=threads), ab.Setting(threads=1)) if shapes else None
    return result if result is not None and result.saving_s > max(0.03, result.spread_s) else None
