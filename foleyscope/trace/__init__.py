"""Stage and step events, used by everything above it: the engine marks its stages and steps here,
and the doctor, the CLI's progress display and the server listen. Nothing here knows about them."""

from foleyscope.trace.tracer import Event, StageRecord, StepRecord, Tracer, active, note, stage, step, suspended

__all__ = ["Event", "StageRecord", "StepRecord", "Tracer", "active", "note", "stage", "step", "suspended"]
