"""Stage tracing for any pipeline: `with stage("decode"): ...`, `@stage("encode")`, `with step(i, n): ...`.

Library code calls the module-level `stage()`, `step()` and `emit()` unconditionally. With no active
Tracer and no listener they cost two context-variable lookups; a Tracer synchronises the device at
every boundary (CPU-side clocks of asynchronous CUDA work are wrong otherwise) and records wall time,
process CPU time, peak memory and host-to-device copies per stage; listeners (events.listening) get a
Progress event at every stage start and end and every step. A Tracer is found through a context
variable; one started with capture_threads=True is also found by threads that never saw that
variable (worker pools). That is opt-in: a server running several jobs must not record one job's
stages into another's diagnosis.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from foleyscope.trace import hooks as tracehooks
from foleyscope.trace.events import Fact, Progress, has_listeners, publish
from foleyscope.trace.procstat import PeakRss, cpu_seconds, cpu_wait_seconds, steal_seconds, thread_schedstat


@dataclass
class StageRecord:
    name: str
    start_s: float  # seconds since the tracer started
    end_s: float | None = None  # None while the stage is open
    peak_mem_bytes: int | None = None  # CUDA max allocated when CUDA is in use, else process peak RSS
    h2d_copies: int | None = None  # None where copies cannot be counted (CPU-only runs)
    h2d_bytes: int | None = None
    parent: str | None = None
    cpu_s: float = 0.0  # process CPU time (all threads, plus reaped children) spent inside the stage
    peak_rss_bytes: int | None = None
    mem_kind: str = "rss"  # "cuda_allocated" or "rss": what peak_mem_bytes measured
    depth: int = 0
    thread: int = 0  # 0 = the thread that started the tracer, 1.. = others in order of first use
    pageable_h2d: int | None = None  # copies whose CPU source was not pinned
    blocking_h2d: int | None = None  # copies made with non_blocking=False
    cpu_wait_s: float | None = None  # thread-seconds runnable but waiting for a core (Linux schedstat)
    index: int = 0  # position in Tracer.stages
    parent_index: int | None = None
    blocked_s: float | None = None  # wall time the stage's thread was off-CPU and not runnable (a wait)
    thread_run_s: float | None = None  # time the stage's own thread was on a core (the rest of cpu_s: others)

    @property
    def seconds(self) -> float:
        return 0.0 if self.end_s is None else self.end_s - self.start_s


@dataclass
class StepRecord:
    index: int
    stage: str | None
    start_s: float
    end_s: float
    total: int | None = None
    blocked_s: float | None = None  # wall time the step's thread was blocked (sleep, lock, I/O)
    cpu_s: float | None = None  # process CPU time in the step (all threads)
    thread_run_s: float | None = None  # the step's own thread's time on a core

    @property
    def seconds(self) -> float:
        return self.end_s - self.start_s


@dataclass
class Event:
    """A recorded Fact: when, in which stage, and the typed event itself."""

    kind: str
    t_s: float
    stage: str | None
    fields: dict[str, Any] = field(default_factory=dict)
    fact: Fact | None = None


_UNSET: Any = object()
_ACTIVE: contextvars.ContextVar[Tracer | None] = contextvars.ContextVar("foleyscope_tracer", default=_UNSET)
_PROCESS: list[Tracer] = []  # tracers started with capture_threads=True, innermost last
_STAGE: contextvars.ContextVar[str | None] = contextvars.ContextVar("foleyscope_stage", default=None)


def active() -> Tracer | None:
    """The tracer recording in this context, if any."""
    tr = _ACTIVE.get()
    if tr is _UNSET:
        return _PROCESS[-1] if _PROCESS else None
    return tr


class Tracer:
    """Records stages, steps and notes while started. Usable as a context manager."""

    def __init__(
        self,
        *,
        sync: bool = True,
        count_h2d: bool | None = None,
        h2d_target: str = "cuda",
        observe_modules: bool = True,
        watch_loads: bool = True,
        capture_threads: bool = False,
    ) -> None:
        self.sync = sync
        self.count_h2d = count_h2d  # None: only when CUDA is available (on CPU there is nothing to copy)
        self.h2d_target = h2d_target
        self.observe_modules = observe_modules
        self.watch_loads = watch_loads
        self.capture_threads = capture_threads
        self.stages: list[StageRecord] = []
        self.steps: list[StepRecord] = []
        self.events: list[Event] = []
        self.modules = tracehooks.ModuleLog()
        self.modules.clock = self.now
        self.t0 = 0.0
        self.t_stop: float | None = None
        self.cpu_s_total = 0.0
        self._cpu0 = 0.0
        self._wait0: float | None = None
        self.cpu_wait_s_total: float | None = None
        self._steal0: float | None = None
        self.steal_s_total: float | None = None  # CPU seconds the hypervisor gave to other machines
        self._lock = threading.RLock()
        self._open: list[StageRecord] = []
        self._stacks: dict[int, list[StageRecord]] = {}
        self._threads: dict[int, int] = {}
        self._token: contextvars.Token | None = None
        self._cuda = False
        self._rss: PeakRss | None = None
        self._counter: tracehooks.CopyCounter | None = None
        self._undo: list[Callable[[], None]] = []

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> Tracer:
        try:
            import torch
        except ImportError:  # tracing still times stages without torch
            torch = None
        self._cuda = bool(torch is not None and torch.cuda.is_available())
        self._rss = PeakRss()
        self._threads = {threading.get_ident(): 0}
        if self.count_h2d or (self.count_h2d is None and self._cuda):
            self._counter = tracehooks.CopyCounter(self.h2d_target)
            self._undo.append(self._counter.install())
        if self.observe_modules and torch is not None:
            self._undo.append(tracehooks.watch_modules(self.modules, self._module_stage))
        if self.watch_loads:
            self._undo.append(tracehooks.watch_loads())
        self._token = _ACTIVE.set(self)
        if self.capture_threads:
            _PROCESS.append(self)
        self._sync_device()
        self.t0 = time.perf_counter()
        self._cpu0 = cpu_seconds()
        self._wait0 = cpu_wait_seconds()
        self._steal0 = steal_seconds()
        return self

    def stop(self) -> Tracer:
        with self._lock:
            for rec in list(reversed(self._open)):  # stages still open (stopped from inside one)
                self._exit(rec)
            self._stacks.clear()
        self._sync_device()
        self.t_stop = self.now()
        self.cpu_s_total = cpu_seconds() - self._cpu0
        wait = cpu_wait_seconds()
        self.cpu_wait_s_total = None if wait is None or self._wait0 is None else max(0.0, wait - self._wait0)
        steal = steal_seconds()
        self.steal_s_total = None if steal is None or self._steal0 is None else max(0.0, steal - self._steal0)
        if self in _PROCESS:
            _PROCESS.remove(self)
        if self._token is not None:
            try:
                _ACTIVE.reset(self._token)
            except ValueError:  # stopped from another context
                _ACTIVE.set(_UNSET)
            self._token = None
        while self._undo:
            self._undo.pop()()
        return self

    def __enter__(self) -> Tracer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def total_s(self) -> float:
        return self.t_stop if self.t_stop is not None else self.now()

    def now(self) -> float:
        return time.perf_counter() - self.t0

    # -- what the sampler and the hooks read -------------------------------------------------------
    @property
    def current_stage(self) -> str | None:
        """Innermost open stage of the tracer's own thread, else the most recently opened one."""
        with self._lock:
            main = self._stacks.get(next(iter(self._threads), -1))
            if main:
                return main[-1].name
            return self._open[-1].name if self._open else None

    def _module_stage(self) -> str | None:
        stack = self._stacks.get(threading.get_ident())
        if stack:
            return stack[-1].name
        return self.current_stage

    def record(self, fact: Fact) -> None:
        self.events.append(Event(fact.kind, self.now(), self._module_stage(), fact.fields(), fact))

    def facts(self, kind: type[Fact]) -> list[Any]:
        """The recorded events of one type, in order."""
        return [e.fact for e in self.events if isinstance(e.fact, kind)]

    # -- stage boundaries --------------------------------------------------------------------------
    def _sync_device(self) -> None:
        if self.sync and self._cuda:
            torch = sys.modules["torch"]
            if torch.cuda.is_initialized():
                torch.cuda.synchronize()

    def _mem_peak(self) -> tuple[int | None, int]:
        """(CUDA max allocated or None, peak RSS) since the last reset."""
        cuda_peak = None
        if self._cuda:
            torch = sys.modules["torch"]
            if torch.cuda.is_initialized():
                cuda_peak = int(torch.cuda.max_memory_allocated())
        return cuda_peak, self._rss.peak() if self._rss else 0

    def _mem_reset(self) -> None:
        if self._cuda:
            torch = sys.modules["torch"]
            if torch.cuda.is_initialized():
                torch.cuda.reset_peak_memory_stats()
        if self._rss:
            self._rss.reset()

    def _fold_peaks(self, cuda_peak: int | None, rss_peak: int) -> None:
        for rec in self._open:
            if cuda_peak is not None:
                rec.peak_mem_bytes = max(rec.peak_mem_bytes or 0, cuda_peak)
                rec.mem_kind = "cuda_allocated"
            rec.peak_rss_bytes = max(rec.peak_rss_bytes or 0, rss_peak)

    def _enter(self, name: str) -> StageRecord:
        self._sync_device()
        tid = threading.get_ident()
        with self._lock:
            self._fold_peaks(*self._mem_peak())
            self._mem_reset()
            stack = self._stacks.setdefault(tid, [])
            parent = stack[-1] if stack else (self._open[-1] if self._open else None)
            rec = StageRecord(
                name=str(name),
                start_s=0.0,
                parent=parent.name if parent else None,
                depth=parent.depth + 1 if parent else 0,
                thread=self._threads.setdefault(tid, len(self._threads)),
                index=len(self.stages),
                parent_index=parent.index if parent else None,
            )
            rec.peak_rss_bytes = self._rss.peak() if self._rss else None
            rec.cpu_s = -cpu_seconds()
            wait = cpu_wait_seconds()
            rec.cpu_wait_s = None if wait is None else -wait
            if self._counter is not None:
                rec.h2d_copies, rec.h2d_bytes, rec.pageable_h2d, rec.blocking_h2d = self._counter.snapshot()
            stack.append(rec)
            self._open.append(rec)
            self.stages.append(rec)
        rec.start_s = self.now()
        sched = thread_schedstat()
        if sched is not None:
            rec.blocked_s, rec.thread_run_s = sum(sched) - rec.start_s, -sched[0]
        return rec

    def _exit(self, rec: StageRecord) -> None:
        if rec.end_s is not None:  # already closed by stop()
            return
        self._sync_device()
        end = self.now()
        same_thread = self._threads.get(threading.get_ident()) == rec.thread
        sched = thread_schedstat() if same_thread else None  # another thread's clock says nothing
        with self._lock:
            rec.end_s = end
            if sched is None or rec.blocked_s is None or rec.thread_run_s is None:
                rec.blocked_s = rec.thread_run_s = None
            else:
                rec.blocked_s = max(0.0, rec.blocked_s + end - sum(sched))
                rec.thread_run_s += sched[0]
            rec.cpu_s += cpu_seconds()
            wait = cpu_wait_seconds()
            if wait is None or rec.cpu_wait_s is None:
                rec.cpu_wait_s = None
            else:
                rec.cpu_wait_s = max(0.0, rec.cpu_wait_s + wait)
            self._fold_peaks(*self._mem_peak())
            if rec.mem_kind == "rss":
                rec.peak_mem_bytes = rec.peak_rss_bytes
            if self._counter is not None:
                now = self._counter.snapshot()
                rec.h2d_copies, rec.h2d_bytes, rec.pageable_h2d, rec.blocking_h2d = (
                    b - a for a, b in zip(
                        (rec.h2d_copies, rec.h2d_bytes, rec.pageable_h2d, rec.blocking_h2d), now, strict=True
                    )
                )
            self._open.remove(rec)
            stack = self._stacks.get(threading.get_ident(), [])
            if rec in stack:
                stack.remove(rec)


