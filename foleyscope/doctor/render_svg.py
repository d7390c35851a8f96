"""The HTML report's charts as inline SVG (no scripts): the timeline of stages and steps over the
utilisation curves, the time of each denoising step, and --try-fixes' baseline against fixed runs.
Each stage keeps one colour everywhere, assigned in order of first start so no two stages share one."""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, Any

from foleyscope.doctor.render import seconds

if TYPE_CHECKING:
    from foleyscope.doctor.report import Report

W, LEFT, RIGHT = 1000, 130, 12
LANE, CHART = 22, 70
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#86bcb6", "#d37295", "#8cd17d", "#b6992d", "#499894", "#fabfd2", "#79706e")
OTHER = "#c8c8c8"  # untraced time


def stage_colors(report: Report) -> dict[str, str]:
    """Stage name -> colour, distinct for the first len(PALETTE) stages; beyond that, spread hues."""
    names = [n for n in report.stages if n != "other"]
    names += [s["name"] for s in report.spans if s["name"] not in names]
    colors = {}
    for i, name in enumerate(dict.fromkeys(names)):
        colors[name] = PALETTE[i] if i < len(PALETTE) else f"hsl({(i * 137.5) % 360:.0f},55%,55%)"
    colors["other"] = OTHER
    return colors


def _x(t: float, total: float) -> float:
    return LEFT + (t / total if total > 0 else 0) * (W - LEFT - RIGHT)


def _text(x: float, y: float, text: str, anchor: str = "start", fill: str = "#222", cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" fill="{fill}"{c}>{escape(text)}</text>'


def _svg(body: list[str], height: float, label: str) -> str:
    return (f'<svg viewBox="0 0 {W} {height:.0f}" width="100%" role="img" aria-label="{escape(label)}">'
            + "".join(body) + "</svg>")


def _curve_chart(title: str, series: list[tuple[str, str, list[tuple[float, float]]]], total: float,
                 top: float, vmax: float, unit: str) -> str:
    """A utilisation chart: the title and its legend in the left margin, the scale outside the plot."""
    vmax = vmax or 1.0
    parts = [
        f'<rect x="{LEFT}" y="{top}" width="{W - LEFT - RIGHT}" height="{CHART}" fill="#fafafa" stroke="#ddd"/>',
        _text(4, top + 12, title, cls="b"),
        _text(LEFT - 4, top + 10, f"{vmax:.0f}{unit}", "end", "#777"),
        _text(LEFT - 4, top + CHART, "0", "end", "#777"),
    ]
    for i, (label, color, pts) in enumerate(series):
        if pts:
            xy = " ".join(f"{_x(t, total):.1f},{top + CHART - min(v, vmax) / vmax * CHART:.1f}" for t, v in pts)
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{xy}">'
                         f"<title>{escape(label)}</title></polyline>")
        parts.append(f'<rect x="4" y="{top + 19 + 13 * i}" width="10" height="3" fill="{color}"/>'
                     + _text(18, top + 25 + 13 * i, label, fill="#444"))
    return "".join(parts)


def _lane_label(depth: int, thread: int) -> str:
    label = "stages" if depth == 0 else "└ nested" if depth == 1 else f"└ nested, level {depth}"
    return label + (f" (thread {thread})" if thread else "")


