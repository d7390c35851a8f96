"""Terminal and Chrome-trace renderings of a Report (the HTML one is in render_html.py), and the text
both the terminal and the HTML print (header, "do this first", evidence with units), so they agree.

The terminal's stage rows (top-level stages plus 'other') are rounded so that they add up exactly to the
rounded total: the reader can check the arithmetic."""

from __future__ import annotations

import math
import re
import textwrap
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from foleyscope.doctor.combine import Combined
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


# -- shared by the terminal and the HTML ------------------------------------------------------------
def _num(v: float) -> str:
    """Three significant digits without exponents: 0.0123, 1.23, 12.3, 123, 12,345."""
    if v == 0 or abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}" if abs(v) >= 1e-3 else f"{v:.1e}"


def size(n: float | None) -> str:
    """Bytes in binary units (B, KiB, MiB, GiB)."""
    if n is None:
        return ""
    v = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(v) < 1024 or unit == "GiB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return ""


def seconds(v: float) -> str:
    """'1.23 s'; below 10 ms in milliseconds, so that a short time does not read '0.00 s'."""
    return f"{v * 1e3:.1f} ms" if 0 < abs(v) < 0.01 else f"{v:.2f} s"


def format_value(key: str, v: Any) -> str | None:
    """One evidence value with the unit its key names (`_s` seconds, `_bytes` binary sizes, `_bps` MB/s
    (bit rates kbit/s),
    FLOPs in GFLOP(/s), `speedup`/`ratio` x, `share`/`_percent`/utilisation %). None for nested detail
    (objects, long lists) that the terminal leaves to --json/--html."""
    k = key.lower()
    if isinstance(v, bool) or v is None:
        return {True: "yes", False: "no", None: "none"}[v]
    if isinstance(v, (int, float)):
        if k.endswith("bytes"):
            return size(v)
        if k.endswith("_bps") and "bit" in k:  # a media bit rate: bits, not bytes
            return f"{v / 1e3:,.0f} kbit/s" if v < 1e7 else f"{v / 1e6:.1f} Mbit/s"
        if k.endswith("_bps"):
            return f"{v / 1e6:.1f} MB/s"
        if k.endswith("_gflops"):
            return f"{_num(v)} GFLOP/s"
        if k.endswith("flops_per_s"):
            return f"{_num(v / 1e9)} GFLOP/s"
        if k == "flops" or k.endswith("_flops"):
            return f"{_num(v / 1e9)} GFLOP"
        if k.endswith("_mb_s"):
            return f"{v:.1f} MB/s"
        if k.endswith("_per_s"):
            return f"{_num(v)}/s"
        if k.endswith("_s") or k == "seconds":
            return seconds(v)
        if "speedup" in k or "ratio" in k:
            return f"{_num(v)}x"
        if "share" in k or k == "efficiency":
            return f"{v * 100:.1f}%"
        if k.endswith("_percent") or "util" in k:
            return f"{v:.1f}%"
        return str(v) if isinstance(v, int) else _num(v)
    if isinstance(v, str):
        return v
    if isinstance(v, (list, tuple)):
        if not v:
            return "none"
        if all(isinstance(x, dict) and "value" in x for x in v):  # rule records: each measured value
            return ", ".join(str(x["value"]) for x in v)
        if all(isinstance(x, (int, float, str)) and not isinstance(x, bool) for x in v):
            text = ", ".join(str(format_value(key, x)) for x in v)
            return text if len(text) <= 120 else None
    if isinstance(v, dict) and v and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v.values()):
        text = ", ".join(f"{name} {format_value(key, x)}" for name, x in v.items())  # per-stage numbers
        return text if len(text) <= 120 else None
    return None


def evidence_items(ev: dict[str, Any], limit: int | None = None) -> list[tuple[str, str]]:
    """(key, value with its unit) for the evidence values a reader can take in at a glance."""
    items = []
    for k, v in ev.items():
        text = format_value(str(k), v)
        if text is None or len(text) > 160:
            continue
        items.append((str(k), text))
        if limit is not None and len(items) == limit:
            break
    return items