class _StageCM:
    """`stage(name)`: a context manager, and a decorator that opens the stage on every call."""

    __slots__ = ("name", "total", "_recs")

    def __init__(self, name: str, total: float = 0) -> None:
        self.name, self.total = str(name), total
        self._recs: list[tuple[Tracer | None, StageRecord | None, contextvars.Token, float]] = []

    def __enter__(self) -> _StageCM:
        tr = active()
        rec = tr._enter(self.name) if tr is not None else None
        self._recs.append((tr, rec, _STAGE.set(self.name), time.perf_counter()))
        if has_listeners():
            publish(Progress("start", self.name, 0, self.total))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        tr, rec, token, start = self._recs.pop()
        _STAGE.reset(token)
        if tr is not None and rec is not None:
            tr._exit(rec)
        if exc_type is None and has_listeners():  # a listener may raise here (a cancelled job)
            publish(Progress("end", self.name, self.total, self.total, time.perf_counter() - start))

    def __call__(self, fn: Callable) -> Callable:
        name = self.name
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                with _StageCM(name):
                    return await fn(*args, **kwargs)

            return awrapper

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with _StageCM(name):
                return fn(*args, **kwargs)

        return wrapper


def stage(name: str, total: float = 0) -> _StageCM:
    """Mark a pipeline stage: `with stage(Stage.DECODE): ...` or `@stage("my_stage")`; `total`: the
    steps it will report, for listeners' progress bars."""
    return _StageCM(name, total)


