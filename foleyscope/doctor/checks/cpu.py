"""Step 1 on the CPU side: time a stage spends blocked (wall minus the time its thread was on or waiting
for a core, from /proc/thread-self/schedstat at stage and step boundaries), and torch threads or the
process's CPU affinity narrower than the cores it could have. The thread and affinity estimates come
from an A/B of the run's own Linear calls in both settings (doctor/ab.py), so they say what was measured.
"""

from __future__ import annotations

from typing import Any

from foleyscope.doctor import ab
from foleyscope.doctor.checks.utilisation import stalled_stages
from foleyscope.doctor.registry import Found, check
from foleyscope.doctor.run import RunData

MIN_BLOCKED_S = 0.05  # per stage: less is scheduler noise
MIN_RUN_BLOCKED = 0.05  # share of the run below which blocked time is not worth a finding
MIN_AB_SAVING_S = 0.03


def _blocked(run: RunData) -> list[tuple[str, float, float | None]]:
    """(stage, own blocked seconds, blocked seconds inside its steps) for stages that compute between
    their waits (whole-stage stalls are the stall check's) and do not wait on a GPU."""
    stalled = {st.name for st in stalled_stages(run)}
    out = []
    for st in run.traced():
        if st.self_blocked_s is None or st.self_blocked_s < MIN_BLOCKED_S or st.name in stalled:
            continue
        if run.stage_device(st.name) == "cuda":  # a thread blocked in a CUDA sync waits for the GPU: normal
            continue
        out.append((st.name, st.self_blocked_s, st.step_blocked_s))
    return out


@check("blocked_in_stage", step=1,
       doc="A stage's thread was blocked (sleep, lock, pipe, socket, a synchronous callback) between its "
           "computations: wall time no CPU counter shows")
def blocked_in_stage(run: RunData) -> Found | None:
    rows = _blocked(run)
    est = sum(b for _, b, _ in rows)
    if est < max(MIN_BLOCKED_S * 2, MIN_RUN_BLOCKED * run.total_s):
        return None
    rows.sort(key=lambda r: -r[1])
    per_stage = {name: round(b, 3) for name, b, _ in rows}
    ev: dict[str, Any] = {"blocked_s": round(est, 3), "stages": list(per_stage), "blocked_by_stage_s": per_stage,
                          "run_s": round(run.total_s, 3),
                          "how": "wall time minus the time the stage's thread ran or waited for a core "
                                 "(/proc/thread-self/schedstat), per stage, nested stages counted once"}
    in_steps = {n: round(s, 3) for n, _, s in rows if s}
    if in_steps:
        ev["blocked_in_steps_s"] = in_steps
    return Found(
        severity="critical" if est > 0.2 * run.total_s else "warning",
        title=f"{est:.2f} s of the run blocked inside {', '.join(per_stage)} while it otherwise computes",
        evidence=ev,
        fix="Find the wait (a sleep, a lock, a synchronous progress callback or HTTP call, a blocking read) "
            "inside the stage and move it off the thread (a queue, a background thread) or remove it; "
            "`py-spy dump --pid <pid>` while it runs shows where it blocks.",
        est_saving_s=est,
    )


def _cpu_model_stages(run: RunData) -> list[str]:
    return run.outermost([n for n in run.model_stages() if run.stage_device(n) == "cpu"])


def _ab_finding(run: RunData, a: ab.Setting, b: ab.Setting) -> tuple[ab.AB, list[str]] | None:
    names = _cpu_model_stages(run)
    shapes = run.linears(names, "cpu")
    if not shapes or not run.probe:
        return None
    result = ab.compare(shapes, a, b)
    if result is None or result.saving_s < max(MIN_AB_SAVING_S, result.spread_s):
        return None
    return result, names


@check("torch_threads_low", step=1,
       doc="torch runs fewer intra-op threads than the process has cores (measured: the run's own matmuls "
           "with each thread count)")
def torch_threads_low(run: RunData) -> Found | None:
    threads, cores = run.env.get("num_threads"), run.env.get("usable_cores")
    if not threads or not cores or threads >= cores:
        return None
    found = _ab_finding(run, ab.Setting(threads=threads), ab.Setting(threads=cores))
    if found is None:
        return None
    result, names = found
    return Found(
        severity="warning",
        title=f"torch ran {threads} thread(s) on {cores} usable cores; the run's matmuls measure "
              f"{result.a_s / result.b_s:.1f}x faster with {cores}",
        evidence={"torch_threads": threads, "usable_cores": cores, "stages": names,
                  **result.evidence("matmul_ab"),
                  "how": "the run's Linear calls timed with each thread count, alternately"},
        fix=f"Remove the torch.set_num_threads({threads}) (or OMP_NUM_THREADS={threads}) so torch uses the "
            f"{cores} cores: torch.set_num_threads({cores}).",
        est_saving_s=result.saving_s,
    )


@check("cpu_affinity_narrow", step=1,
       doc="the process may run on fewer cores than the machine gives it (taskset, a launcher's CPU mask)")
def cpu_affinity_narrow(run: RunData) -> Found | None:
    usable, machine = run.env.get("usable_cores"), run.env.get("machine_cores")
    if not usable or not machine or usable >= machine:
        return None
    import os

    everything = frozenset(range(os.cpu_count() or machine))
    found = _ab_finding(run, ab.Setting(threads=usable), ab.Setting(threads=machine, cores=everything))
    if found is None:
        return None
    result, names = found
    return Found(
        severity="warning",
        title=f"the process may use {usable} of {machine} cores; the run's matmuls measure "
              f"{result.a_s / result.b_s:.1f}x faster on all {machine}",
        evidence={"usable_cores": usable, "machine_cores": machine, "stages": names,
                  **result.evidence("matmul_ab"),
                  "how": "the run's Linear calls timed on the current CPU mask and on every core, alternately"},
        fix=f"Run without the CPU mask (drop `taskset -c ...`, or widen it: `taskset -c 0-{machine - 1}`), "
            f"then torch uses {machine} threads.",
        est_saving_s=result.saving_s,
    )