def _machine(env: dict[str, Any]) -> str:
    logical, usable = env.get("logical_cores"), env.get("usable_cores")
    cores = f"{usable} of {logical} cores usable" if usable and usable != logical else f"{logical} cores"
    parts = [str(env.get("cpu") or "?"), cores]
    if env.get("torch"):
        threads = env.get("num_threads")
        parts.append(f"torch {env['torch']}" + (f" ({threads} threads)" if threads else ""))
    ram = (env.get("memory_before") or {}).get("ram_total_bytes")
    if ram:
        parts.append(f"{size(ram)} RAM")
    gpus = [str(g.get("name")) for g in env.get("gpus_visible") or []]
    if env.get("cuda_available") and env.get("cuda_device"):
        parts.append(f"GPU {env['cuda_device']}" + (f" ({size(env['cuda_memory_total_bytes'])})"
                                                    if env.get("cuda_memory_total_bytes") else ""))
    elif gpus:
        parts.append(f"GPU {', '.join(gpus)} (not usable by torch)")
    else:
        parts.append("no GPU")
    if env.get("device") and (gpus or env.get("cuda_available")):
        parts.append(f"the models ran on {env['device']}")
    return "; ".join(parts)


def header_items(report: Report) -> list[tuple[str, str]]:
    """What was diagnosed, how, and where: the input file, the prompt, the command line, the machine."""
    meta, inp = report.meta or {}, report.input or {}
    items = []
    video = inp.get("path") or meta.get("video")
    if video:
        desc = []
        if inp.get("width") and inp.get("height"):
            desc.append(f"{inp['width']}x{inp['height']} {inp.get('video_codec') or ''}".strip())
        if inp.get("fps"):
            desc.append(f"{_num(inp['fps'])} fps")
        if inp.get("duration_s") is not None:
            desc.append(seconds(inp["duration_s"]))
        if inp.get("size_bytes"):
            desc.append(size(inp["size_bytes"]))
        items.append(("input", str(video) + (f" ({', '.join(desc)})" if desc else "")))
    if meta.get("prompt") is not None:
        items.append(("prompt", f'"{meta["prompt"]}"'))
    if meta.get("command"):
        items.append(("command", str(meta["command"])))
    items.append(("machine", _machine(report.environment or {})))
    if meta.get("uncertain"):
        items.append(("note", str(meta["uncertain"])))
    return items


def summary_title(c: Combined, total_s: float) -> str:
    """'Do this first: ...' with the combined saving, the same words in both renderers."""
    share = f" ({c.seconds / total_s:.0%})" if total_s > 0 else ""
    what = "this fix saves" if len(c.ids) == 1 else f"these {len(c.ids)} fixes together save"
    return f"Do this first: {what} ~{seconds(c.seconds)} of {seconds(total_s)}{share}"


def summary_notes(c: Combined) -> list[str]:
    """Why the combined saving is less than the sum, and which savings --try-fixes measured."""
    notes = []
    for g in c.overlapping:
        notes.append(f"{' and '.join(g.ids)} both act on {', '.join(g.stages) or 'the run'}: together "
                     f"~{seconds(g.seconds)}, not {seconds(g.separate_s)}")
    if sum(g.seconds for g in c.groups) > c.seconds + 0.005:
        notes.append(f"capped at the measured run, {seconds(c.seconds)}")
    if c.measured_ids:
        notes.append(f"measured by --try-fixes: {', '.join(c.measured_ids)}"
                     + ("" if len(c.measured_ids) == len(c.ids) else "; the others are estimates"))
    return notes


# -- terminal ----------------------------------------------------------------------------------------
GLUE = re.compile(r"(?<=\d) (?=(?:s|ms|MiB|GiB|KiB|B|MB/s|GFLOP/s|GFLOP|fps|cores?|threads?|steps?)(?![\w/]))")


def _say(console: Any, text: str, indent: int = 0, hang: int = 2, styles: dict[str, str] | None = None,
         style: str = "") -> None:
    """Print `text` wrapped at the console width without splitting a number from its unit (rich would
    break '1.23 s' after '1.23'); a single word longer than the line (a path) folds."""
    from rich.text import Text

    glued = GLUE.sub("\x00", text)
    width = max(20, console.width)
    lines = textwrap.wrap(glued, width=width, initial_indent=" " * indent,
                          subsequent_indent=" " * (indent + hang), break_long_words=False,
                          break_on_hyphens=False) or [""]
    for line in lines:
        out = Text(line.replace("\x00", " "), style=style)
        for word, style in (styles or {}).items():
            out.highlight_words([word], style)
        console.print(out, no_wrap=True, overflow="fold", soft_wrap=False)


