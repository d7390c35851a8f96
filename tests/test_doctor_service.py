"""Step 5 (service audit) against planted servers started on loopback: the bad one (a global lock and a
model re-read on every request) must be caught and ranked first, the clean one must stay quiet."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from planted_server import BAD, BAD_SILENT, CLEAN, SLOW_UPLOAD, running, write_weights

from foleyscope.doctor.checks import registered
from foleyscope.doctor.checks.service import check_service, cut_head
from foleyscope.doctor.finding import rank
from foleyscope.errors import FoleyscopeError, MediaError
from foleyscope.media.synth import SynthSpec, make_video

PROMPT = "footsteps on gravel"


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_weights(tmp_path_factory.mktemp("weights") / "model.pt")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("clip") / "clip.mp4",
                      SynthSpec(width=320, height=180, seconds=2.0))


def test_checks_are_listed():
    ids = {c.id for c in registered(step=5)}
    assert {"service_reloads_model", "service_serialises_requests", "service_upload_dominates"} <= ids


def test_bad_server_reload_and_serialisation_found_and_ranked_first(weights: Path, clip: Path):
    with running(BAD, weights) as (url, server):
        m, findings = check_service(url, str(clip), PROMPT, n_parallel=4, timeout_s=30)
        assert server.requests == 1 + 2 + 4  # it reports processing time: no short-clip request needed
    ids = [f.id for f in findings]
    assert ids[:2] == ["service_serialises_requests", "service_reloads_model"]
    assert findings == rank(findings)
    assert "service_upload_dominates" not in ids  # loopback upload of a small clip is quick

    one = m["warm_total_s"]
    assert one >= BAD.load_sleep_s + BAD.process_base_s + 2 * BAD.process_per_video_s
    reload, serial = {f.id: f for f in findings}["service_reloads_model"], findings[0]
    # the load is load_sleep_s of sleep + a real torch.load of a 4 MB state dict; nothing else takes long
    assert 0.9 * BAD.load_sleep_s <= reload.est_saving_s <= BAD.load_sleep_s + 0.3
    assert reload.severity == "critical" and reload.evidence["reported_processing_s"] < one
    p = m["parallel"]
    assert p["effective_concurrency"] < 1.3
    assert p["wall_s"] >= 3.5 * one
    assert p["first_to_last_latency"] < 0.4  # answered one after another
    assert serial.est_saving_s == pytest.approx(p["wall_s"] - one, abs=1e-3)
    assert serial.est_saving_s >= 2.5 * one


def test_reload_found_without_reported_timing_from_a_shorter_clip(weights: Path, clip: Path):
    with running(BAD_SILENT, weights) as (url, server):
        m, findings = check_service(url, str(clip), PROMPT, n_parallel=3, timeout_s=30)
        assert server.requests == 1 + 2 + 1 + 3
    ids = [f.id for f in findings]
    assert ids == ["service_reloads_model"]  # concurrent, so no serialisation finding
    assert findings[0].severity == "warning"  # inferred, not reported by the server
    fixed = BAD_SILENT.load_sleep_s + BAD_SILENT.process_base_s
    assert fixed - 0.05 <= m["fixed_cost_s"] <= fixed + 0.25
    assert m["per_video_second_s"] == pytest.approx(BAD_SILENT.process_per_video_s, abs=0.05)
    assert m["parallel"]["effective_concurrency"] > 2.0


@pytest.mark.parametrize("report", ["server-timing", "json"])
def test_reported_times_are_read_from_server_timing_and_json(weights: Path, clip: Path, report: str):
    config = replace(BAD_SILENT, report=report)
    with running(config, weights) as (url, server):
        m, findings = check_service(url, str(clip), PROMPT, n_parallel=2, timeout_s=30)
        assert server.requests == 1 + 2 + 2  # processing time known: no short clip
    expected_processing = config.process_base_s + 2.0 * config.process_per_video_s
    assert m["reported_processing_s"] == pytest.approx(expected_processing, abs=0.05)
    [f] = findings
    assert f.id == "service_reloads_model" and f.severity == "critical"
    if report == "server-timing":  # the server names its load: that is the evidence
        assert m["reported_load_s"] == pytest.approx(f.est_saving_s)
    assert config.load_sleep_s <= f.est_saving_s <= config.load_sleep_s + 0.3


def test_clean_server_is_quiet(weights: Path, clip: Path):
    with running(CLEAN, weights) as (url, _):
        m, findings = check_service(url, str(clip), PROMPT, n_parallel=4, timeout_s=30)
    assert findings == []
    assert m["warm_overhead_s"] < 0.1
    assert m["parallel"]["effective_concurrency"] > 2.5


def test_slow_upload_is_found(weights: Path, tmp_path: Path):
    big = make_video(tmp_path / "big.mkv", SynthSpec(width=1280, height=720, seconds=2.0, codec="mjpeg",
                                                     pix_fmt="yuvj420p"))  # about 1 MB
    size = big.stat().st_size
    with running(SLOW_UPLOAD, weights) as (url, _):
        m, findings = check_service(url, str(big), PROMPT, n_parallel=2, timeout_s=30)
    assert [f.id for f in findings] == ["service_upload_dominates"]
    expected_upload = size / SLOW_UPLOAD.read_bytes_per_s
    assert 0.7 * expected_upload <= m["warm_upload_s"] <= 1.5 * expected_upload + 0.1
    assert m["upload_share"] >= 0.5
    f = findings[0]
    assert 0 < f.est_saving_s < m["warm_upload_s"]


def test_errors_are_one_line(weights: Path, clip: Path, tmp_path: Path):
    with running(CLEAN, weights) as (url, _):
        with pytest.raises(FoleyscopeError, match="answered 404"):
            check_service(url.replace("/generate", "/nope"), str(clip), PROMPT)
        with pytest.raises(MediaError, match="no such file"):
            check_service(url, str(tmp_path / "missing.mp4"), PROMPT)
    with pytest.raises(FoleyscopeError, match="request failed"):
        check_service(url, str(clip), PROMPT, timeout_s=5)  # server is gone


def test_cut_head_copies_the_first_part(clip: Path, tmp_path: Path):
    d = cut_head(clip, tmp_path / "head.mp4", 0.5)
    assert 0.4 <= d <= 0.7
