"""The checks: one module per step of five-steps.md, each check declared by `@check` (doctor/registry.py).

Importing this package imports every check module, which registers its checks; an import error is a
bug and surfaces. At run time the checks are isolated instead: one that raises is reported in
`report.meta["check_errors"]` and the others still run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from foleyscope.doctor.checks import bound, cpu, decode, input, mode, service, timing, utilisation  # noqa: F401
from foleyscope.doctor.finding import Finding, rank
from foleyscope.doctor.registry import Check, registered
from foleyscope.doctor.run import RunData

__all__ = ["all_checks", "registered", "run_checks"]

log = logging.getLogger(__name__)


def all_checks() -> dict[str, tuple[int, str]]:
    """Every check id -> (step, one line), in step order (what `doctor --list-checks` prints)."""
    return {c.id: (c.step, c.doc) for c in registered()}


def run_checks(run: RunData, order: Sequence[Check] | None = None) -> tuple[list[Finding], dict[str, str]]:
    """Run every registered check (or those of `order`, in that order) on one run; returns (ranked
    findings, {check id: error}) so that one failing check is reported instead of losing the diagnosis."""
    findings: list[Finding] = []
    errors: dict[str, str] = {}
    for chk in registered() if order is None else order:
        try:
            findings.extend(chk(run))
        except Exception as exc:  # noqa: BLE001
            log.exception("doctor check %s failed", chk.id)
            errors[chk.id] = f"{type(exc).__name__}: {exc}"
    return rank(findings), errors
