"""Terminal and Chrome-trace renderings of a Report (the HTML one is in render_html.py).

The terminal's stage rows (top-level stages plus 'other') are rounded so that they add up exactly to the
rounded total: the reader can check the arithmetic."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from foleyscope.doctor.report import Report

BAR = 28


def round_to_total(values: list[float], total: float, nd: int = 2) -> list[float]:
    """Round `values` to `nd` decimals so that they sum to round(total, nd) (largest remainder)."""
    scale = 10**nd
    target = round(total * scale)
    floors = [math.floor(v * scale) for v in values]
    short = target - sum(floors)
    order = sorted(range(len(values)), key=lambda i: values[i] * scale - floors[i], reverse=True)
    for i in order[: max(0, short)]:
        floors[i] += 1
    return [f / scale for f in floors]


def _evidence_text(ev: dict[str, Any], limit: int = 4) -> str:
    """The headline numbers only: nested detail (probe dicts, per-rule records) stays in --json/--html,
    except that a list of rule records shows each rule's measured value."""
    parts = []
    for k, v in ev.items():
        if isinstance(v, float):
            v = f"{v:.3g}"
        elif isinstance(v, list) and v and all(isinstance(x, dict) and "value" in x for x in v):
            v = ", ".join(str(x["value"]) for x in v)
        elif isinstance(v, (list, dict)) or (isinstance(v, str) and len(v) > 60):
            continue
        parts.append(f"{k}={v}")
        if len(parts) == limit:
            break
    return "; ".join(parts)


def _bytes(n: int | None) -> str:
    if not n:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def _print_finding(console: Any, i: int, f: Any, total_s: float) -> None:
    """One finding as a block that reads at any width: the headline, then the title, each evidence
    number and the fix on lines of their own (a table column would split them at 80 columns)."""
    from rich.markup import escape
    from rich.padding import Padding

    share = f.est_saving_s / total_s if total_s else 0
    measured = "; ".join(f.measured_lines())
    console.print(f"[bold]{i}. {f.id}[/bold] ({f.severity}, step {f.step}): saves ~{f.est_saving_s:.2f} s "
                  f"({share:.0%})" + (f"; {escape(measured)}" if measured else ""))
    lines = [escape(f.title)] + [f"[dim]·[/dim] {escape(item)}" for item in _evidence_text(f.evidence).split("; ")
                                 if item]
    for line in [*lines, f"[green]fix:[/green] {escape(f.fix)}"]:
        console.print(Padding(line, (0, 0, 0, 3)))  # wrapped lines keep the indent


def print_terminal(report: Report, console: Any = None, *, top: int = 10) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    env = report.environment
    device = env.get("cuda_device") if env.get("cuda_available") else env.get("cpu")
    console.print(f"[bold]foleyscope doctor[/bold]: {report.total_s:.2f} s measured "
                  f"({env.get('torch', '?')}, {device or '?'})")

    if report.findings and top == 0:
        n = len(report.findings)
        console.print(f"{n} finding{'s' if n > 1 else ''} (listed with --top N, and in --json/--html)")
    elif report.findings:
        console.print("\n[bold]Findings, largest estimated saving first[/bold]")
        for i, f in enumerate(report.findings[:top], 1):
            _print_finding(console, i, f, report.total_s)
        if len(report.findings) > top:
            console.print(f"... and {len(report.findings) - top} more in --json/--html")
    else:
        console.print("[green]No findings[/green]: no check saw time worth saving in this run.")

    bars = console.width >= 100  # at 80 columns the bar would squeeze the readings into many lines
    from rich import box

    st = Table(title="\nStages", title_justify="left", box=box.HEAVY_HEAD if bars else box.SIMPLE_HEAD,
               pad_edge=bars)
    for col in ("stage", "seconds", "share", *([""] if bars else []), "steps/s", "peak mem", "reading"):
        numeric = col in ("seconds", "share", "steps/s", "peak mem")
        st.add_column(col, justify="right" if numeric else "left", no_wrap=col != "reading")
    top_names = report.top_level
    shown = round_to_total([report.stages[n]["seconds"] for n in top_names], report.total_s)
    rounded = dict(zip(top_names, shown, strict=True))
    shares = dict(zip(top_names, round_to_total([report.stages[n]["share"] * 100 for n in top_names], 100, 1),
                      strict=True))
    for name, row in report.stages.items():
        depth = int(row.get("depth") or 0)
        secs = rounded.get(name, row["seconds"])
        share = row["share"]
        pct = shares.get(name, round(share * 100, 1))
        label = "  " * depth + ("└ " if depth else "") + name
        label += " (untraced)" if row.get("untraced") else ""
        sps = row.get("steps_per_s")
        st.add_row(
            label if name in rounded else f"[dim]{label}[/dim]",
            f"{secs:.2f}",
            f"{pct:.1f}%",
            *(["█" * max(0, round(share * BAR)) or ("▏" if share > 0 else "")] if bars else []),
            f"{sps:.2f}" if sps else "",
            _bytes(row.get("peak_mem_bytes")),
            (row.get("reading") or "") if bars else (row.get("reading") or "").replace("CPU-bound, ", "CPU "),
        )
    st.add_row("[bold]total[/bold]", f"[bold]{report.total_s:.2f}[/bold]", "100.0%", *[""] * (4 if bars else 3))
    console.print(st)
    console.print("[dim]Nested stages (indented) are part of their parent; top-level rows add up to the "
                  "total.[/dim]")


