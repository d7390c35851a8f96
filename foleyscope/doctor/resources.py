"""A background sampler of what the hardware is doing: per-core and process CPU, RSS, disk reads, and GPU
utilisation, memory and decoder (NVDEC) utilisation through NVML when a GPU is visible. Every sample is
tagged with the stage running at that moment, so step 1's rules can read each stage's utilisation.

Each tick reads a few /proc files (about 60 us) and, with a GPU, three NVML queries; at 10 Hz that is far
below 1% of one core (benchmarks/sampler_overhead.py measures it)."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import psutil

from foleyscope.trace import tracer as trace


@dataclass
class Sample:
    t: float  # seconds since the tracer (or the sampler) started
    stage: str | None
    cpu_percent_per_core: list[float]
    proc_cpu_percent: float  # this process, all threads; 100 = one core busy
    rss_bytes: int
    disk_read_bps: float | None  # bytes/s read from storage by this process (system-wide if unavailable)
    gpu_util: float | None = None  # percent, NVML
    gpu_mem_bytes: int | None = None
    gpu_dec_util: float | None = None  # NVDEC percent

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Nvml:
    """NVML handles for one GPU; every query returns None on failure (no GPU, no driver, no pynvml)."""

    def __init__(self, index: int | None = None) -> None:
        self.handle: Any = None
        try:
            import pynvml

            pynvml.nvmlInit()
            if pynvml.nvmlDeviceGetCount() == 0:
                return
            self.nv = pynvml
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(self._pick(index))
        except Exception:  # noqa: BLE001 - any NVML failure means "no GPU readings"
            self.handle = None

    def _pick(self, index: int | None) -> int:
        """The GPU torch uses, matched by UUID (CUDA_VISIBLE_DEVICES renumbers devices), else `index` or 0."""
        if index is not None:
            return index
        try:
            import torch

            if torch.cuda.is_available() and torch.cuda.is_initialized():
                uuid = str(torch.cuda.get_device_properties(torch.cuda.current_device()).uuid)
                for i in range(self.nv.nvmlDeviceGetCount()):
                    nv_uuid = self.nv.nvmlDeviceGetUUID(self.nv.nvmlDeviceGetHandleByIndex(i))
                    if uuid in str(nv_uuid):
                        return i
        except Exception:  # noqa: BLE001
            pass
        return 0

    def read(self) -> tuple[float | None, int | None, float | None]:
        if self.handle is None:
            return None, None, None
        out: list[Any] = [None, None, None]
        try:
            out[0] = float(self.nv.nvmlDeviceGetUtilizationRates(self.handle).gpu)
            out[1] = int(self.nv.nvmlDeviceGetMemoryInfo(self.handle).used)
            out[2] = float(self.nv.nvmlDeviceGetDecoderUtilization(self.handle)[0])
        except Exception:  # noqa: BLE001 - decoder utilisation is missing on some GPUs
            pass
        return out[0], out[1], out[2]


class ResourceSampler:
    """`ResourceSampler(hz=10).start()` ... `.stop()`; `.samples` holds what it saw."""

    def __init__(self, hz: float = 10.0, tracer: trace.Tracer | None = None, gpu_index: int | None = None):
        if hz <= 0:
            raise ValueError("hz must be positive")
        self.hz = hz
        self.tracer = tracer
        self.gpu_index = gpu_index
        self.samples: list[Sample] = []
        self.tick_seconds = 0.0  # time spent taking samples (the sampler's own cost)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    def start(self) -> ResourceSampler:
        if self.tracer is None:
            self.tracer = trace.active()
        self._t0 = self.tracer.t0 if self.tracer is not None and self.tracer.t0 else time.perf_counter()
        self._proc = psutil.Process()
        self._nvml = _Nvml(self.gpu_index)
        self._proc.cpu_percent(None)  # prime the deltas: psutil's first reading is meaningless
        psutil.cpu_percent(None, percpu=True)
        self._last_read = self._read_bytes()
        self._last_t = time.perf_counter()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="foleyscope-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> ResourceSampler:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        return self

    def __enter__(self) -> ResourceSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _read_bytes(self) -> int | None:
        try:
            return int(self._proc.io_counters().read_bytes)
        except (AttributeError, psutil.Error, OSError):
            try:
                io = psutil.disk_io_counters()
                return int(io.read_bytes) if io else None
            except (RuntimeError, OSError):
                return None

    def _run(self) -> None:
        period = 1.0 / self.hz
        next_t = time.perf_counter() + period
        while not self._stop.wait(max(0.0, next_t - time.perf_counter())):
            self.sample_once()
            next_t += period
            now = time.perf_counter()
            if next_t < now:  # fell behind (suspended process): skip missed ticks, don't burst
                next_t = now + period

    def sample_once(self) -> Sample:
        t_start = time.perf_counter()
        per_core = psutil.cpu_percent(None, percpu=True)
        proc_cpu = self._proc.cpu_percent(None)
        rss = self._proc.memory_info().rss
        read = self._read_bytes()
        dt = t_start - self._last_t
        disk = None
        if read is not None and self._last_read is not None and dt > 0:
            disk = max(0.0, (read - self._last_read) / dt)
        self._last_read, self._last_t = read, t_start
        gpu, gpu_mem, dec = self._nvml.read()
        stage = self.tracer.current_stage if self.tracer is not None else None
        s = Sample(t_start - self._t0, stage, list(per_core), float(proc_cpu), int(rss), disk,
                   gpu, gpu_mem, dec)
        self.samples.append(s)
        self.tick_seconds += time.perf_counter() - t_start
        return s