class _StepCM:
    """`step(i, n)`: times one denoising step for the active tracer and tells listeners it is done."""

    __slots__ = ("index", "total", "_tr", "_start", "_sched", "_cpu")

    def __init__(self, index: int, total: int | None) -> None:
        self.index, self.total = index, total
        self._tr: Tracer | None = None
        self._start = 0.0
        self._sched: tuple[float, float] | None = None
        self._cpu = 0.0

    def __enter__(self) -> _StepCM:
        self._tr = tr = active()
        if tr is not None:
            tr._sync_device()
        self._start = time.perf_counter()
        if tr is not None:
            self._sched, self._cpu = thread_schedstat(), cpu_seconds()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        tr = self._tr
        if tr is not None:
            tr._sync_device()
            start = self._start - tr.t0
            end, sched, cpu = time.perf_counter(), thread_schedstat(), cpu_seconds()
            rec = StepRecord(self.index, tr._module_stage(), start, end - tr.t0, self.total, cpu_s=cpu - self._cpu)
            if sched is not None and self._sched is not None:
                rec.thread_run_s = sched[0] - self._sched[0]
                rec.blocked_s = max(0.0, (end - self._start) - (sum(sched) - sum(self._sched)))
            with tr._lock:
                tr.steps.append(rec)
        if exc_type is None and has_listeners():  # a listener may raise here (a cancelled job)
            seconds = time.perf_counter() - self._start
            publish(Progress("step", _STAGE.get() or "", self.index + 1, self.total or 0, seconds))


def step(index: int, total: int | None = None) -> _StepCM:
    """Time one denoising step (synchronised when a tracer is active)."""
    return _StepCM(index, total)


def emit(fact: Fact) -> None:
    """Record a typed event on the active tracer, if any: emit(ModelLoad("denoiser", 2.1))."""
    tr = active()
    if tr is not None:
        tr.record(fact)


def current_stage() -> str | None:
    """The innermost stage open in this context (for events raised inside it)."""
    return _STAGE.get()


@contextmanager
def suspended() -> Iterator[None]:
    """Run a block untraced even while a tracer is active (e.g. the doctor's own probes)."""
    token = _ACTIVE.set(None)
    try:
        yield
    finally:
        _ACTIVE.reset(token)

