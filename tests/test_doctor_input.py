"""Step 4 (input audit) on planted inputs: a 4K 60 fps HEVC MKV must be caught, its prep command must
fix it for real, and the estimated decode saving must match the measured one; clean inputs stay quiet."""

from __future__ import annotations

import dataclasses
import shlex
import shutil
import time
from pathlib import Path

import av
import pytest
from conftest import UHD_HEVC

from foleyscope.cli import main
from foleyscope.doctor.checks import registered
from foleyscope.doctor.checks.input import check_input
from foleyscope.media.probe import probe
from foleyscope.media.synth import SynthSpec, make_video
from foleyscope.stages import Stage


@pytest.fixture(autouse=True)
def in_a_work_folder(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Fix commands write into the current folder, as a user's shell would: a fresh one per test."""
    folder = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(folder)
    return folder


def run_fix(command: str) -> Path:
    """Run a finding's fix exactly as a user would type it, through the CLI."""
    argv = shlex.split(command)
    assert argv[:2] == ["foleyscope", "prep"]
    assert main(argv[1:]) == 0
    return Path(argv[argv.index("-o") + 1])


def decode_seconds(path: Path, repeats: int = 2) -> float:
    """Best-of wall time to decode every frame, as the doctor's sample decode does (frame threads)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            s.thread_type = "AUTO"
            for _frame in c.decode(s):
                pass
        best = min(best, time.perf_counter() - t0)
    return best


@pytest.fixture(scope="module")
def uhd_hevc(make_clip, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The planted problem: 3840x2160, 60 fps, HEVC in Matroska (half a second keeps it quick), under a
    name with a space (the fix command must quote it); the clip itself is the session's shared one."""
    path = tmp_path_factory.mktemp("uhd") / "uhd 60fps.mkv"
    shutil.copyfile(make_clip(**UHD_HEVC), path)
    return path


def by_id(findings):
    return {f.id: f for f in findings}


def test_checks_are_listed():
    checks = {c.id: c.doc for c in registered(step=4)}
    assert set(checks) == {"input_needs_normalising", "input_long_clip"}
    assert all(isinstance(v, str) and v for v in checks.values())


def test_uhd_hevc_mkv_is_found_and_prep_fixes_it_with_an_honest_estimate(uhd_hevc: Path):
    info = probe(uhd_hevc)
    findings = check_input(info, str(uhd_hevc), {}, sample_seconds=0.2)  # extrapolates 0.2 s to 0.5 s
    assert [f.id for f in findings] == ["input_needs_normalising"]
    f = findings[0]
    rules = {r["rule"]: r for r in f.evidence["reasons"]}
    assert set(rules) == {"resolution", "frame_rate", "codec", "container"}
    assert rules["resolution"]["value"] == "3840x2160" and rules["frame_rate"]["value"] == "60 fps"
    assert rules["codec"]["value"] == "HEVC" and rules["container"]["value"] == "MKV"
    assert f.severity == "critical" and f.step == 4
    assert "sample decode" in f.evidence["decode_source"]
    argv = shlex.split(f.fix)  # the path has a space: it must be quoted
    assert argv[2] == str(uhd_hevc)
    assert argv[5:] == ["--height", "720", "--fps", "25"]
    assert f.fix_prep == {"height": 720, "fps": 25.0}, "the same prep, structured for --try-fixes"

    out = run_fix(f.fix)
    fixed = probe(out)
    assert (fixed.width, fixed.height, fixed.fps, fixed.video_codec, fixed.container) == (
        1280, 720, 25.0, "h264", "mp4")
    assert check_input(fixed, str(out), {}) == []

    measured = decode_seconds(uhd_hevc) - decode_seconds(out)
    assert measured > 0
    ratio = f.est_saving_s / measured
    assert 0.5 <= ratio <= 2.0, (f.est_saving_s, measured, f.evidence["decode_source"])


def test_clean_720p25_h264_mp4_gets_nothing(tmp_path: Path):
    clip = make_video(tmp_path / "clean.mp4", SynthSpec(width=1280, height=720, fps=25, seconds=5.0))
    assert check_input(probe(clip), str(clip), {}) == []


def test_long_clip_is_its_own_finding_and_savings_add_up(tmp_path: Path):
    clip = make_video(tmp_path / "long.mp4", SynthSpec(width=160, height=90, fps=25, seconds=16.0))
    info = probe(clip)
    findings = check_input(info, str(clip), {})
    assert [f.id for f in findings] == ["input_long_clip"]
    assert shlex.split(findings[0].fix)[4] == "long_first15s.mp4", "a named output in the current folder"
    assert shlex.split(findings[0].fix)[5:] == ["--max-seconds", "15"]
    assert findings[0].severity == "info" and findings[0].est_saving_s > 0

    # The same clip as if it were 1080p50 and the pipeline had run: two findings whose savings add up
    # to the saving of doing both (no double counting), and model loading is not counted.
    heavy = dataclasses.replace(info, width=1920, height=1080, display_width=1920, display_height=1080,
                                fps=50.0)
    stages = {Stage.LOAD: 30.0, Stage.DECODE: 4.0, Stage.VISUAL_ENCODE: 10.0, Stage.DENOISE: 6.0,
              "other": 2.0, "my_marked_substage": 1.0}  # rows a stage table may hold besides the pipeline's
    got = by_id(check_input(heavy, str(clip), stages))
    assert set(got) == {"input_needs_normalising", "input_long_clip"}
    norm = got["input_needs_normalising"]
    r = norm.evidence["decode_work_ratio_after_prep"]
    assert r == pytest.approx((1280 * 720 * 25) / (1920 * 1080 * 50), rel=1e-3)
    keep = 15.0 / info.duration_s
    both = 4.0 * (1 - r * keep) + 16.0 * (1 - keep)
    assert norm.est_saving_s + got["input_long_clip"].est_saving_s == pytest.approx(both, abs=1e-3)
    # normalising alone must not trim: it keeps the whole clip
    assert shlex.split(norm.fix)[-2:] == ["--max-seconds", "16"]
    outputs = {shlex.split(f.fix)[4] for f in got.values()}
    assert outputs == {"long_normalised.mp4", "long_first15s.mp4"}, "two fixes, two files"


def test_variable_frame_rate_and_deep_pixels_are_fixed_by_prep(tmp_path: Path):
    vfr = make_video(tmp_path / "vfr.mp4", SynthSpec(width=160, height=90, fps=25, seconds=2.0, vfr=True))
    [f] = check_input(probe(vfr), str(vfr), {})
    assert [r["rule"] for r in f.evidence["reasons"]] == ["variable_frame_rate"]
    assert shlex.split(f.fix)[5:] == ["--fps", "25"]
    out = run_fix(f.fix)
    assert check_input(probe(out), str(out), {}) == []

    deep = make_video(tmp_path / "deep.mp4",
                      SynthSpec(width=160, height=90, seconds=1.0, pix_fmt="yuv420p10le"))
    [g] = check_input(probe(deep), str(deep), {})
    assert [r["rule"] for r in g.evidence["reasons"]] == ["bit_depth"]
    assert shlex.split(g.fix)[5:] == []  # prep's defaults already write 8-bit H.264
    out = run_fix(g.fix)
    assert check_input(probe(out), str(out), {}) == []


def test_portrait_keeps_a_720_short_side(tmp_path: Path):
    clip = make_video(tmp_path / "tall.mp4", SynthSpec(width=1080, height=1920, fps=25, seconds=0.4))
    [f] = check_input(probe(clip), str(clip), {})
    assert f.evidence["reasons"][0]["rule"] == "resolution"
    assert shlex.split(f.fix)[5:] == ["--height", "1280"]
    out = probe(run_fix(f.fix))
    assert (out.width, out.height) == (720, 1280)


def test_rotation_metadata_is_fixed_by_prep(tmp_path: Path):
    clip = make_video(tmp_path / "phone.mp4", SynthSpec(width=320, height=180, seconds=0.4, rotation=90))
    info = probe(clip)
    assert (info.width, info.height, info.rotation) == (180, 320, 90)  # stored turned, shown upright
    [f] = check_input(info, str(clip), {})
    assert [r["rule"] for r in f.evidence["reasons"]] == ["rotation"]
    assert f.severity == "warning" and shlex.split(f.fix)[5:] == [] and f.fix_prep == {}
    fixed = run_fix(f.fix)
    out = probe(fixed)
    assert (out.width, out.height, out.rotation) == (320, 180, 0)
    assert check_input(out, str(fixed), {}) == []