def timeline_svg(report: Report, colors: dict[str, str]) -> str:
    """Stages by nesting depth (one lane each), steps, then CPU / GPU / memory / disk over the same time."""
    total = report.total_s or 1e-9
    spans = [s for s in report.spans if s.get("end_s") is not None]
    lanes = sorted({(int(s.get("thread", 0)), int(s.get("depth", 0))) for s in spans})
    lane_y = {key: 8 + i * (LANE + 4) for i, key in enumerate(lanes)}
    y = 8 + len(lanes) * (LANE + 4)
    body: list[str] = []
    for s in spans:
        ly = lane_y[(int(s.get("thread", 0)), int(s.get("depth", 0)))]
        x0, x1 = _x(s["start_s"], total), _x(s["end_s"], total)
        body.append(f'<rect x="{x0:.1f}" y="{ly}" width="{max(x1 - x0, 0.5):.1f}" height="{LANE}" '
                    f'fill="{colors.get(s["name"], OTHER)}"><title>{escape(s["name"])}: '
                    f'{seconds(s["end_s"] - s["start_s"])} (from {s["start_s"]:.3f} s)</title></rect>')
        if x1 - x0 > 6.5 * len(s["name"]) + 6:
            body.append(_text(x0 + 3, ly + 15, s["name"], fill="#111"))
    for (thread, depth), ly in lane_y.items():
        body.append(_text(4, ly + 15, _lane_label(depth, thread)))
    if report.steps:
        body.append(_text(4, y + 11, "denoising steps"))
        for st in report.steps:
            x0, x1 = _x(st["start_s"], total), _x(st["end_s"], total)
            body.append(f'<rect x="{x0:.1f}" y="{y + 2}" width="{max(x1 - x0 - 0.5, 0.5):.1f}" height="12" '
                        f'fill="#666"><title>step {st["index"]}: {seconds(st["seconds"])}</title></rect>')
        y += 20
    samples = report.samples
    cores = max((len(s.get("cpu_percent_per_core") or []) for s in samples), default=1) or 1
    cpu = [("this process", "#e15759", [(s["t"], s["proc_cpu_percent"] / cores) for s in samples]),
           ("whole machine", "#9a9a9a", [(s["t"], sum(s["cpu_percent_per_core"]) / len(s["cpu_percent_per_core"]))
                                         for s in samples if s.get("cpu_percent_per_core")])]
    y += 8
    body.append(_curve_chart(f"CPU, {cores} cores", cpu, total, y, 100, "%"))
    y += CHART + 10
    gpu = [(s["t"], s["gpu_util"]) for s in samples if s.get("gpu_util") is not None]
    if gpu:
        dec = [(s["t"], s["gpu_dec_util"]) for s in samples if s.get("gpu_dec_util") is not None]
        body.append(_curve_chart("GPU", [("GPU util", "#59a14f", gpu), ("NVDEC", "#76b7b2", dec)], total, y,
                                 100, "%"))
        y += CHART + 10
    rss = [(s["t"], s["rss_bytes"] / 2**20) for s in samples]
    if rss:
        series = [("RSS", "#4e79a7", rss)]
        gmem = [(s["t"], s["gpu_mem_bytes"] / 2**20) for s in samples if s.get("gpu_mem_bytes") is not None]
        if gmem:
            series.append(("GPU memory", "#59a14f", gmem))
        body.append(_curve_chart("memory", series, total, y, max(v for _, v in rss + gmem), " MiB"))
        y += CHART + 10
    disk = [(s["t"], s["disk_read_bps"] / 1e6) for s in samples if s.get("disk_read_bps") is not None]
    if disk and max(v for _, v in disk) > 0:
        body.append(_curve_chart("disk read", [("read", "#f28e2b", disk)], total, y, max(v for _, v in disk),
                                 " MB/s"))
        y += CHART + 10
    for i in range(6):
        t = total * i / 5
        body.append(_text(_x(t, total), y + 12, f"{t:.2f} s", "start" if i == 0 else "end" if i == 5 else "middle"))
    return _svg(body, y + 20, "timeline")


def legend(colors: dict[str, str], names: list[str]) -> str:
    """One swatch per stage (HTML, so it wraps with the page)."""
    items = "".join(f'<span class=key><i style="background:{colors.get(n, OTHER)}"></i>{escape(n)}</span>'
                    for n in names)
    return f'<p class=legend aria-label="stage colours">{items}</p>'


