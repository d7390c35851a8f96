"""How every test file treats findings that depend on the machine rather than on what a test plants.

`cpu_contention` reports other processes taking the cores: on a shared machine it can fire on any
run, so ranking assertions look at the planted findings only (`planted_ids`). Precision findings are
NOT environmental: tests pin the engine to the dtype the probe measures fastest (`--dtype auto`, or
`hardware.fastest_dtype`), so `fp32_where_bf16_fast` / `half_precision_slow` must stay quiet unless planted.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

ENVIRONMENTAL = frozenset({"cpu_contention"})


def planted_ids(findings: Iterable[Any]) -> list[str]:
    """Finding ids in rank order, environmental ones left out (Finding objects or JSON dicts)."""
    ids = [f["id"] if isinstance(f, dict) else f.id for f in findings]
    return [i for i in ids if i not in ENVIRONMENTAL]


def top_planted(findings: Iterable[Any]) -> Any:
    """The highest-ranked finding that is not environmental."""
    return next(f for f in findings if (f["id"] if isinstance(f, dict) else f.id) not in ENVIRONMENTAL)
