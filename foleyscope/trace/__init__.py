"""Stage and step events, used by everything above it: the engine marks its stages and steps here and
emits typed facts; the doctor's tracer, the CLI's progress display and the server listen. Nothing here
knows about them."""

from foleyscope.trace.events import ModelLoad, ModeReport, Progress, StageFlops, WeightsRead, listening
from foleyscope.trace.tracer import (
    Event,
    StageRecord,
    StepRecord,
    Tracer,
    active,
    current_stage,
    emit,
    stage,
    step,
    suspended,
)

__all__ = ["Event", "ModeReport", "ModelLoad", "Progress", "StageFlops", "StageRecord", "StepRecord", "Tracer",
           "WeightsRead", "active", "current_stage", "emit", "listening", "stage", "step", "suspended"]
