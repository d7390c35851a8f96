"""The check registry: one module per step of five-steps.md, each exposing CHECKS (id -> one line).

Steps 0-3 read a RunData (`check_<module>(run) -> list[Finding]`). Steps 4 and 5 need other inputs
(a media probe, a server URL) and are called by the doctor with those: checks/input.py and
checks/service.py. A missing or broken module drops out of the registry instead of breaking the doctor.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING

from foleyscope.doctor.finding import Finding, rank

if TYPE_CHECKING:
    from foleyscope.doctor.run import RunData

STEP_MODULES: tuple[tuple[int, str], ...] = (
    (0, "bound"),
    (1, "utilisation"),
    (2, "timing"),
    (3, "mode"),
    (4, "input"),
    (5, "service"),
)
RUN_CHECKS = ("bound", "utilisation", "timing", "mode")  # the modules that read a RunData

IMPORT_ERRORS: dict[str, str] = {}
log = logging.getLogger(__name__)


def load(name: str) -> ModuleType | None:
    """Import checks/<name>.py, or None if it is not there (yet) or fails to import."""
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            IMPORT_ERRORS[name] = f"{type(exc).__name__}: {exc}"
        return None
    except Exception as exc:  # noqa: BLE001 - a sibling's half-written module must not stop the doctor
        IMPORT_ERRORS[name] = f"{type(exc).__name__}: {exc}"
        log.warning("doctor check module %s failed to import: %s", name, exc)
        return None


def all_checks() -> dict[str, tuple[int, str]]:
    """Every check id -> (step, one line), in step order (what `doctor --list-checks` prints)."""
    out: dict[str, tuple[int, str]] = {}
    for step, name in STEP_MODULES:
        module = load(name)
        if module is None:
            continue
        for cid, line in getattr(module, "CHECKS", {}).items():
            out[cid] = (step, line)
    return out


def run_checks(run: RunData) -> tuple[list[Finding], dict[str, str]]:
    """Run steps 0-3 over a recorded run; returns (ranked findings, {module: error}) so that one
    failing check is reported instead of losing the whole diagnosis."""
    findings: list[Finding] = []
    errors: dict[str, str] = {}
    for name in RUN_CHECKS:
        module = load(name)
        fn: Callable[[RunData], list[Finding]] | None = getattr(module, f"check_{name}", None)
        if fn is None:
            errors[name] = IMPORT_ERRORS.get(name, "module missing")
            continue
        try:
            findings.extend(fn(run))
        except Exception as exc:  # noqa: BLE001
            log.exception("doctor check %s failed", name)
            errors[name] = f"{type(exc).__name__}: {exc}"
    return rank(findings), errors
