"""What the checks read: the trace folded into per-stage statistics, plus samples, notes and environment.

Stage times are inclusive and summed over occurrences; `self_s` excludes child stages. Top-level stages
plus the untraced remainder (OTHER) add up to the measured total, which is what the reports show.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import fmean
from typing import TYPE_CHECKING, Any

from foleyscope.doctor.resources import Sample
from foleyscope.hardware import norm_device, norm_dtype
from foleyscope.stages import Stage
from foleyscope.trace import Event, ModeReport, StageFlops, StageRecord, StepRecord, Tracer
from foleyscope.trace.events import Fact
from foleyscope.trace.hooks import ModuleLog

if TYPE_CHECKING:
    from foleyscope.doctor.tables import Tables

OTHER = "other"  # time inside the traced call but outside every stage
MODEL_STAGES = (Stage.VISUAL_ENCODE, Stage.SYNC_ENCODE, Stage.TEXT_ENCODE, Stage.DENOISE, Stage.VAE_DECODE)
HOST_STAGES = (Stage.LOAD, Stage.DECODE, Stage.POSTPROCESS)


@dataclass
class StageStats:
    name: str
    first_start_s: float = 0.0
    seconds: float = 0.0  # inclusive wall time, all occurrences
    count: int = 0
    self_s: float = 0.0  # wall time not inside a child stage
    cpu_s: float = 0.0  # process CPU seconds, inclusive
    self_cpu_s: float = 0.0
    cpu_wait_s: float | None = None  # thread-seconds runnable but waiting for a core, inclusive
    self_cpu_wait_s: float | None = None
    blocked_s: float | None = None  # wall time its thread was blocked with no other thread of the process
    self_blocked_s: float | None = None  # working for it (a sleep, a lock, I/O), inclusive / own
    step_blocked_s: float | None = None  # the same inside its denoising steps
    parent: str | None = None
    depth: int = 0
    peak_mem_bytes: int | None = None
    mem_kind: str = "rss"
    peak_rss_bytes: int | None = None
    h2d_copies: int | None = None
    h2d_bytes: int | None = None
    pageable_h2d: int | None = None
    blocking_h2d: int | None = None
    steps: int = 0
    step_s: float = 0.0
    occurrences: list[float] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    untraced: bool = False

    @property
    def busy_cores(self) -> float:
        """Average cores this process kept busy during the stage's own time (1.0 = one full core)."""
        return self.self_cpu_s / self.self_s if self.self_s > 0 else 0.0

    @property
    def wait_cores(self) -> float | None:
        """Average threads that were ready to run but had no core (other processes held them)."""
        if self.self_cpu_wait_s is None or self.self_s <= 0:
            return None
        return self.self_cpu_wait_s / self.self_s

    @property
    def steps_per_s(self) -> float | None:
        return self.steps / self.step_s if self.steps and self.step_s > 0 else None

    def _mean(self, attr: str) -> float | None:
        vals = [getattr(s, attr) for s in self.samples if getattr(s, attr) is not None]
        return fmean(vals) if vals else None

    @property
    def gpu_util_mean(self) -> float | None:
        return self._mean("gpu_util")

    @property
    def gpu_dec_util_mean(self) -> float | None:
        return self._mean("gpu_dec_util")

    @property
    def proc_cpu_mean(self) -> float | None:
        return self._mean("proc_cpu_percent")

    @property
    def system_cpu_mean(self) -> float | None:
        vals = [fmean(s.cpu_percent_per_core) for s in self.samples if s.cpu_percent_per_core]
        return fmean(vals) if vals else None

    @property
    def disk_read_mean_bps(self) -> float | None:
        return self._mean("disk_read_bps")