def steps_svg(report: Report, colors: dict[str, str]) -> str:
    """One bar per denoising step, its height the step's time: a slow first step (warm-up) or a drift
    over the steps shows at a glance."""
    steps = report.steps
    if not steps:
        return ""
    h, top, bottom = 150, 14, 28
    vmax = max(float(s["seconds"]) for s in steps) or 1e-9
    n = len(steps)
    slot = (W - LEFT - RIGHT) / n
    def dur(v: float) -> str:
        return f"{v * 1e3:.1f} ms" if vmax < 1 else seconds(v)

    body = [f'<rect x="{LEFT}" y="{top}" width="{W - LEFT - RIGHT}" height="{h}" fill="#fafafa" stroke="#ddd"/>',
            _text(LEFT - 6, top + 10, dur(vmax), "end", "#777"),
            _text(LEFT - 6, top + h, "0", "end", "#777")]
    mean = sum(float(s["seconds"]) for s in steps) / n
    stages = list(dict.fromkeys(str(s.get("stage")) for s in steps))
    for i, name in enumerate(stages):
        body.append(f'<rect x="4" y="{top + 40 + 16 * i}" width="10" height="10" fill="{colors.get(name, OTHER)}"/>'
                    + _text(18, top + 49 + 16 * i, name, fill="#444"))
    label_every = max(1, round(n / 25))
    for i, st in enumerate(steps):
        secs = float(st["seconds"])
        bh = secs / vmax * h
        x = LEFT + i * slot
        body.append(f'<rect x="{x + slot * 0.1:.1f}" y="{top + h - bh:.1f}" width="{max(slot * 0.8, 0.5):.1f}" '
                    f'height="{bh:.1f}" fill="{colors.get(str(st.get("stage")), OTHER)}">'
                    f'<title>{escape(str(st.get("stage")))} step {st["index"]}: {dur(secs)}</title></rect>')
        if i % label_every == 0:
            body.append(_text(x + slot / 2, top + h + 13, str(st["index"]), "middle", "#555"))
    my = top + h - mean / vmax * h
    body.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{my:.1f}" y2="{my:.1f}" stroke="#333" '
                f'stroke-dasharray="4 3"/>' + _text(W - RIGHT - 4, my - 4, f"mean {dur(mean)}", "end", "#333", "halo"))
    body.append(_text(LEFT + (W - LEFT - RIGHT) / 2, top + h + 26, "step index", "middle", "#555"))
    return _svg(body, top + h + bottom + 4, "time per denoising step")


def try_fix_svg(rows: list[tuple[str, dict[str, Any], bool]]) -> str:
    """--try-fixes, one row per fix: the baseline's median and the fixed run's median as bars on one
    scale, each run as a dot (the spread), the difference written above them."""
    if not rows:
        return ""
    values = [v for _, t, _ in rows for k in ("baseline_s", "fixed_s") if isinstance(t.get(k), (int, float))
              for v in (t[k],)]
    values += [v for _, t, _ in rows for k in ("baseline_runs_s", "fixed_runs_s") for v in t.get(k) or []]
    vmax = max(values, default=1.0) * 1.05 or 1.0
    span = W - LEFT - RIGHT
    bar = 13
    body: list[str] = []
    y = 4
    for fid, t, helped in rows:
        saved = float(t.get("baseline_s") or 0.0) - float(t.get("fixed_s") or 0.0)
        verdict = f"saves {seconds(saved)}" if helped else f"tried: did not help ({-saved:+.2f} s)"
        spread = f", runs spread {seconds(t['spread_s'])}" if t.get("spread_s") else ""
        body.append(f'<text x="4" y="{y + 12}" class="halo"><tspan class="b">{escape(fid)}</tspan><tspan '
                    f'fill="{"#2a6e2a" if helped else "#b00020"}">: {escape(verdict + spread)}</tspan></text>')
        y += 18
        for label, key, runs, color in (("baseline", "baseline_s", "baseline_runs_s", "#9a9a9a"),
                                        ("fixed", "fixed_s", "fixed_runs_s", "#59a14f" if helped else "#e15759")):
            v = float(t.get(key) or 0.0)
            body.append(f'<rect x="{LEFT}" y="{y}" width="{v / vmax * span:.1f}" height="{bar}" fill="{color}">'
                        f"<title>{label}: median {seconds(v)}</title></rect>")
            body.append(_text(LEFT - 6, y + 11, f"{label} {seconds(v)}", "end", "#444"))
            for r in t.get(runs) or []:
                body.append(f'<circle cx="{LEFT + r / vmax * span:.1f}" cy="{y + bar / 2}" r="2.5" fill="#222">'
                            f"<title>{label} run: {seconds(r)}</title></circle>")
            y += bar + 3
        y += 12
    for i in range(5):
        v = vmax * i / 4
        body.insert(0, f'<line x1="{LEFT + v / vmax * span:.1f}" x2="{LEFT + v / vmax * span:.1f}" y1="4" '
                       f'y2="{y - 8}" stroke="#e8e8e8"/>')  # first: the bars and labels draw over it
        body.append(_text(LEFT + v / vmax * span, y + 4, f"{v:.2f} s",
                          "start" if i == 0 else "end" if i == 4 else "middle", "#555"))
    return _svg(body, y + 10, "baseline against fixed runs")
