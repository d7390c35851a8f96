"""The combined saving of applying the top fixes together, for the report's "do this first" summary.

Savings of separate findings do not add up when their fixes act on the same stage: halving a stage's
time twice does not remove it. Findings are grouped by the stages they name (a stage overlaps its own
nested stages), savings within a group combine as independent fractions of the group's time, groups
add, and nothing exceeds the measured run."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from foleyscope.doctor.finding import Finding


@dataclass(frozen=True)
class Group:
    """Findings whose fixes act on overlapping stages (one finding alone when it names no stage)."""

    ids: tuple[str, ...]
    stages: tuple[str, ...]  # the stages the group's findings name; empty: no stage named
    stage_s: float  # the time those stages take (what the group's fixes can remove at most)
    seconds: float  # the group's combined saving
    separate_s: float  # the group's savings added up


@dataclass(frozen=True)
class Combined:
    seconds: float  # the saving of applying every fix in `ids` together
    ids: tuple[str, ...]  # the findings used, in rank order
    groups: tuple[Group, ...]
    separate_s: float  # the savings simply added up (what `seconds` would be without overlap)
    measured_ids: tuple[str, ...] = ()  # findings whose saving --try-fixes measured (used instead of the estimate)

    @property
    def overlapping(self) -> list[Group]:
        return [g for g in self.groups if len(g.ids) > 1]

    def to_dict(self) -> dict[str, Any]:
        """For the JSON report: seconds rounded to the millisecond, as printed."""
        data = asdict(self)
        for row in (data, *data["groups"]):
            for k in ("seconds", "separate_s", "stage_s"):
                if k in row:
                    row[k] = round(row[k], 3)
        return data


def worth_applying(f: Finding) -> bool:
    """An estimate above zero, and not measured by --try-fixes to make the run no faster."""
    return f.est_saving_s > 0 and f.helped()


def stages_of(finding: Finding) -> set[str]:
    """The stages a finding's fix acts on, from `evidence["stage"]` (str) or `evidence["stages"]` (list)."""
    ev = finding.evidence or {}
    names: set[str] = set()
    if isinstance(ev.get("stage"), str):
        names.add(ev["stage"])
    if isinstance(ev.get("stages"), (list, tuple)):
        names.update(s for s in ev["stages"] if isinstance(s, str))
    return names


def _ancestors(name: str, stages: Mapping[str, Mapping[str, Any]]) -> set[str]:
    seen: set[str] = set()
    parent = (stages.get(name) or {}).get("parent")
    while isinstance(parent, str) and parent not in seen:
        seen.add(parent)
        parent = (stages.get(parent) or {}).get("parent")
    return seen


def _overlap(a: set[str], b: set[str], stages: Mapping[str, Mapping[str, Any]]) -> bool:
    """Shared stage, or one stage nested in the other (a fix to `denoise` also speeds its sub-stages)."""
    if a & b:
        return True
    return any(x in _ancestors(y, stages) or y in _ancestors(x, stages) for x in a for y in b)


def _stage_time(names: set[str], stages: Mapping[str, Mapping[str, Any]], total_s: float) -> float:
    """Seconds of `names`, each nested stage counted within its named ancestor; unknown stages: the run."""
    if not names or any(n not in stages for n in names):
        return total_s
    outer = [n for n in names if not (_ancestors(n, stages) & names)]
    return min(total_s, sum(float(stages[n].get("seconds") or 0.0) for n in outer))


def _combine(savings: Iterable[float], stage_s: float) -> float:
    """T * (1 - prod(1 - min(s, T) / T)): independent fractional savings of the same time T."""
    if stage_s <= 0:
        return 0.0
    keep = math.prod(1 - min(s, stage_s) / stage_s for s in savings)
    return stage_s * (1 - keep)


def combined_saving(findings: Sequence[Finding], stages: Mapping[str, Mapping[str, Any]] | None,
                    total_s: float, top: int = 3) -> Combined:
    """The saving of applying the first `top` fixes worth applying (an estimate above zero, not measured
    to be useless) together. A saving --try-fixes measured replaces the estimate."""
    stages = stages or {}
    total_s = max(0.0, float(total_s or 0.0))
    chosen = [f for f in findings if worth_applying(f)][:max(0, top)]
    saving = [f.measured_saving_s if f.measured_saving_s is not None else f.est_saving_s for f in chosen]
    # union of findings (by rank position: ids may repeat) whose stage sets overlap, transitively
    groups: list[tuple[list[int], set[str]]] = []
    for i, f in enumerate(chosen):
        names = stages_of(f)
        merged: tuple[list[int], set[str]] = ([i], set(names))
        for g in [g for g in groups if names and g[1] and _overlap(names, g[1], stages)]:
            merged[0].extend(g[0])
            merged[1].update(g[1])
            groups.remove(g)
        groups.append(merged)
    out: list[Group] = []
    for members, names in sorted(groups, key=lambda g: min(g[0])):
        members.sort()
        t = _stage_time(names, stages, total_s)
        out.append(Group(ids=tuple(chosen[i].id for i in members), stages=tuple(sorted(names)), stage_s=t,
                         seconds=_combine((saving[i] for i in members), t),
                         separate_s=sum(saving[i] for i in members)))
    return Combined(
        seconds=min(total_s, sum(g.seconds for g in out)),
        ids=tuple(f.id for f in chosen),
        groups=tuple(out),
        separate_s=sum(saving),
        measured_ids=tuple(f.id for f in chosen if f.measured_saving_s is not None),
    )