def _print_header(console: Any, report: Report) -> None:
    _say(console, f"foleyscope doctor: {seconds(report.total_s)} measured",
         styles={"foleyscope doctor": "bold"})
    for key, value in header_items(report):
        _say(console, f"{key:<8} {value}", indent=1, hang=9, styles={key: "dim"})


def _print_summary(console: Any, report: Report, top: int) -> None:
    c = report.combined(top)
    if not c.ids:
        return
    console.print()
    _say(console, summary_title(c, report.total_s), styles={"Do this first:": "bold"})
    from foleyscope.doctor.combine import worth_applying

    chosen = [(i, f) for i, f in enumerate(report.findings, 1) if worth_applying(f)][: len(c.ids)]
    for i, f in chosen:
        measured = f", measured {seconds(f.measured_saving_s)}" if f.measured_saving_s is not None else ""
        _say(console, f"{i}. {f.id} (~{seconds(f.est_saving_s)}{measured}): {_short(f.fix)}", indent=1, hang=3,
             styles={f"{i}. {f.id}": "bold"})
    for note in summary_notes(c):
        _say(console, f"note: {note}", indent=1, hang=6, styles={"note:": "dim"})


def _short(fix: str, limit: int = 150) -> str:
    """A long fix cut at its first clause for the summary (the finding below prints it whole)."""
    if len(fix) <= limit:
        return fix
    cut = min((i for i in (fix.find("; "), fix.find(". ")) if 0 < i <= limit), default=-1)
    return (fix[:cut] if cut > 0 else fix[:limit].rsplit(" ", 1)[0]) + " (...)"


def _print_finding(console: Any, i: int, f: Any, total_s: float) -> None:
    """One finding as a block that reads at any width: the headline, then the title, each evidence
    number and the fix on lines of their own (a table column would split them at 80 columns)."""
    share = f.est_saving_s / total_s if total_s else 0
    measured = "; ".join(f.measured_lines())
    saves = f"saves ~{seconds(f.est_saving_s)} ({share:.0%})" if f.est_saving_s > 0 else "no saving estimated"
    _say(console, f"{i}. {f.id} ({f.severity}, step {f.step}): {saves}"
         + (f"; {measured}" if measured else ""), hang=3, styles={f"{i}. {f.id}": "bold", "tried:": "yellow"})
    _say(console, f.title, indent=3, hang=0)
    for key, value in evidence_items(f.evidence, limit=4):
        _say(console, f"· {key}: {value}", indent=3, hang=4, styles={"·": "dim", f"{key}:": "dim"})
    _say(console, f"fix: {f.fix}", indent=3, hang=5, styles={"fix:": "green"})


def print_terminal(report: Report, console: Any = None, *, top: int = 10) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    _print_header(console, report)

    if report.findings and top == 0:
        n = len(report.findings)
        console.print(f"\n{n} finding{'s' if n > 1 else ''} (listed with --top N, and in --json/--html)")
    elif report.findings:
        _print_summary(console, report, min(3, top))
        console.print("\n[bold]Findings, largest estimated saving first[/bold]")
        for i, f in enumerate(report.findings[:top], 1):
            _print_finding(console, i, f, report.total_s)
        if len(report.findings) > top:
            console.print(f"... and {len(report.findings) - top} more in --json/--html")
    else:
        console.print("\n[green]No findings[/green]: no check saw time worth saving in this run.")

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
            size(row.get("peak_mem_bytes")) if row.get("peak_mem_bytes") else "",
            (row.get("reading") or "") if bars else (row.get("reading") or "").replace("CPU-bound, ", "CPU "),
        )
    st.add_row("[bold]total[/bold]", f"[bold]{report.total_s:.2f}[/bold]", "100.0%", *[""] * (4 if bars else 3))
    console.print(st)
    _say(console, "Nested stages (indented) are part of their parent; top-level rows add up to the total.",
         hang=0, style="dim")


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
