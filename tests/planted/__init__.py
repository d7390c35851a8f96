"""The planted suite: each case is a workload with one planted cause of slowness and its clean twin (the
same workload with the fix applied). The doctor diagnoses both; the measured saving is the planted run's
time minus the clean twin's, so a case checks that the doctor names the cause first AND that its
estimate holds when the fix is applied.

Cases live in the modules of this package, one cause each, registered with `@case(...)`; every module
is imported by `all_cases()`. `benchmarks/doctor_planted.py` prints the suite's table; the tests in
tests/test_doctor_planted.py assert on it.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from foleyscope.doctor.api import DiagnoseContext, diagnose
from foleyscope.doctor.finding import Finding
from foleyscope.doctor.report import Report

ENVIRONMENTAL = frozenset({"cpu_contention"})  # other load on the test machine, not what a case plants
TOLERANCE = 0.30  # an estimate within 30% of the measured saving counts as calibrated


@dataclass(frozen=True)
class Case:
    """A cause planted in `planted()`; `clean()` is the same work with the fix. `context()` builds what the
    checks read beyond the trace (an input probe, service measurements), per run. `skip()` returns a
    reason when the machine cannot show the cause (bf16 slower than fp32 on this CPU, say)."""

    name: str
    check: str  # the check id that must come first
    planted: Callable[[], Any]
    clean: Callable[[], Any]
    context: Callable[[bool], DiagnoseContext | None] = lambda planted: None
    skip: Callable[[], str | None] = lambda: None
    warmup: Callable[[], Any] | None = None  # run once, untraced, before either twin (imports, caches)
    seconds: Callable[[Report], float] = lambda report: report.total_s  # the time the fix acts on
    needs_free_cores: bool = False  # its A/B (threads, CPU mask, dtype) or its reading of idle cores (a stall)
    # needs free cores: not judged when other processes held them
    doc: str = ""


_CASES: dict[str, Case] = {}


def case(name: str, check: str, *, doc: str = "", **kw: Any) -> Callable[[Callable[[], Any]], Case]:
    """Register a case from a function returning (planted, clean) callables, or pass them in kw."""

    def register(make: Callable[[], Any]) -> Case:
        planted, clean = make()
        if name in _CASES:
            raise ValueError(f"planted case {name!r} declared twice")
        _CASES[name] = made = Case(name, check, planted, clean, doc=doc or (make.__doc__ or "").strip(), **kw)
        return made

    return register


def all_cases() -> dict[str, Case]:
    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")
    return dict(sorted(_CASES.items()))


@dataclass
class Outcome:
    """What the doctor said on both twins of one case."""

    case: Case
    planted: Report
    clean: Report

    @property
    def measured_saving_s(self) -> float:
        return self.case.seconds(self.planted) - self.case.seconds(self.clean)

    @property
    def top(self) -> Finding | None:
        """The first finding that is not about other load on the machine (unless that is the cause planted)."""
        return next((f for f in self.planted.findings if f.id not in ENVIRONMENTAL or f.id == self.case.check),
                    None)

    @property
    def estimate_s(self) -> float:
        top = self.top
        return top.est_saving_s if top is not None and top.id == self.case.check else 0.0

    @property
    def ranked_first(self) -> bool:
        return self.top is not None and self.top.id == self.case.check and self.estimate_s > 0

    @property
    def error(self) -> float:
        """Relative error of the estimate against the measured saving."""
        measured = self.measured_saving_s
        return abs(self.estimate_s - measured) / measured if measured > 0 else float("inf")

    @property
    def calibrated(self) -> bool:
        return self.ranked_first and self.error <= TOLERANCE

    @property
    def contended(self) -> bool:
        """Did other processes hold the cores during a twin (the doctor's own `uncertain` note, or their CPU
        time meanwhile: see _diagnosed)? Then its times say as much about the machine's load as about the
        cause, and are not compared. The contention case's planted twin is contended by design: only its
        clean twin counts."""
        reports = [self.clean] if self.case.check in ENVIRONMENTAL else [self.clean, self.planted]
        return any(r.meta.get("uncertain") or _shared(r) for r in reports)

    @property
    def clean_warnings(self) -> list[str]:
        """What the clean twin raised above info (environmental findings aside): must be nothing."""
        return [f.id for f in self.clean.findings
                if f.severity != "info" and f.id not in ENVIRONMENTAL]


SHARED_SHARE = 0.1  # other processes' CPU over a twin's wall time above which its cores were shared


def _shared(report: Report) -> bool:
    """Other processes used the cores during the twin (and its probes): see _diagnosed."""
    others, wall = report.meta.get("others_cpu_s"), report.meta.get("others_wall_s")
    return others is not None and wall is not None and others > max(0.1, SHARED_SHARE * wall)


def run_case(c: Case, repeats: int = 1, *, warm: bool = True) -> Outcome:
    """Both twins under the doctor, alternately, clean first (so the planted run never gets the warmer
    caches); the outcome keeps each twin's fastest run, the one least disturbed by other load. Callers
    check `c.skip()` first."""
    if warm and c.warmup is not None:
        with restored():
            c.warmup()
    cleans, planteds = [], []
    for _ in range(repeats):
        with restored():
            cleans.append(_diagnosed(c.clean, c.context(False)))
        with restored():
            planteds.append(_diagnosed(c.planted, c.context(True)))
    return Outcome(c, min(planteds, key=c.seconds), min(cleans, key=c.seconds))


def _diagnosed(fn: Callable[[], Any], context: Any) -> Report:
    """diagnose(fn), noting in the report's meta the CPU seconds other processes used meanwhile (the run
    and the doctor's probes). The doctor's own note sees only its threads' waits; a process holding one
    of two cores while the run's single thread has the other leaves no wait, yet an A/B of two threads
    then finds no gain."""
    cores = os.sched_getaffinity(0)  # read before the run: a planted case may narrow it
    before = _others_cpu_s(cores)
    report = diagnose(fn, context=context)
    after = _others_cpu_s(cores)
    if before is not None and after is not None:
        report.meta["others_cpu_s"] = max(0.0, after[0] - before[0] - (after[1] - before[1]))
        report.meta["others_wall_s"] = after[2] - before[2]
    return report


def _others_cpu_s(cores: set[int]) -> tuple[float, float, float] | None:
    """(busy CPU seconds of `cores`, from /proc/stat, steal included; this process's and its reaped
    children's CPU seconds; a wall clock)."""
    import resource
    import time

    try:
        with open("/proc/stat") as f:
            rows = [line.split() for line in f if line.startswith("cpu") and not line.startswith("cpu ")]
        busy = sum(int(r[1]) + int(r[2]) + int(r[3]) + int(r[6]) + int(r[7]) + int(r[8])
                   for r in rows if int(r[0][3:]) in cores)
    except (OSError, ValueError, IndexError):
        return None
    own = sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for f in ("ru_utime", "ru_stime"))
    return busy / os.sysconf("SC_CLK_TCK"), own, time.perf_counter()


def measure(c: Case) -> Outcome:
    """run_case, and twice more when the first pair misses: a machine shared with other load can slow
    either twin by more than the tolerance. Each twin's fastest run of the three is then compared (load
    only ever adds time)."""
    first = run_case(c)
    if first.calibrated:
        return first
    again = run_case(c, repeats=2, warm=False)
    return Outcome(c, min(first.planted, again.planted, key=c.seconds),
                   min(first.clean, again.clean, key=c.seconds))


@contextmanager
def restored() -> Iterator[None]:
    """Put back what a case may plant in the process (torch threads, the CPU mask of every thread)."""
    import torch

    threads = torch.get_num_threads()
    mask = os.sched_getaffinity(0)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        for tid in (int(t) for t in os.listdir("/proc/self/task")):
            try:
                os.sched_setaffinity(tid, mask)
            except OSError:
                continue
