"""The HTML report: one self-contained file (inline CSS and SVG, no scripts, no external URLs) that opens
offline. It reads top to bottom: what was run where, what to do first, every finding with its evidence
in units, then the charts (timeline, steps, --try-fixes) and the stage table behind the numbers."""

from __future__ import annotations

import json
from html import escape
from typing import TYPE_CHECKING, Any

from foleyscope.doctor.combine import worth_applying
from foleyscope.doctor.render import (
    GLUE,
    evidence_items,
    format_value,
    header_items,
    seconds,
    size,
    summary_notes,
    summary_title,
)
from foleyscope.doctor.render_svg import legend, stage_colors, steps_svg, timeline_svg, try_fix_svg

if TYPE_CHECKING:
    from foleyscope.doctor.report import Report

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:20px;margin-bottom:8px}h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:4px 6px;
vertical-align:top;text-align:left}th{background:#f4f4f4}td.n{text-align:right;white-space:nowrap}
table.head td{border:0;padding:2px 6px}table.head td:first-child{color:#666;width:80px}
.sev-critical{color:#b00020;font-weight:bold}.sev-warning{color:#a05a00}.sev-info{color:#555}
.bar{height:10px}.dim{color:#777}code{background:#f4f4f4;padding:0 3px;word-break:break-word}
.ev{white-space:nowrap}.ev .k{color:#666}.fix{font-family:ui-monospace,monospace;font-size:13px}
.first{background:#f3f8f1;border:1px solid #cfe3c8;border-radius:6px;padding:10px 16px;margin-top:16px}
.first h2{margin:0 0 6px}.first p{margin:2px 0}.first ol{margin:6px 0;padding-left:22px}.first li{margin:3px 0}
.bad{color:#b00020}pre{background:#f7f7f7;padding:8px;overflow:auto;max-height:320px}
.legend{margin:4px 0 12px}.key{display:inline-block;margin:2px 14px 2px 0;white-space:nowrap}
.key i{display:inline-block;width:12px;height:12px;margin-right:5px;vertical-align:-1px;border-radius:2px}
table.findings th{white-space:nowrap}td.s{text-align:right}td.s div{font-size:12px}
table.findings td:nth-child(1){width:2%}table.findings td:nth-child(2){width:12%}
table.findings td:nth-child(3){width:3%}table.findings td:nth-child(4){width:23%}
table.findings td:nth-child(5){width:32%}table.findings td:nth-child(6){width:28%}
svg text{font:12px system-ui,sans-serif}svg .b{font-weight:600}
svg .halo{paint-order:stroke;stroke:#fff;stroke-width:4px;stroke-linejoin:round}
.nw{white-space:nowrap}
"""


def _t(text: str) -> str:
    """Escaped text whose numbers keep their units on the same line (render.GLUE's rule)."""
    return GLUE.sub("&nbsp;", escape(text))


def _header(report: Report) -> str:
    def cell(key: str, value: str) -> str:
        if key != "command":
            return escape(value)
        words = " ".join(f"<span class=nw>{escape(w)}</span>" for w in value.split(" "))
        return f"<code>{words}</code>"  # lines break between words, never after an option's dashes

    rows = "".join(f"<tr><td>{escape(k)}</td><td>{cell(k, v)}</td></tr>" for k, v in header_items(report))
    return f"<table class=head>{rows}</table>"


def _first(report: Report) -> str:
    """The "do this first" box: the top fixes, what they save together, and why that is not the sum."""
    c = report.combined()
    if not c.ids:
        return ""
    chosen = [(i, f) for i, f in enumerate(report.findings, 1) if worth_applying(f)][: len(c.ids)]
    items = []
    for i, f in chosen:
        measured = f", measured {seconds(f.measured_saving_s)}" if f.measured_saving_s is not None else ""
        items.append(f'<li value="{i}"><b>{escape(f.id)}</b> (~{seconds(f.est_saving_s)}{measured}): '
                     f"<span class=fix>{escape(f.fix)}</span></li>")
    notes = "".join(f"<p class=dim>{_t(n)}</p>" for n in summary_notes(c))
    return (f"<section class=first><h2>{_t(summary_title(c, report.total_s))}</h2>"
            f"<ol>{''.join(items)}</ol>{notes}</section>")


def _evidence(ev: dict[str, Any]) -> str:
    """Each value with its unit; nested detail (probe records) as compact JSON."""
    shown = dict(evidence_items(ev))
    lines = []
    for k, v in ev.items():
        text = shown.get(str(k))
        if text is None:
            raw = json.dumps(v, default=str)
            text = raw if len(raw) <= 300 else raw[:297] + "..."
            lines.append(f"<span class=k>{escape(str(k))}:</span> <code>{escape(text)}</code>")
        else:
            cls = " class=ev" if len(text) <= 40 else ""  # a number and its unit stay on one line
            lines.append(f"<span{cls}><span class=k>{escape(str(k))}:</span> {escape(text)}</span>")
    return "<br>".join(lines)


def _findings_table(report: Report) -> str:
    if not report.findings:
        return "<p>No findings: no check saw time worth saving in this run.</p>"
    rows = []
    for i, f in enumerate(report.findings, 1):
        lines = f.measured_lines()
        saves = f"~{seconds(f.est_saving_s)}" if f.est_saving_s > 0 else "<span class=dim>none estimated</span>"
        measured = "".join(f"<div class={'dim' if f.helped() else 'bad'}>{_t(m)}</div>" for m in lines)
        rows.append(
            f"<tr><td class=n>{i}</td><td class=s>{saves}{measured}</td><td class=n>{f.step}</td>"
            f'<td><b>{escape(f.id)}</b> <span class="sev-{escape(f.severity)}">{escape(f.severity)}</span>'
            f"<br>{_t(f.title)}</td><td>{_evidence(f.evidence)}</td><td class=fix>{escape(f.fix)}</td></tr>"
        )
    return ("<table class=findings><tr><th>#</th><th>saves</th><th>step</th><th>finding</th>"
            "<th>evidence</th><th>fix</th></tr>" + "".join(rows) + "</table>")


def _stage_table(report: Report, colors: dict[str, str]) -> str:
    rows = []
    for name, r in report.stages.items():
        depth = int(r.get("depth") or 0)
        label = ("&nbsp;&nbsp;&nbsp;" * depth + ("└ " if depth else "") + escape(name)
                 + (" <span class=dim>(untraced)</span>" if r.get("untraced") else ""))
        sps = r.get("steps_per_s")
        rows.append(
            f"<tr><td>{label}</td><td class=n>{r['seconds']:.3f}</td><td class=n>{r['share']:.1%}</td>"
            f'<td style="width:28%"><div class="bar" style="width:{r["share"] * 100:.1f}%;'
            f'background:{colors.get(name, "#999")}"></div></td>'
            f"<td class=n>{r.get('count', '')}</td><td class=n>{f'{sps:.2f}' if sps else ''}</td>"
            f"<td class=n>{size(r.get('peak_mem_bytes')) if r.get('peak_mem_bytes') else ''}</td>"
            f"<td>{escape(str(r.get('dtype') or ''))}</td><td>{escape(r.get('reading') or '')}</td></tr>"
        )
    return ("<table><tr><th>stage</th><th>seconds</th><th>share</th><th></th><th>runs</th><th>steps/s</th>"
            "<th>peak mem</th><th>dtype</th><th>reading</th></tr>" + "".join(rows)
            + f"<tr><th>total</th><th class=n>{report.total_s:.3f}</th><th></th><th></th><th></th><th></th>"
              "<th></th><th></th><th></th></tr></table>")


def _try_fixes(report: Report) -> str:
    rows = [(f.id, f.extra["try_fix"], f.helped()) for f in report.findings
            if isinstance(f.extra.get("try_fix"), dict) and f.extra["try_fix"].get("baseline_s") is not None]
    if not rows:
        return ""
    runs = max(len(t.get("fixed_runs_s") or []) for _, t, _ in rows)
    return ("<h2>--try-fixes: baseline against fixed</h2><p class=dim>Bars: the median of "
            f"{runs} run{'s' if runs != 1 else ''}; dots: each run. Green: the fix made the run faster; "
            "red: it did not.</p>" + try_fix_svg(rows))


def _environment(report: Report) -> str:
    env = report.environment
    keys = ("device", "cpu", "cpu_matrix_flags", "logical_cores", "usable_cores", "num_threads", "torch",
            "torch_cuda", "cuda_available", "cuda_device", "gpus_visible", "gpu_visible_but_unused",
            "memory_needed_bytes", "memory_free_bytes", "param_devices", "param_dtypes")
    rows = []
    for k in keys:
        if k in env:
            text = format_value(k, env[k])
            value = escape(text) if text is not None else f"<code>{escape(json.dumps(env[k], default=str))}</code>"
            rows.append(f"<tr><td>{escape(k)}</td><td>{value}</td></tr>")
    return f"<table class=head>{''.join(rows)}</table>"


def render_html(report: Report) -> str:
    colors = stage_colors(report)
    names = [n for n in colors if n != "other"]
    extra = {"floor": report.floor, "input": report.input, "service": report.service, "meta": report.meta}
    steps = steps_svg(report, colors)
    n = len(report.findings)
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>foleyscope doctor: {seconds(report.total_s)}</title><style>{CSS}</style></head><body>"
        f"<h1>foleyscope doctor: {seconds(report.total_s)} measured</h1>" + _header(report)
        + _first(report)
        + f"<h2>Findings ({n}), largest estimated saving first</h2>" + _findings_table(report)
        + "<h2>Timeline</h2>" + legend(colors, names) + timeline_svg(report, colors)
        + (f"<h2>Denoising steps ({len(report.steps)})</h2>" + steps if steps else "")
        + _try_fixes(report)
        + "<h2>Stages</h2><p class=dim>Indented stages are part of their parent; the top-level rows add "
          "up to the total.</p>" + _stage_table(report, colors)
        + "<h2>Environment</h2>" + _environment(report)
        + "<details><summary>Floor, input, service, meta (raw)</summary><pre>"
        + escape(json.dumps(extra, indent=1, default=str)) + "</pre></details>"
        + "</body></html>"
    )
