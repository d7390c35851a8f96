"""The doctor's outputs: JSON (findings + stage names, numbers that add up), one-file offline HTML, a
Chrome trace that trace viewers accept, and a terminal report whose rows add up to the total."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import torch
from findings import top_planted
from rich.console import Console

from foleyscope.doctor import checks
from foleyscope.doctor.api import diagnose
from foleyscope.doctor.combine import combined_saving
from foleyscope.doctor.finding import Finding, rank
from foleyscope.doctor.render import format_value, round_to_total
from foleyscope.doctor.report import Report
from foleyscope.stages import Stage
from foleyscope.trace import ModelLoad, emit, stage, step

DOCS = Path(__file__).resolve().parents[1] / "docs" / "doctor.md"


def _work() -> str:
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 64)
    with stage(Stage.DECODE):
        time.sleep(0.05)
    with stage(Stage.DENOISE):
        for i in range(4):
            with step(i, 4):
                lin(torch.randn(8, 64))
                time.sleep(0.01)
        with stage("nested"):
            time.sleep(0.02)
    time.sleep(0.03)  # untraced
    with stage("stuck"):
        time.sleep(0.6)  # a stall, so there is a finding to render
    emit(ModelLoad("denoiser", 0.0))
    return "done"


@pytest.fixture(scope="module")
def report() -> Report:
    return diagnose(_work, sample_hz=20)


def test_json_has_ranked_findings_and_stage_timings_that_add_up(report: Report, tmp_path: Path) -> None:
    path = report.to_json(tmp_path / "r.json")
    data = json.loads(path.read_text())
    assert data["schema"] == "foleyscope.doctor.report/1" and report.result == "done"
    assert top_planted(data["findings"])["id"] == "stall"
    assert [f["est_saving_s"] for f in data["findings"]] == sorted(
        (f["est_saving_s"] for f in data["findings"]), reverse=True)
    for f in data["findings"]:
        assert set(f) >= {"id", "step", "severity", "title", "evidence", "fix", "est_saving_s"}
    stages = data["stages"]
    assert list(stages) == ["decode", "denoise", "nested", "stuck", "other"]
    assert stages["nested"]["parent"] == "denoise" and stages["other"]["untraced"] is True
    top = [n for n, row in stages.items() if row["parent"] is None]
    assert sum(stages[n]["seconds"] for n in top) == pytest.approx(data["total_s"], rel=0.01)
    assert sum(stages[n]["share"] for n in top) == pytest.approx(1.0, rel=0.01)
    assert stages["other"]["seconds"] >= 0.03
    assert stages["denoise"]["steps"] == 4 and stages["denoise"]["steps_per_s"] > 0
    assert len(data["steps"]) == 4 and len(data["spans"]) == 4
    assert data["samples"] and {"t", "stage", "proc_cpu_percent", "rss_bytes"} <= set(data["samples"][0])
    assert data["events"][0]["kind"] == "model_load"
    assert data["environment"]["torch"] == torch.__version__
    env = data["environment"]
    assert env["param_dtypes"] == {"fp32": 64 * 64 + 64} and env["device"] == "cpu"
    assert env["gpu_visible_but_unused"] is False  # no GPU on this machine
    assert 0 < env["memory_needed_bytes"] < env["memory_free_bytes"]
    # The file reads back into a Report that renders the same findings.
    again = Report.from_dict(data)
    assert [f.id for f in again.findings] == [f["id"] for f in data["findings"]]


def test_html_is_one_offline_file(report: Report, tmp_path: Path) -> None:
    html = report.to_html(tmp_path / "r.html").read_text()
    assert list(tmp_path.iterdir()) == [tmp_path / "r.html"]
    assert html.startswith("<!doctype html>") and html.rstrip().endswith("</html>")
    assert not re.search(r"https?://", html)
    assert not re.search(r"<script|<link|<img|<iframe|@import|url\(", html, re.I)
    assert html.count("<svg") == 2 and "<polyline" in html  # timeline with utilisation curves, per-step chart
    for name in ("decode", "denoise", "nested", "stuck"):
        assert f">{name}<" in html or f"{name}:" in html
    assert "stall" in html and "other" in html


def test_trace_is_valid_chrome_trace_events(report: Report, tmp_path: Path) -> None:
    data = json.loads(report.to_trace(tmp_path / "t.json").read_text())
    events = data["traceEvents"]
    assert {e["ph"] for e in events} <= {"X", "C", "M", "i"}
    spans = [e for e in events if e["ph"] == "X"]
    for e in events:
        assert isinstance(e["pid"], int) and isinstance(e["name"], str)
        if e["ph"] != "M":
            assert isinstance(e["ts"], (int, float)) and e["ts"] >= 0
        if e["ph"] == "X":
            assert isinstance(e["dur"], (int, float)) and e["dur"] >= 0 and isinstance(e["tid"], int)
        if e["ph"] == "C":
            assert e["args"] and all(isinstance(v, (int, float)) for v in e["args"].values())
    stuck = next(e for e in spans if e["name"] == "stuck")
    assert stuck["dur"] == pytest.approx(report.stages["stuck"]["seconds"] * 1e6, rel=1e-3)  # microseconds
    assert sum(e["cat"] == "step" for e in spans) == 4
    assert sum(e["name"] == "cpu %" for e in events) == len(report.samples)
    nested = next(e for e in spans if e["name"] == "nested")
    denoise = next(e for e in spans if e["name"] == "denoise")
    assert denoise["ts"] <= nested["ts"] and nested["ts"] + nested["dur"] <= denoise["ts"] + denoise["dur"]


def test_terminal_rows_add_up_to_the_total(report: Report) -> None:
    console = Console(record=True, width=200)
    report.print_terminal(console)
    text = console.export_text()
    assert "stall" in text and "other (untraced)" in text
    rows = {m.group(1): float(m.group(2)) for m in re.finditer(r"│ (\w+)[^│]*│\s+([\d.]+) │", text)}
    top = ["decode", "denoise", "stuck", "other"]
    assert round(sum(rows[n] for n in top), 2) == rows["total"] == round(report.total_s, 2)


def test_round_to_total_keeps_the_sum() -> None:
    vals = [0.333, 0.333, 0.334, 1.0049]
    out = round_to_total(vals, sum(vals))
    assert round(sum(out), 2) == round(sum(vals), 2)
    assert all(abs(a - b) < 0.011 for a, b in zip(out, vals, strict=True))


def test_every_check_is_registered_and_documented() -> None:
    registry = checks.all_checks()
    docs = DOCS.read_text()
    for chk in checks.registered():
        cid, line = chk.id, chk.doc
        assert re.fullmatch(r"[a-z][a-z0-9_]*", cid) and line
        assert registry[cid] == (chk.step, line)
        assert f"`{cid}`" in docs, f"{cid} missing from docs/doctor.md"
    assert [registry[c][0] for c in registry] == sorted(registry[c][0] for c in registry)


def test_a_fix_measured_not_to_help_is_said_so_and_ranked_last() -> None:
    from foleyscope.doctor.finding import Finding, rank

    def finding(fid: str, est: float, measured: float | None) -> Finding:
        return Finding(fid, 3, "warning", fid, {}, "fix", est, measured_saving_s=measured)

    big_but_useless, small, untried = finding("a", 5.0, -0.09), finding("b", 1.0, 0.8), finding("c", 0.5, None)
    assert [f.id for f in rank([big_but_useless, small, untried])] == ["b", "c", "a"]
    assert big_but_useless.measured_lines() == ["tried: did not help (+0.09 s)"]
    assert small.measured_lines() == ["measured 0.80 s"]


def test_the_terminal_report_reads_at_80_columns(report: Report) -> None:
    console = Console(record=True, width=80)
    report.print_terminal(console)
    lines = console.export_text().splitlines()
    assert max(len(line) for line in lines) <= 80
    first = next(i for i, line in enumerate(lines) if line.startswith("1. stall"))
    assert "saves ~" in lines[first] and any(line.strip().startswith("fix:") for line in lines[first:first + 8])
    table = lines[next(i for i, line in enumerate(lines) if line.strip() == "Stages"):]
    rows = [line for line in table if line.split()[:1] in (["decode"], ["denoise"], ["stuck"], ["total"])]
    assert len(rows) == 4 and all(re.search(r"\d+\.\d\d\s+\d+\.\d%", row) for row in rows), rows


# -- the report people read: header, "do this first", units, charts -------------------------------------
def _f(fid: str, saving: float, stage: str | list[str] | None = None, measured: float | None = None) -> Finding:
    ev: dict = {} if stage is None else {"stage": stage} if isinstance(stage, str) else {"stages": stage}
    return Finding(fid, 2, "warning", fid, ev, f"fix {fid}", saving, measured_saving_s=measured)


STAGES = {"load": {"seconds": 1.0, "parent": None}, "denoise": {"seconds": 2.0, "parent": None},
          "attn": {"seconds": 1.0, "parent": "denoise"}, "decode": {"seconds": 0.5, "parent": None}}


def test_fixes_on_the_same_stage_combine_instead_of_adding_up() -> None:
    c = combined_saving([_f("a", 1.0, "denoise"), _f("b", 1.0, ["denoise", "decode"]), _f("c", 0.3, "load")],
                        STAGES, total_s=4.0)
    # a and b share denoise: 2.5 s of stage time (denoise + decode), each removing 1 s of it
    assert c.ids == ("a", "b", "c") and [g.ids for g in c.groups] == [("a", "b"), ("c",)]
    assert c.groups[0].stage_s == pytest.approx(2.5)
    assert c.groups[0].seconds == pytest.approx(2.5 * (1 - (1 - 1 / 2.5) ** 2))  # 1.6, not 2.0
    assert c.seconds == pytest.approx(1.6 + 0.3) and c.separate_s == pytest.approx(2.3)


def test_a_fix_to_a_nested_stage_overlaps_its_parent() -> None:
    c = combined_saving([_f("whole", 1.0, "denoise"), _f("inner", 1.0, "attn")], STAGES, total_s=4.0)
    assert [g.ids for g in c.groups] == [("whole", "inner")] and c.groups[0].stage_s == 2.0
    assert c.seconds == pytest.approx(1.5)


def test_no_combined_saving_exceeds_its_stage_or_the_run() -> None:
    over_stage = combined_saving([_f("a", 5.0, "decode")], STAGES, total_s=4.0)
    assert over_stage.seconds == pytest.approx(0.5)  # a saving cannot remove more than the stage takes
    over_run = combined_saving([_f("a", 3.0), _f("b", 3.0), _f("c", 2.0, "load")], STAGES, total_s=4.0)
    assert over_run.seconds == pytest.approx(4.0) and over_run.separate_s == pytest.approx(8.0)


def test_findings_without_a_stage_are_groups_of_their_own() -> None:
    c = combined_saving([_f("a", 0.2), _f("b", 0.3), _f("unknown", 0.1, "nowhere")], STAGES, total_s=4.0)
    assert [g.ids for g in c.groups] == [("a",), ("b",), ("unknown",)]
    assert c.seconds == pytest.approx(0.6)


def test_only_the_top_fixes_that_help_count_and_a_measured_saving_replaces_the_estimate() -> None:
    useless, zero = _f("useless", 9.0, measured=-0.1), _f("zero", 0.0)
    c = combined_saving([_f("a", 0.5, measured=0.2), useless, zero, _f("b", 0.3), _f("c", 0.2), _f("d", 0.1)],
                        STAGES, total_s=4.0)
    assert c.ids == ("a", "b", "c") and c.measured_ids == ("a",)
    assert c.seconds == pytest.approx(0.2 + 0.3 + 0.2)


@pytest.mark.parametrize(("key", "value", "text"), [
    ("denoise_s", 1.2345, "1.23 s"), ("step_s", 0.0042, "4.2 ms"), ("peak_mem_bytes", 3 * 2**30, "3.0 GiB"),
    ("bytes", 5 * 2**20, "5.0 MiB"), ("matmul_gflops", 121.4, "121 GFLOP/s"), ("peak_flops_per_s", 2.5e11,
    "250 GFLOP/s"), ("measured_speedup", 3.52, "3.52x"), ("ratio", 40, "40x"), ("share", 0.771, "77.1%"),
    ("proc_cpu_percent", 180.0, "180.0%"), ("disk_read_mb_s", 12.34, "12.3 MB/s"),
    ("steps_per_s", 4.5, "4.5/s"), ("read_rate_bps", 2.5e7, "25.0 MB/s"), ("bit_rate_bps", 64668,
    "65 kbit/s"), ("loads", 2, "2"), ("stages", ["a", "b"], "a, b"), ("by_stage_s", {"a": 0.2}, "a 0.20 s"),
    ("baseline_runs_s", [1.0, 1.25], "1.00 s, 1.25 s"), ("gpu_visible", False, "no")])
def test_evidence_values_carry_their_units(key: str, value: object, text: str) -> None:
    assert format_value(key, value) == text


def _dressed(report: Report) -> Report:
    """The fixture's report as the CLI would write it, with a header, exactly two findings (the planted
    stall and one more) sharing a stage, and a --try-fixes measurement."""
    r = Report.from_dict(report.to_dict())
    r.meta.update(prompt="a ball bouncing", command="foleyscope doctor in.mp4 --prompt 'a ball bouncing'")
    r.input = {"path": "/videos/in.mp4", "width": 640, "height": 360, "video_codec": "h264", "fps": 25.0,
               "duration_s": 5.0, "size_bytes": 40418}
    tried = {"baseline_s": 1.2, "fixed_s": 0.9, "spread_s": 0.04, "baseline_runs_s": [1.2, 1.21, 1.19],
             "fixed_runs_s": [0.9, 0.88, 0.92], "prep_s": None}
    long_title = "the stuck stage spends 0.60 s of 1.23 s sleeping " * 3
    planted = [f for f in r.findings if f.id == "stall"]  # what else a loaded machine adds is not this test's
    r.findings = rank([*planted, Finding("slow_stuck", 2, "warning", long_title,
                                            {"stage": "stuck", "idle_s": 0.2, "peak_mem_bytes": 2**30},
                                            "--dtype bf16", 0.2, 0.3, extra={"try_fix": tried})])
    return r


def test_the_terminal_report_starts_with_what_ran_where_and_what_to_do_first(report: Report) -> None:
    console = Console(record=True, width=80)
    _dressed(report).print_terminal(console)
    text = console.export_text()
    head = text[: text.index("Findings")]
    assert "input    /videos/in.mp4 (640x360 h264, 25 fps, 5.00 s, 39.5 KiB)" in head
    assert 'prompt   "a ball bouncing"' in head and "command  foleyscope doctor in.mp4" in head
    assert re.search(r"machine  .+; \d+ (of \d+ )?cores.*threads", head)
    c = _dressed(report).combined()
    assert f"Do this first: these 2 fixes together save ~{c.seconds:.2f} s" in head
    assert "stall and slow_stuck both act on stuck" in head and "measured by --try-fixes: slow_stuck" in head
    assert "· peak_mem_bytes: 1.0 GiB" in text  # evidence with units, on its own line


@pytest.mark.parametrize("width", [60, 67, 72, 80])
def test_no_number_is_split_from_its_unit_at_narrow_widths(report: Report, width: int) -> None:
    console = Console(record=True, width=width)
    _dressed(report).print_terminal(console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= width
    assert not re.search(r"\d\s*\n\s*(s|ms|MiB|GiB|%)\b", text)
    assert " ".join(text.split()).count("spends 0.60 s of 1.23 s sleeping") == 3  # wrapped, nothing lost


def test_the_html_has_the_header_summary_legend_and_charts(report: Report, tmp_path: Path) -> None:
    html = _dressed(report).to_html(tmp_path / "r.html").read_text()
    assert "/videos/in.mp4" in html and "a ball bouncing" in html and "--prompt" in html
    assert "Do this first" in html and "both act on stuck" in html
    assert "stages d0" not in html and ">stages<" in html and "nested" in html
    assert html.count("<svg") == 3  # timeline, steps, --try-fixes
    assert 'aria-label="time per denoising step"' in html and html.count("step index") == 1
    assert 'aria-label="baseline against fixed runs"' in html and "baseline 1.20&nbsp;s" not in html
    assert "baseline 1.20 s" in html and "fixed 0.90 s" in html
    legend = re.search(r'<p class=legend.*?</p>', html)
    assert legend and all(f"</i>{n}<" in legend.group(0) for n in ("decode", "denoise", "nested", "stuck"))
    colours = re.findall(r'<i style="background:([^"]+)"></i>', legend.group(0))
    assert len(colours) == len(set(colours)) == 4  # one distinct colour per stage
    assert "1.0 GiB" in html and "peak_mem_bytes" in html


def test_the_json_states_the_combined_saving(report: Report, tmp_path: Path) -> None:
    r = _dressed(report)
    data = json.loads(r.to_json(tmp_path / "r.json").read_text())
    assert data["summary"]["ids"][:2] == ["stall", "slow_stuck"] and data["summary"]["measured_ids"] == ["slow_stuck"]
    assert data["summary"]["seconds"] == pytest.approx(r.combined().seconds, abs=1e-3)
    assert data["summary"]["seconds"] <= data["total_s"]
    assert Report.from_dict(data).meta["prompt"] == "a ball bouncing"
