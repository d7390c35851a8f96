"""`foleyscope doctor` end to end on the tiny engine: reports, ranking, planted input, --try-fixes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import UHD_HEVC
from findings import planted_ids, top_planted

from foleyscope.cli import main
from foleyscope.doctor.checks import all_checks
from foleyscope.stages import STAGES

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_list_checks_prints_every_id_and_docs_list_them_too(capsys):
    assert main(["doctor", "--list-checks"]) == 0
    out = capsys.readouterr().out
    docs = (DOCS / "doctor.md").read_text() + (DOCS / "doctor-input.md").read_text() + \
        (DOCS / "doctor-service.md").read_text()
    ids = all_checks()
    assert len(ids) >= 25
    for cid, (step, _line) in ids.items():
        assert cid in out, cid
        assert f"`{cid}`" in docs, f"{cid} is not documented"
        assert 0 <= step <= 5


def test_doctor_writes_json_html_and_trace_whose_numbers_add_up(make_clip, tmp_path):
    clip = make_clip(width=320, height=180, seconds=1.5, fps=25)
    r, h, t = tmp_path / "r.json", tmp_path / "r.html", tmp_path / "t.json"
    assert main(["doctor", str(clip), "--prompt", "a ball bouncing", "--steps", "3", "--dtype", "fp32",
                 "--json", str(r), "--html", str(h), "--trace", str(t)]) == 0
    report = json.loads(r.read_text())
    assert isinstance(report["findings"], list)
    for name in STAGES:
        assert name in report["stages"], name
    top = [row["seconds"] for row in report["stages"].values() if not row.get("parent")]
    assert sum(top) == pytest.approx(report["total_s"], rel=0.01)
    assert report["stages"]["denoise"]["steps"] == 3
    assert report["input"]["width"] == 320 and report["input"]["fps"] == pytest.approx(25)
    assert report["floor"]["stages"]["denoise"]["flops"] > 0
    html = h.read_text()
    assert "http://" not in html and "https://" not in html and "<svg" in html
    events = json.loads(t.read_text())
    events = events["traceEvents"] if isinstance(events, dict) else events
    spans = {e["name"] for e in events if e["ph"] == "X"}
    assert {"decode", "denoise", "vae_decode"} <= spans
    assert any(e["ph"] == "C" for e in events), "resource samples become counter events"


def test_planted_4k_hevc_mkv_is_found_first_and_try_fixes_measures_the_saving(make_clip, tmp_path, capsys):
    clip = make_clip(**UHD_HEVC)
    r = tmp_path / "r.json"
    # --dtype auto: the engine runs the dtype the probe measures fastest, so no precision finding competes
    assert main(["doctor", str(clip), "--prompt", "x", "--steps", "1", "--dtype", "auto", "--try-fixes",
                 "--repeat", "1", "--json", str(r)]) == 0
    report = json.loads(r.read_text())
    first = top_planted(report["findings"])
    assert first["id"] == "input_needs_normalising", [(f["id"], f["est_saving_s"]) for f in report["findings"]]
    assert first["step"] == 4 and "foleyscope prep" in first["fix"] and "--fps 25" in first["fix"]
    assert first["est_saving_s"] > 0
    tried = first["extra"]["try_fix"]
    assert tried["fixed_s"] < tried["baseline_s"]
    assert first["measured_saving_s"] == pytest.approx(tried["baseline_s"] - tried["fixed_s"], abs=1e-9)
    assert first["measured_saving_s"] > 0
    out = capsys.readouterr().out  # stdout is the report: no temp paths from the re-runs
    assert "foleyscope-fix-" not in out and "wrote " not in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["doctor", "{clip}"], "--prompt"),
        (["doctor", "nope.mp4", "--prompt", "x"], "no such file"),
        (["doctor", "{clip}", "--prompt", "x", "--html", "{tmp}/r.txt"], "--html"),
    ],
)
def test_doctor_bad_input(argv, message, make_clip, tmp_path, capsys):
    clip = make_clip(width=160, height=90, seconds=1.0, fps=25)
    assert main([a.format(clip=clip, tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("foleyscope: error:") and message in err[-1]


def test_doctor_server_flag_audits_a_planted_bad_server(make_clip, tmp_path):
    from planted_server import BAD, running, write_weights

    r = tmp_path / "r.json"
    # a 1 s clip keeps every engine stage short, so no engine finding competes with the planted server
    clip = make_clip(width=160, height=90, seconds=1.0, fps=25)
    with running(BAD, write_weights(tmp_path / "w.pt")) as (url, _server):
        assert main(["doctor", str(clip), "--prompt", "x", "--steps", "2", "--dtype", "auto", "--server", url,
                     "--json", str(r)]) == 0
    report = json.loads(r.read_text())
    ids = planted_ids(report["findings"])
    assert ids[:2] == ["service_serialises_requests", "service_reloads_model"], ids
    assert report["service"]["url"] == url


def test_doctor_refuses_a_negative_top(make_clip, capsys):
    clip = make_clip(width=160, height=90, seconds=1.0, fps=25)
    assert main(["doctor", str(clip), "--prompt", "x", "--top", "-1"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("foleyscope: error: --top must be 0 or more")


def test_top_zero_prints_the_count_and_no_findings_table():
    import io

    from rich.console import Console

    from foleyscope.doctor.api import diagnose
    from foleyscope.trace import stage

    def stalls() -> None:
        with stage("stuck"):
            time.sleep(0.6)

    report = diagnose(stalls, sample_hz=20)
    assert report.findings
    buf = io.StringIO()
    report.print_terminal(Console(file=buf, width=120), top=0)
    n, text = len(report.findings), buf.getvalue()
    assert "Findings" not in text and f"{n} finding{'s' if n > 1 else ''} (listed with --top N" in text


def _fixes_are_cumulative(report: dict) -> None:
    """Each tried fix is measured on top of the earlier ones that helped: its baseline runs are the runs
    of the last fix kept (the unchanged job's for the first)."""
    tried = sorted((f["extra"]["try_fix"] for f in report["findings"] if isinstance(f["extra"].get("try_fix"), dict)),
                   key=lambda t: t["order"])
    kept = None
    for t in tried:
        if kept is not None:
            assert t["baseline_runs_s"] == kept["fixed_runs_s"]
        if t["baseline_s"] - t["fixed_s"] > 0 and not t["within_noise"]:
            kept = t


def test_attention_math_is_found_and_try_fixes_reruns_in_the_findings_mode(make_clip, tmp_path):
    clip = make_clip(width=160, height=90, seconds=1.0, fps=25)
    r = tmp_path / "r.json"
    assert main(["doctor", str(clip), "--prompt", "x", "--steps", "2", "--dtype", "auto", "--attention", "math",
                 "--try-fixes", "--json", str(r)]) == 0
    _fixes_are_cumulative(json.loads(r.read_text()))
    report = json.loads(r.read_text())
    found = {f["id"]: f for f in report["findings"]}
    sdpa = found["sdpa_math_fallback"]
    assert sdpa["fix_mode"] == {"attention": "auto"} and sdpa["evidence"]["attention"] == "math"
    tried = sdpa["extra"]["try_fix"]
    assert "attention auto" in tried["change"] and tried["fixed_s"] > 0 and tried["baseline_s"] > 0
    assert len(tried["fixed_runs_s"]) == len(tried["baseline_runs_s"]) == 3, "median of 3 by default"
    assert tried["fixed_s"] == pytest.approx(sorted(tried["fixed_runs_s"])[1], abs=1e-3)
    spreads = [max(tried[k]) - min(tried[k]) for k in ("fixed_runs_s", "baseline_runs_s")]
    assert tried["spread_s"] == pytest.approx(max(spreads), abs=2e-3), "the larger of the two runs' spreads"
    helped = [f["measured_saving_s"] is None or (f["measured_saving_s"] > 0 and not f["extra"]["try_fix"]
              .get("within_noise")) for f in report["findings"]]
    assert helped == sorted(helped, reverse=True), "a fix measured not to help ranks after every other"
    assert sdpa["measured_saving_s"] == pytest.approx(tried["baseline_s"] - tried["fixed_s"], abs=1e-9)
    # a fix that is not a mode or an input change is said so, not re-run
    for f in report["findings"]:
        if not f["fix_mode"] and not f["fix_prep"]:
            assert f["measured_saving_s"] is None and "not re-run" in f["extra"]["try_fix"]
