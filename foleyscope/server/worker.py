"""One worker: the pipeline loaded once, at start, then warmed up with a one-second clip (so the first
real job pays no lazy initialisation); jobs run through `run_job` with a CancelToken, and everything
the worker does is told to `emit` as an event dict: worker state, a job running, each stage start/end
and denoising step (with its time), and the job's end. The embedded and Redis drivers only carry
those dicts (a pipe, a Redis stream) and the job specs."""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from foleyscope.engine.jobs import Cancelled, CancelToken, Job, run_job
from foleyscope.errors import FoleyscopeError
from foleyscope.server.config import EngineSpec
from foleyscope.trace.events import Progress

Emit = Callable[[dict[str, Any]], None]
WARMUP_STEPS = 2


def worker_name() -> str:
    """host:pid, so a person (or the crash test) can tell which process runs a job."""
    return f"{socket.gethostname()}:{os.getpid()}"


def job_from_spec(spec: dict[str, Any], data_dir: Path) -> Job:
    """A spec's paths are relative to the data directory, which may be mounted elsewhere on this machine."""
    return Job(data_dir / spec["input"], spec["prompt"], spec.get("negative_prompt"), steps=spec["steps"],
               cfg=spec["cfg"], solver=spec["solver"], seed=spec["seed"], out=data_dir / spec["audio"],
               mux=data_dir / spec["video"] if spec.get("video") else None)


class FoleyWorker:
    def __init__(self, engine: EngineSpec, data_dir: Path, emit: Emit, name: str | None = None) -> None:
        self.engine, self.data_dir, self._emit = engine, data_dir, emit
        self.name = name or worker_name()
        self.pipe: Any = None
        self.info: dict[str, Any] = {}

    def emit(self, event: dict[str, Any]) -> None:
        self._emit({"worker": self.name, "ts": time.time(), **event})

    def load(self) -> None:
        """Load the pipeline and warm it up; tell `ready` with the load time and the mode."""
        self.emit({"type": "worker", "state": "starting"})
        import torch

        from foleyscope.engine.pipeline import FoleyPipeline

        if self.engine.threads:
            torch.set_num_threads(self.engine.threads)
        start = time.perf_counter()
        self.pipe = FoleyPipeline.load(self.engine.preset, self.engine.weights, self.engine.device,
                                       self.engine.to_mode(), frames=self.engine.frames)  # type: ignore[arg-type]
        load_s = time.perf_counter() - start
        warmup_s = self._warm_up()
        self.info = {"load_s": round(load_s, 3), "warmup_s": round(warmup_s, 3), "preset": self.engine.preset,
                     "device": str(self.pipe.device), "mode": self.pipe.mode.describe()}
        self.emit({"type": "worker", "state": "ready", **self.info})

    def _warm_up(self) -> float:
        from foleyscope.media.synth import SynthSpec, make_video

        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="foleyscope-warmup-") as tmp:
            clip = make_video(Path(tmp) / "warmup.mp4", SynthSpec(width=160, height=90, seconds=1.0))
            run_job(self.pipe, Job(clip, "warm-up", steps=WARMUP_STEPS, seed=0))
        return time.perf_counter() - start

    def run(self, spec: dict[str, Any], cancel: CancelToken, attempt: int = 1) -> dict[str, Any]:
        """Run one job; emits `running` and its progress, and returns (not emits) its end event, so a
        driver can commit it exactly once (Redis: a worker killed after finishing must not finish twice)."""
        job_id = spec["id"]
        self.emit({"type": "running", "id": job_id, "attempt": attempt})
        times: dict[str, float] = {}

        def progress(e: Progress) -> None:
            if e.kind == "end":
                times[e.stage] = round(e.seconds, 4)
            self.emit({"type": "progress", "id": job_id, "kind": e.kind, "stage": e.stage, "done": e.done,
                       "total": e.total, "seconds": round(e.seconds, 5), "unit": e.unit})

        end: dict[str, Any] = {"id": job_id, "worker": self.name, "ts": 0.0}
        try:
            job = job_from_spec(spec, self.data_dir)
            _remove_stale_temp_files(job)
            done = run_job(self.pipe, job, progress, cancel)
        except Cancelled:
            return end | {"type": "canceled", "ts": time.time()}
        except FoleyscopeError as exc:
            return end | {"type": "failed", "error": str(exc), "ts": time.time()}
        except Exception as exc:  # noqa: BLE001 - a job's failure is reported, the worker lives on
            return end | {"type": "failed", "error": f"{type(exc).__name__}: {exc}".splitlines()[0],
                          "ts": time.time()}
        return end | {"type": "succeeded", "stage_times": times, "processing_s": round(done.seconds, 4),
                      "duration_s": round(done.result.duration_s, 4), "ts": time.time()}


def _remove_stale_temp_files(job: Job) -> None:
    """A worker killed while writing leaves `.audio.XXXX.wav`-style temp files; the re-run clears them."""
    folder = job.video.parent
    stems = {p.stem for p in (job.out, job.mux) if p is not None}
    for path in folder.glob(".*"):
        if any(path.name.startswith(f".{stem}.") for stem in stems):
            path.unlink(missing_ok=True)
