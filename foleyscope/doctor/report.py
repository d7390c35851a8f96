"""The doctor's report: ranked findings, the stage table, samples and environment, and its four outputs
(terminal, JSON, one-file HTML, Chrome trace). The JSON schema is documented in docs/doctor.md."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from foleyscope.doctor.finding import Finding, rank
from foleyscope.media.atomic import atomic_output

if TYPE_CHECKING:
    from foleyscope.doctor.combine import Combined

SCHEMA = "foleyscope.doctor.report/1"


def _jsonable(obj: Any) -> Any:
    """JSON for anything a note may carry (paths, dtypes, devices, numpy scalars, tuples)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_jsonable(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if hasattr(obj, "item") and callable(obj.item):
        try:
            return _jsonable(obj.item())
        except (TypeError, ValueError, RuntimeError):
            pass
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return str(obj)


@dataclass
class Report:
    findings: list[Finding]  # ranked by est_saving_s, largest first
    stages: dict[str, dict[str, Any]]  # stage name -> row (seconds, share, steps_per_s, ...), incl. "other"
    total_s: float
    steps: list[dict[str, Any]]  # {index, stage, start_s, end_s, seconds}
    samples: list[dict[str, Any]]  # resources.Sample as dicts
    environment: dict[str, Any]
    floor: dict[str, Any]
    input: dict[str, Any] | None = None
    service: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    spans: list[dict[str, Any]] = field(default_factory=list)  # every stage occurrence, for timelines
    events: list[dict[str, Any]] = field(default_factory=list)  # notes: model_load, inference_mode, ...
    result: Any = field(default=None, repr=False, compare=False)  # what the diagnosed callable returned

    def __post_init__(self) -> None:
        self.findings = rank(list(self.findings))

    # -- derived -----------------------------------------------------------------------------------
    @property
    def top_level(self) -> list[str]:
        """Stage names that are not nested in another stage, plus 'other': their seconds sum to total_s."""
        return [n for n, row in self.stages.items() if row.get("parent") is None]

    def combined(self, top: int = 3) -> Combined:
        """The "do this first" summary: the saving of the top fixes applied together (combine.py)."""
        from foleyscope.doctor.combine import combined_saving

        return combined_saving(self.findings, self.stages, self.total_s, top=top)

    # -- outputs -----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return _jsonable({
            "schema": SCHEMA,
            "total_s": self.total_s,
            "findings": [f.to_dict() for f in self.findings],
            "stages": self.stages,
            "steps": self.steps,
            "spans": self.spans,
            "events": self.events,
            "samples": self.samples,
            "environment": self.environment,
            "floor": self.floor,
            "input": self.input,
            "service": self.service,
            "meta": self.meta,
            "summary": self.combined().to_dict(),
        })

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        """Read a report back from its JSON (to re-render it)."""
        findings = [Finding(**f) for f in data.get("findings", [])]
        keys = ("stages", "total_s", "steps", "samples", "environment", "floor", "input", "service", "meta",
                "spans", "events")
        return cls(findings=findings, **{k: data.get(k) for k in keys})

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        with atomic_output(path) as tmp:
            Path(tmp).write_text(json.dumps(self.to_dict(), indent=1), encoding="utf-8")
        return Path(path)

    def to_html(self, path: str | os.PathLike[str]) -> Path:
        from foleyscope.doctor.render_html import render_html

        with atomic_output(path) as tmp:
            Path(tmp).write_text(render_html(self), encoding="utf-8")
        return Path(path)

    def to_trace(self, path: str | os.PathLike[str]) -> Path:
        from foleyscope.doctor.render import trace_events

        with atomic_output(path) as tmp:
            Path(tmp).write_text(json.dumps(_jsonable(trace_events(self))), encoding="utf-8")
        return Path(path)

    def print_terminal(self, console: Any = None, *, top: int = 10) -> None:
        from foleyscope.doctor.render import print_terminal

        print_terminal(self, console, top=top)
