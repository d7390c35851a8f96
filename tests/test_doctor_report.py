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
from foleyscope.doctor.render import round_to_total
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
    assert html.count("<svg") == 1 and "<polyline" in html  # timeline with utilisation curves
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