def trace_events(report: Report) -> dict[str, Any]:
    """Chrome trace-event JSON (Perfetto, chrome://tracing): stages and steps as complete ("X") spans,
    samples as counters ("C"), notes as instant events ("i"); times in microseconds."""
    pid = 1
    us = 1e6
    events: list[dict[str, Any]] = [
        {"ph": "M", "pid": pid, "tid": 0, "name": "process_name", "args": {"name": "foleyscope doctor"}},
        {"ph": "M", "pid": pid, "tid": 100, "name": "thread_name", "args": {"name": "denoising steps"}},
    ]
    threads = sorted({int(s.get("thread", 0)) for s in report.spans})
    for tid in threads:
        events.append({"ph": "M", "pid": pid, "tid": tid, "name": "thread_name",
                       "args": {"name": "stages" if tid == 0 else f"stages (thread {tid})"}})
    for s in report.spans:
        if s.get("end_s") is None:
            continue
        events.append({
            "name": s["name"], "cat": "stage", "ph": "X", "pid": pid, "tid": int(s.get("thread", 0)),
            "ts": round(s["start_s"] * us, 3), "dur": round((s["end_s"] - s["start_s"]) * us, 3),
            "args": {k: s.get(k) for k in ("parent", "peak_mem_bytes", "cpu_s", "h2d_copies", "h2d_bytes")},
        })
    for s in report.steps:
        events.append({
            "name": f"step {s['index']}", "cat": "step", "ph": "X", "pid": pid, "tid": 100,
            "ts": round(s["start_s"] * us, 3), "dur": round((s["end_s"] - s["start_s"]) * us, 3),
            "args": {"stage": s.get("stage"), "index": s["index"], "total": s.get("total")},
        })
    for smp in report.samples:
        ts = round(smp["t"] * us, 3)
        cores = smp.get("cpu_percent_per_core") or []
        events.append({"name": "cpu %", "ph": "C", "pid": pid, "ts": ts, "args": {
            "process (100 = 1 core)": smp["proc_cpu_percent"],
            "system mean": round(sum(cores) / len(cores), 1) if cores else 0.0}})
        events.append({"name": "rss MiB", "ph": "C", "pid": pid, "ts": ts,
                       "args": {"rss": round(smp["rss_bytes"] / 2**20, 1)}})
        if smp.get("disk_read_bps") is not None:
            events.append({"name": "disk read MB/s", "ph": "C", "pid": pid, "ts": ts,
                           "args": {"read": round(smp["disk_read_bps"] / 1e6, 2)}})
        if smp.get("gpu_util") is not None:
            gpu = {"util": smp["gpu_util"]}
            if smp.get("gpu_dec_util") is not None:
                gpu["nvdec"] = smp["gpu_dec_util"]
            events.append({"name": "gpu %", "ph": "C", "pid": pid, "ts": ts, "args": gpu})
            if smp.get("gpu_mem_bytes") is not None:
                events.append({"name": "gpu MiB", "ph": "C", "pid": pid, "ts": ts,
                               "args": {"used": round(smp["gpu_mem_bytes"] / 2**20, 1)}})
    for e in report.events:
        events.append({"name": e["kind"], "cat": "note", "ph": "i", "s": "p", "pid": pid, "tid": 0,
                       "ts": round(e["t_s"] * us, 3), "args": e.get("fields", {})})
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"total_s": report.total_s, "schema": "chrome-trace-event"}}
