"""One Job, one way to run it: `run_job(pipeline, job)` is what generate, doctor, bench and the
server worker call, so a video is always processed, written and cancelled the same way."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from foleyscope.stages import Stage
from foleyscope.trace import Progress, listening, stage
from foleyscope.trace.events import Listener

if TYPE_CHECKING:  # jobs are built before torch is imported (the CLI checks them first)
    from foleyscope.engine.pipeline import FoleyPipeline, FoleyResult

DEFAULT_NEGATIVE_PROMPT = "noisy, harsh"


@dataclass(frozen=True)
class Job:
    """A video and what to make of it. `out` (.wav/.flac) and `mux` (a video file) are optional:
    without them the result stays in memory."""

    video: Path
    prompt: str
    negative_prompt: str | None = None  # None: DEFAULT_NEGATIVE_PROMPT
    steps: int = 50
    cfg: float = 4.5
    solver: str = "euler"  # euler | heun
    seed: int | None = None
    out: Path | None = None
    mux: Path | None = None


@dataclass
class JobResult:
    job: Job
    result: FoleyResult
    outputs: list[Path] = field(default_factory=list)
    seconds: float = 0.0


class Cancelled(Exception):  # noqa: N818 - what a caller catches: the job was cancelled, not failed
    """The job's cancel token was set; raised at the next step or stage boundary, nothing written."""


class CancelToken:
    """Set from any thread; the running job stops at its next step or stage boundary."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self, _event: Progress | None = None) -> None:
        """A progress listener: raises Cancelled once the token is set."""
        if self._event.is_set():
            raise Cancelled("cancelled")


def run_job(pipeline: FoleyPipeline, job: Job, progress: Listener | None = None,
            cancel: CancelToken | None = None) -> JobResult:
    """Generate `job` on a loaded pipeline and write its outputs (each atomically, after the audio
    exists: a failed or cancelled job leaves no file). `progress` hears every stage and step."""
    from foleyscope.media.audio import mux, write_audio

    start = time.perf_counter()
    if cancel is not None:
        cancel.check()  # a job cancelled while queued never starts
    negative = DEFAULT_NEGATIVE_PROMPT if job.negative_prompt is None else job.negative_prompt
    with listening(progress, cancel.check if cancel is not None else None):
        result = pipeline(job.video, job.prompt, negative_prompt=negative, steps=job.steps, cfg=job.cfg,
                          solver=job.solver, seed=job.seed)
        outputs: list[Path] = []
        try:
            with stage(Stage.POSTPROCESS):
                if job.out is not None:
                    outputs.append(write_audio(job.out, result.audio, result.sample_rate))
                if job.mux is not None:
                    outputs.append(mux(job.video, result.audio, result.sample_rate, job.mux))
        except BaseException:  # cancelled or failed half-way through the outputs: none of them stays
            for path in outputs:
                path.unlink(missing_ok=True)
            raise
    return JobResult(job, result, outputs, time.perf_counter() - start)
