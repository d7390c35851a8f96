"""Checks declared in one place: `@check(id, step=, doc=)` registers a check and turns what it returns
into Findings, so a check id and its step are written once, by its decorator, never per finding.

A check is a function of the RunData (`run.context` carries what a step needs beyond the trace: the
input probe for step 4, the service measurements for step 5). It returns what it found without the id
or step: None, one `Found`, or any iterable of them (one per stage, say).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from foleyscope.doctor.finding import Finding, Severity

if TYPE_CHECKING:
    from foleyscope.doctor.run import RunData


@dataclass(kw_only=True)
class Found:
    """A Finding before its check names it: every Finding field but id, step and measured_saving_s."""

    severity: Severity
    title: str
    evidence: dict[str, Any]
    fix: str
    est_saving_s: float
    extra: dict[str, Any] = field(default_factory=dict)
    fix_mode: dict[str, Any] | None = None
    fix_prep: dict[str, Any] | None = None


Result = Found | Iterable[Found] | None
CheckFn = Callable[["RunData"], Result]


@dataclass(frozen=True)
class Check:
    """One registered check: calling it on a RunData returns its Findings."""

    id: str
    step: int  # 0..5, the step of five-steps.md it belongs to
    doc: str  # one line: what it finds (`doctor --list-checks`)
    fn: CheckFn

    def __call__(self, run: RunData) -> list[Finding]:
        return self.findings(self.fn(run))

    def findings(self, result: Result) -> list[Finding]:
        """Name what a rule found: `Found`s become Findings with this check's id and step."""
        if result is None:
            return []
        items = list(result) if isinstance(result, Iterable) else [result]
        out = []
        for item in items:
            if not isinstance(item, Found):  # a ready Finding would restate (and could misstate) the id
                raise TypeError(f"check {self.id} returned {type(item).__name__}, not Found")
            out.append(Finding(self.id, self.step, **{f.name: getattr(item, f.name) for f in fields(item)}))
        return out


_REGISTRY: dict[str, Check] = {}


def check(check_id: str, *, step: int, doc: str) -> Callable[[CheckFn], Check]:
    """Register the decorated function as check `check_id` of `step`; declaring an id twice is an error."""

    def register(fn: CheckFn) -> Check:
        if check_id in _REGISTRY:
            raise ValueError(f"check id {check_id!r} is declared twice")
        _REGISTRY[check_id] = made = Check(check_id, step, doc, fn)
        return made

    return register


def registered(step: int | None = None) -> list[Check]:
    """Every registered check (of one step), in step order, declaration order within a step."""
    return sorted((c for c in _REGISTRY.values() if step is None or c.step == step), key=lambda c: c.step)
