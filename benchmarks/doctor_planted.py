"""The doctor against its planted suite: one row per planted cause with the check that must come first,
what came first, the estimate beside the saving measured by running the clean twin (the fix applied),
and what the clean twin raised. Run: `.venv/bin/python benchmarks/doctor_planted.py [NAME ...]`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from planted import TOLERANCE, all_cases, measure  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402


def main(names: list[str]) -> int:
    cases = all_cases()
    table = Table("case", "check", "first", "estimate s", "measured s", "error", "clean twin", "cores", box=None)
    good = ran = 0
    for name, c in cases.items():
        if names and name not in names:
            continue
        if why := c.skip():
            table.add_row(name, c.check, f"skipped: {why}", "", "", "", "", "")
            continue
        o = measure(c)
        ran += not o.contended
        good += o.calibrated and not o.contended
        top = o.top.id if o.top is not None else "-"
        table.add_row(name, c.check, top if top != c.check else "yes", f"{o.estimate_s:.3f}",
                      f"{o.measured_saving_s:.3f}", f"{o.error:.0%}" if o.error != float("inf") else "inf",
                      ", ".join(o.clean_warnings) or "quiet", "shared" if o.contended else "free")
    console = Console(width=max(Console().width, 120))
    console.print(table)
    console.print(f"{good} of {ran} cases measured on free cores ranked first within {TOLERANCE:.0%} of the "
                  "measured saving")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
