"""The HTML report: one self-contained file (inline CSS and SVG, no scripts, no external URLs) that opens
offline: findings, a timeline of stages and steps over the utilisation curves, the stage table."""

from __future__ import annotations

import hashlib
import json
from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from foleyscope.doctor.report import Report

W, LEFT, RIGHT = 1000, 110, 12
LANE, CHART = 22, 70
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f",
           "#ff9da7", "#bab0ac")

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:4px 6px;
vertical-align:top;text-align:left}th{background:#f4f4f4}td.n{text-align:right;white-space:nowrap}
.sev-critical{color:#b00020;font-weight:bold}.sev-warning{color:#a05a00}.sev-info{color:#555}
.bar{background:#4e79a7;height:10px}.dim{color:#777}code{background:#f4f4f4;padding:0 3px}
pre{background:#f7f7f7;padding:8px;overflow:auto;max-height:320px}
svg text{font:11px system-ui,sans-serif}
"""


def _color(name: str) -> str:
    return PALETTE[int(hashlib.md5(name.encode()).hexdigest(), 16) % len(PALETTE)]


def _x(t: float, total: float) -> float:
    return LEFT + (t / total if total > 0 else 0) * (W - LEFT - RIGHT)


def _curve(points: list[tuple[float, float]], total: float, top: float, height: float, vmax: float,
           color: str, label: str) -> str:
    if not points:
        return ""
    pts = " ".join(f"{_x(t, total):.1f},{top + height - min(v, vmax) / vmax * height:.1f}" for t, v in points)
    return (f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{pts}">'
            f"<title>{escape(label)}</title></polyline>")


def _chart(title: str, series: list[tuple[str, str, list[tuple[float, float]]]], total: float, top: float,
           vmax: float, unit: str) -> str:
    parts = [
        f'<rect x="{LEFT}" y="{top}" width="{W - LEFT - RIGHT}" height="{CHART}" fill="#fafafa" '
        'stroke="#ddd"/>',
        f'<text x="4" y="{top + 12}">{escape(title)}</text>',
        f'<text x="{W - RIGHT - 3}" y="{top + 11}" fill="#777" text-anchor="end">'
        f"{vmax:.0f}{escape(unit)}</text>",
        f'<text x="{W - RIGHT - 3}" y="{top + CHART - 3}" fill="#777" text-anchor="end">0</text>',
    ]
    legend_x = 4
    for i, (label, color, pts) in enumerate(series):
        parts.append(_curve(pts, total, top, CHART, vmax, color, label))
        parts.append(f'<text x="{legend_x}" y="{top + 26 + 12 * i}" fill="{color}">{escape(label)}</text>')
    return "".join(parts)


def timeline_svg(report: Report) -> str:
    total = report.total_s or 1e-9
    spans = [s for s in report.spans if s.get("end_s") is not None]
    lanes = sorted({(int(s.get("thread", 0)), int(s.get("depth", 0))) for s in spans})
    lane_y = {key: 20 + i * (LANE + 2) for i, key in enumerate(lanes)}
    y = 20 + len(lanes) * (LANE + 2)
    body: list[str] = []
    for s in spans:
        ly = lane_y[(int(s.get("thread", 0)), int(s.get("depth", 0)))]
        x0, x1 = _x(s["start_s"], total), _x(s["end_s"], total)
        secs = s["end_s"] - s["start_s"]
        body.append(
            f'<rect x="{x0:.1f}" y="{ly}" width="{max(x1 - x0, 0.5):.1f}" height="{LANE}" '
            f'fill="{_color(s["name"])}"><title>{escape(s["name"])}: {secs:.3f} s '
            f'(from {s["start_s"]:.3f} s)</title></rect>'
        )
        if x1 - x0 > 7 * len(s["name"]):
            body.append(f'<text x="{x0 + 3:.1f}" y="{ly + 15}" fill="#111">{escape(s["name"])}</text>')
    for (thread, depth), ly in lane_y.items():
        label = f"stages d{depth}" + (f" t{thread}" if thread else "")
        body.append(f'<text x="4" y="{ly + 15}">{escape(label)}</text>')
    if report.steps:
        body.append(f'<text x="4" y="{y + 12}">steps</text>')
        for st in report.steps:
            x0, x1 = _x(st["start_s"], total), _x(st["end_s"], total)
            secs = st["end_s"] - st["start_s"]
            body.append(f'<rect x="{x0:.1f}" y="{y + 2}" width="{max(x1 - x0 - 0.5, 0.5):.1f}" height="12" '
                        f'fill="#888"><title>step {st["index"]}: {secs:.4f} s</title></rect>')
        y += 20
    samples = report.samples
    cores = max((len(s.get("cpu_percent_per_core") or []) for s in samples), default=1) or 1
    cpu_series = [
        ("process", "#e15759",
         [(s["t"], s["proc_cpu_percent"] / cores) for s in samples]),
        ("system", "#bab0ac",
         [(s["t"], sum(s["cpu_percent_per_core"]) / len(s["cpu_percent_per_core"]))
          for s in samples if s.get("cpu_percent_per_core")]),
    ]
    y += 8
    body.append(_chart("CPU % of all", cpu_series, total, y, 100, "%"))
    y += CHART + 10
    gpu = [(s["t"], s["gpu_util"]) for s in samples if s.get("gpu_util") is not None]
    if gpu:
        dec = [(s["t"], s["gpu_dec_util"]) for s in samples if s.get("gpu_dec_util") is not None]
        body.append(_chart("GPU %", [("GPU util", "#59a14f", gpu), ("NVDEC", "#76b7b2", dec)], total, y,
                           100, "%"))
        y += CHART + 10
    rss = [(s["t"], s["rss_bytes"] / 2**20) for s in samples]
    if rss:
        vmax = max(v for _, v in rss) or 1
        series = [("RSS MiB", "#4e79a7", rss)]
        gmem = [(s["t"], s["gpu_mem_bytes"] / 2**20) for s in samples if s.get("gpu_mem_bytes") is not None]
        if gmem:
            vmax = max(vmax, max(v for _, v in gmem))
            series.append(("GPU MiB", "#59a14f", gmem))
        body.append(_chart("memory", series, total, y, vmax, " MiB"))
        y += CHART + 10
    disk = [(s["t"], s["disk_read_bps"] / 1e6) for s in samples if s.get("disk_read_bps") is not None]
    if disk and max(v for _, v in disk) > 0:
        top_rate = max(v for _, v in disk)
        body.append(_chart("disk read", [("MB/s", "#f28e2b", disk)], total, y, top_rate, " MB/s"))
        y += CHART + 10
    ticks = []
    for i in range(6):
        t = total * i / 5
        anchor = "start" if i == 0 else "end" if i == 5 else "middle"
        ticks.append(f'<text x="{_x(t, total):.1f}" y="{y + 12}" text-anchor="{anchor}">{t:.2f} s</text>')
    height = y + 20
    return (f'<svg viewBox="0 0 {W} {height}" width="100%" role="img" aria-label="timeline">'
            + "".join(body) + "".join(ticks) + "</svg>")


def _findings_table(report: Report) -> str:
    if not report.findings:
        return "<p>No findings: no check saw time worth saving in this run.</p>"
    rows = []
    for i, f in enumerate(report.findings, 1):
        ev = "<br>".join(f"{escape(str(k))}: <code>{escape(json.dumps(v, default=str))}</code>"
                         for k, v in f.evidence.items())
        saving = "<br>".join([f"{f.est_saving_s:.2f} s", *map(escape, f.measured_lines())])
        rows.append(
            f"<tr><td class=n>{i}</td><td class=n>{saving}</td><td class=n>{f.step}</td>"
            f'<td><b>{escape(f.id)}</b> <span class="sev-{escape(f.severity)}">{escape(f.severity)}</span>'
            f"<br>{escape(f.title)}</td><td>{ev}</td><td>{escape(f.fix)}</td></tr>"
        )
    return ("<table><tr><th>#</th><th>saves ~</th><th>step</th><th>finding</th><th>evidence</th>"
            "<th>fix</th></tr>" + "".join(rows) + "</table>")


def _stage_table(report: Report) -> str:
    rows = []
    for name, r in report.stages.items():
        depth = int(r.get("depth") or 0)
        label = "&nbsp;&nbsp;" * depth + escape(name) + (" <span class=dim>(untraced)</span>"
                                                          if r.get("untraced") else "")
        sps = r.get("steps_per_s")
        rows.append(
            f"<tr><td>{label}</td><td class=n>{r['seconds']:.3f}</td><td class=n>{r['share']:.1%}</td>"
            f'<td style="width:30%"><div class="bar" style="width:{r["share"] * 100:.1f}%;'
            f'background:{_color(name)}"></div></td>'
            f"<td class=n>{r.get('count', '')}</td><td class=n>{f'{sps:.2f}' if sps else ''}</td>"
            f"<td class=n>{(r.get('peak_mem_bytes') or 0) / 2**20:.0f} MiB</td>"
            f"<td>{escape(str(r.get('dtype') or ''))}</td><td>{escape(r.get('reading') or '')}</td></tr>"
        )
    return ("<table><tr><th>stage</th><th>seconds</th><th>share</th><th></th><th>runs</th><th>steps/s</th>"
            "<th>peak mem</th><th>dtype</th><th>reading</th></tr>" + "".join(rows)
            + f"<tr><th>total</th><th class=n>{report.total_s:.3f}</th><th></th><th></th><th></th><th></th>"
              "<th></th><th></th><th></th></tr></table>")


def render_html(report: Report) -> str:
    env = report.environment
    device = env.get("cuda_device") if env.get("cuda_available") else env.get("cpu")
    summary = {k: env.get(k) for k in ("torch", "torch_cuda", "cuda_available", "logical_cores",
                                       "gpus_visible", "param_devices", "param_dtypes")}
    extra = {"floor": report.floor, "input": report.input, "service": report.service, "meta": report.meta}
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>foleyscope doctor: {report.total_s:.2f} s</title><style>{CSS}</style></head><body>"
        f"<h1>foleyscope doctor: {report.total_s:.2f} s measured</h1>"
        f"<p class=dim>{escape(str(env.get('torch')))} on {escape(str(device))}; "
        f"{len(report.findings)} findings, {len(report.samples)} samples.</p>"
        "<h2>Findings, largest estimated saving first</h2>" + _findings_table(report)
        + "<h2>Timeline</h2>" + timeline_svg(report)
        + "<h2>Stages</h2><p class=dim>Indented stages are part of their parent; the top-level rows add "
          "up to the total.</p>" + _stage_table(report)
        + "<h2>Environment</h2><pre>" + escape(json.dumps(summary, indent=1, default=str)) + "</pre>"
        + "<details><summary>Floor, input, service, meta</summary><pre>"
        + escape(json.dumps(extra, indent=1, default=str)) + "</pre></details>"
        + "</body></html>"
    )