def _add(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else a + b


def idle_wait(rec: StageRecord | StepRecord, cores: int, spin_s: float = 0.0) -> float | None:
    """Seconds a stage's (or step's) thread was blocked while no other thread of the process worked in its
    place. Other threads' CPU time beyond what `cores - 1` of them can run beside the thread while it
    computes (a thread pool's share of a parallel op) is counted as work done during its waits: a thread
    waiting on its own workers (a threaded decoder) is not idle; one sleeping, or waiting on a lock or a
    socket while nothing else runs, is. `spin_s`: the CPU a thread pool's workers burn spinning when the
    thread stops handing them work (ab.pool_spin_s), allowed once, for a step's single wait."""
    if rec.blocked_s is None or rec.thread_run_s is None or rec.cpu_s is None:
        return None
    others = max(0.0, rec.cpu_s - rec.thread_run_s)
    beside = rec.thread_run_s * max(0, cores - 1) + min(rec.blocked_s, spin_s)
    return max(0.0, rec.blocked_s - max(0.0, others - beside))


def fold_stages(spans: list[StageRecord], steps: list[StepRecord], samples: list[Sample], total_s: float,
                total_cpu_s: float, total_wait_s: float | None = None, cores: int = 1,
                spin_s: float = 0.0) -> dict[str, StageStats]:
    """Per-name statistics in order of first appearance, then OTHER (untraced time)."""
    child_s: dict[int, float] = {}
    child_cpu: dict[int, float] = {}
    child_wait: dict[int, float] = {}
    child_blocked: dict[int, float] = {}
    for r in spans:
        if r.parent_index is not None:
            child_blocked[r.parent_index] = child_blocked.get(r.parent_index, 0.0) + (idle_wait(r, cores) or 0.0)
            child_s[r.parent_index] = child_s.get(r.parent_index, 0.0) + r.seconds
            child_cpu[r.parent_index] = child_cpu.get(r.parent_index, 0.0) + r.cpu_s
            child_wait[r.parent_index] = child_wait.get(r.parent_index, 0.0) + (r.cpu_wait_s or 0.0)
    out: dict[str, StageStats] = {}
    for r in sorted(spans, key=lambda r: r.start_s):
        st = out.get(r.name)
        if st is None:
            st = out[r.name] = StageStats(r.name, r.start_s, parent=r.parent, depth=r.depth)
        st.seconds += r.seconds
        st.count += 1
        st.occurrences.append(r.seconds)
        st.self_s += max(0.0, r.seconds - child_s.get(r.index, 0.0))
        st.cpu_s += r.cpu_s
        st.self_cpu_s += max(0.0, r.cpu_s - child_cpu.get(r.index, 0.0))
        if r.cpu_wait_s is not None:
            st.cpu_wait_s = (st.cpu_wait_s or 0.0) + r.cpu_wait_s
            own_wait = max(0.0, r.cpu_wait_s - child_wait.get(r.index, 0.0))
            st.self_cpu_wait_s = (st.self_cpu_wait_s or 0.0) + own_wait
        if (idle := idle_wait(r, cores)) is not None:
            st.blocked_s = (st.blocked_s or 0.0) + idle
            own = max(0.0, idle - child_blocked.get(r.index, 0.0))
            st.self_blocked_s = (st.self_blocked_s or 0.0) + own
        if r.peak_mem_bytes is not None:
            st.peak_mem_bytes = max(st.peak_mem_bytes or 0, r.peak_mem_bytes)
            st.mem_kind = r.mem_kind
        if r.peak_rss_bytes is not None:
            st.peak_rss_bytes = max(st.peak_rss_bytes or 0, r.peak_rss_bytes)
        st.h2d_copies = _add(st.h2d_copies, r.h2d_copies)
        st.h2d_bytes = _add(st.h2d_bytes, r.h2d_bytes)
        st.pageable_h2d = _add(st.pageable_h2d, r.pageable_h2d)
        st.blocking_h2d = _add(st.blocking_h2d, r.blocking_h2d)
    sums: dict[str, list[float]] = {}
    for s in steps:
        if s.stage in out:
            out[s.stage].steps += 1
            out[s.stage].step_s += s.seconds
            if s.blocked_s is not None and s.thread_run_s is not None and s.cpu_s is not None:
                acc = sums.setdefault(s.stage, [0.0, 0.0, 0.0, 0.0])
                for i, v in enumerate((s.blocked_s, s.thread_run_s, s.cpu_s, min(s.blocked_s, spin_s))):
                    acc[i] += v
    for name, (blocked, run, cpu, spin) in sums.items():  # summed first: CPU clocks of other threads lag by
        # up to a tick at each read, which cancels over many steps but not within one
        out[name].step_blocked_s = max(0.0, blocked - max(0.0, cpu - run - run * max(0, cores - 1) - spin))
    top = [r for r in spans if r.parent_index is None]
    other = StageStats(OTHER, 0.0, untraced=True)
    other.seconds = other.self_s = max(0.0, total_s - sum(r.seconds for r in top))
    other.cpu_s = other.self_cpu_s = max(0.0, total_cpu_s - sum(r.cpu_s for r in top))
    other.count = 1
    if total_wait_s is not None:
        top_wait = sum(r.cpu_wait_s or 0.0 for r in top)
        other.cpu_wait_s = other.self_cpu_wait_s = max(0.0, total_wait_s - top_wait)
    for s in samples:
        target = out.get(s.stage) if s.stage is not None else other
        if target is not None:
            target.samples.append(s)
    for st in out.values():  # a step is one wait at most: its count of spins is known, a stage's is not
        if st.step_blocked_s is not None and st.self_blocked_s is not None:
            st.self_blocked_s = max(st.self_blocked_s, st.step_blocked_s)
    out[OTHER] = other
    return out


@dataclass
class RunData:
    """Everything one diagnosed run recorded, in the shape the checks want."""

    total_s: float
    cpu_s: float
    stages: dict[str, StageStats]
    spans: list[StageRecord]
    steps: list[StepRecord]
    events: list[Event]
    samples: list[Sample]
    modules: ModuleLog
    env: dict[str, Any]
    mem_before: dict[str, Any] = field(default_factory=dict)
    mem_after: dict[str, Any] = field(default_factory=dict)
    context: Any = None  # api.DiagnoseContext: step 4's input probe, step 5's service measurements
    probe: bool = True  # may checks run the matmul probes?
    tables: Tables | None = None  # the report's tables, computed once before any check runs (build_report)

    @classmethod
    def from_tracer(cls, tracer: Tracer, samples: list[Sample], env: dict[str, Any], **kw: Any) -> RunData:
        cores = int(env.get("usable_cores") or env.get("logical_cores") or 1)
        stages = fold_stages(tracer.stages, tracer.steps, samples, tracer.total_s, tracer.cpu_s_total,
                             tracer.cpu_wait_s_total, cores, float(env.get("pool_spin_s") or 0.0))
        return cls(tracer.total_s, tracer.cpu_s_total, stages, list(tracer.stages), list(tracer.steps),
                   list(tracer.events), list(samples), tracer.modules, env, **kw)

    # -- typed events, one reader each ------------------------------------------------------------
    def facts(self, kind: type[Fact]) -> list[Any]:
        return [e.fact for e in self.events if isinstance(e.fact, kind)]

    def mode(self) -> dict[str, Any]:
        """How the engine ran: its latest ModeReport (one comes with every call), as a dict."""
        reports = self.facts(ModeReport)
        return reports[-1].fields() if reports else {}

    def flops(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for f in self.facts(StageFlops):
            out[f.stage] = out.get(f.stage, 0.0) + float(f.flops)
        ctx_flops = getattr(self.context, "flops", None) or {}
        out.update({str(k): float(v) for k, v in ctx_flops.items()})
        return out

    # -- what ran where ----------------------------------------------------------------------------
    @property
    def ncores(self) -> int:
        return int(self.env.get("usable_cores") or self.env.get("logical_cores") or 1)

    def traced(self) -> list[StageStats]:
        return [s for s in self.stages.values() if not s.untraced]

    def _dominant(self, name: str) -> tuple[str, str] | None:
        per = self.modules.compute.get(name) or {}
        if not per:
            return None
        return max(per.items(), key=lambda kv: kv[1])[0]

    def stage_device(self, name: str) -> str:
        dom = self._dominant(name)
        if dom is not None:
            return dom[0]
        return norm_device(self.mode().get("device") or self.run_device())

    def run_device(self) -> str:
        if self.mode().get("device"):
            return norm_device(self.mode()["device"])
        devs = self.env.get("param_devices") or {}
        return max(devs, key=devs.get) if devs else "cpu"

    def stage_dtype(self, name: str) -> str | None:
        """The dtype the stage's models computed in: observed modules first, else the engine's note."""
        dom = self._dominant(name)
        if dom is not None:
            return dom[1]
        if name in MODEL_STAGES:
            return norm_dtype(self.mode().get("dtype"))
        return None

    def model_stages(self) -> list[str]:
        """Stages that ran models: modules observed in them, or the engine's model stage names."""
        return [s.name for s in self.traced()
                if self.modules.compute.get(s.name) or (s.name in MODEL_STAGES and self.mode())]

    def _within(self, name: str | None, wanted: set[str]) -> bool:
        """Is stage `name` one of `wanted` or nested inside one of them?"""
        while name is not None:
            if name in wanted:
                return True
            name = self.stages[name].parent if name in self.stages else None
        return False

    def linears(self, names: list[str], device: str | None = None) -> dict[tuple, int]:
        """Linear calls (shape -> calls) made in the named stages or in any stage nested inside them."""
        from foleyscope.doctor.ab import stage_shapes

        wanted = set(names)
        return stage_shapes(self.modules.linears, [n for n in self.modules.linears if self._within(n, wanted)],
                            device)

    def linear_seconds(self, names: list[str]) -> float:
        """Wall seconds the run spent inside CPU Linear calls in the named stages or nested ones."""
        wanted = set(names)
        return sum(secs for stage, secs in self.modules.linear_s.items() if self._within(stage, wanted))

    def outermost(self, names: list[str]) -> list[str]:
        """Drop names nested inside another listed name, so their seconds are not counted twice."""
        chosen = set(names)

        def covered(name: str) -> bool:
            parent = self.stages[name].parent
            while parent is not None:
                if parent in chosen:
                    return True
                parent = self.stages[parent].parent if parent in self.stages else None
            return False

        return [n for n in names if not covered(n)]
