"""A finding: one thing the doctor measured that costs time, with the evidence and the fix."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Severity = Literal["critical", "warning", "info"]


@dataclass
class Finding:
    id: str  # stable snake_case id, listed by `foleyscope doctor --list-checks`
    step: int  # 0..5, the step of five-steps.md that found it
    severity: Severity
    title: str
    evidence: dict[str, Any]  # numbers measured in this run
    fix: str  # a concrete command or code change
    est_saving_s: float  # seconds the fix would save, estimated from the measurements
    measured_saving_s: float | None = None  # filled by --try-fixes
    extra: dict[str, Any] = field(default_factory=dict)
    fix_mode: dict[str, Any] | None = None  # the fix is a mode: replace(mode, **fix_mode), e.g. {"dtype": "bf16"}
    fix_prep: dict[str, Any] | None = None  # the fix is an input change: media.prep.prep(video, out, **fix_prep)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def measured_lines(self) -> list[str]:
        """What --try-fixes measured, for the reports: the saving, and prep's one-off cost if any."""
        if self.measured_saving_s is None:
            return []
        tried = self.extra.get("try_fix")
        tried = tried if isinstance(tried, dict) else {}
        if tried.get("within_noise"):
            return [f"tried: within the runs' noise ({self.measured_saving_s:.2f} s saved, runs spread "
                    f"{tried.get('spread_s', 0):.2f} s)"]
        if not self.helped():
            return [f"tried: did not help ({-self.measured_saving_s:+.2f} s)"]
        lines = [f"measured {self.measured_saving_s:.2f} s"]
        if tried.get("spread_s"):
            lines[0] += f" (runs spread {tried['spread_s']:.2f} s)"
        if tried.get("prep_s") is not None:
            lines.append(f"(prep: {tried['prep_s']:.1f} s once per file)")
        return lines

    def helped(self) -> bool:
        """False only when --try-fixes applied the fix and the run was not faster than its runs' spread."""
        if self.measured_saving_s is None:
            return True
        tried = self.extra.get("try_fix")
        return self.measured_saving_s > 0 and not (isinstance(tried, dict) and tried.get("within_noise"))


def rank(findings: list[Finding]) -> list[Finding]:
    """Largest estimated saving first; severity breaks ties so a zero-saving critical still leads. A fix
    that --try-fixes measured not to help goes after every other, whatever its estimate."""
    order = {"critical": 0, "warning": 1, "info": 2}
    return sorted(findings, key=lambda f: (not f.helped(), -f.est_saving_s, order[f.severity], f.id))
