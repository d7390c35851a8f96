"""Step 4 (input audit) and the wasted-decode check on generated media: a 4K 60 fps HEVC MKV must be
caught with a saving that holds when its own fix command is run; a long clip that also needs
normalising gets ONE prep command; a bit-rate finding never returns on the file its fix wrote; a
pipeline that decodes twice is priced against one measured pass; clean inputs stay quiet."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import UHD_HEVC
from planted.input import decode_twice, one_pass, pipeline, write_grainy

from foleyscope.cli import main
from foleyscope.doctor.api import DiagnoseContext, diagnose
from foleyscope.doctor.checks import registered
from foleyscope.doctor.checks.input import ARTICLE, check_input
from foleyscope.doctor.decode_timing import reference_decode
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


def decode_seconds(path: Path, repeats: int = 3) -> float:
    """Best-of wall time of the engine's decode (one extract_frames pass at the model's frame sizes)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        one_pass(path)
        best = min(best, time.perf_counter() - t0)
    return best


def bits_per_pixel(path: Path) -> float:
    info = probe(path)
    return info.bit_rate / (info.width * info.height * info.fps)


@pytest.fixture(scope="module")
def uhd_hevc(make_clip, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The planted problem: 3840x2160, 60 fps, HEVC in Matroska (half a second keeps it quick), under a
    name with a space (the fix command must quote it); the clip itself is the session's shared one."""
    path = tmp_path_factory.mktemp("uhd") / "uhd 60fps.mkv"
    shutil.copyfile(make_clip(**UHD_HEVC), path)
    return path


def by_id(findings):
    return {f.id: f for f in findings}


def test_input_checks_are_step_4_and_the_decode_check_is_step_2():
    assert {c.id for c in registered(step=4)} == {"input_needs_normalising", "input_long_clip"}
    assert "decode_wasted_work" in {c.id for c in registered(step=2)}
    assert all(c.doc for c in registered())


def test_uhd_hevc_mkv_is_found_and_its_measured_saving_holds_when_the_fix_is_run(uhd_hevc: Path):
    findings = check_input(probe(uhd_hevc), str(uhd_hevc), {}, sample_seconds=0.25)  # half the clip, scaled
    assert [f.id for f in findings] == ["input_needs_normalising"]
    f = findings[0]
    rules = {r["rule"]: r for r in f.evidence["reasons"]}
    assert set(rules) == {"resolution", "frame_rate", "codec", "container"}
    assert rules["resolution"]["value"] == "3840x2160" and rules["frame_rate"]["value"] == "60 fps"
    assert rules["codec"]["value"] == "HEVC" and rules["container"]["value"] == "MKV"
    assert f.severity == "critical" and f.step == 4
    assert f.evidence["decode_ratio_after_prep"] < 0.25, "measured: prep's copy decodes in a quarter of the time"
    argv = shlex.split(f.fix)  # the path has a space: it must be quoted
    assert argv[2] == str(uhd_hevc) and argv[4] == "uhd 60fps_normalised.mp4"
    assert argv[5:] == ["--height", "720", "--fps", "25"]
    assert f.fix_prep == {"height": 720, "fps": 25.0}, "the same prep, structured for --try-fixes"

    out = run_fix(f.fix)
    fixed = probe(out)
    assert (fixed.width, fixed.height, fixed.fps, fixed.video_codec, fixed.container) == (
        1280, 720, 25.0, "h264", "mp4")
    assert check_input(fixed, str(out), {}) == []

    measured = decode_seconds(uhd_hevc) - decode_seconds(out)
    assert 0.7 <= f.est_saving_s / measured <= 1.4, (f.est_saving_s, measured, f.evidence["measured"])


def test_clean_720p25_h264_mp4_gets_nothing(tmp_path: Path):
    clip = make_video(tmp_path / "clean.mp4", SynthSpec(width=1280, height=720, fps=25, seconds=5.0))
    assert check_input(probe(clip), str(clip), {}) == []


def test_a_long_clip_alone_is_trimmed_to_a_named_file_with_a_positive_saving(tmp_path: Path):
    clip = make_video(tmp_path / "long.mp4", SynthSpec(width=160, height=90, fps=25, seconds=16.0))
    [f] = check_input(probe(clip), str(clip), {})
    assert f.id == "input_long_clip" and f.severity == "info" and f.est_saving_s > 0
    assert shlex.split(f.fix)[4:] == ["long_first15s.mp4", "--max-seconds", "15"]
    assert f.fix_prep == {"max_seconds": 15.0}
    assert "lower_bound" in f.evidence, "no model stage ran: the saving is decode's alone"


def test_a_long_clip_needing_normalising_gets_one_prep_command_and_savings_that_add_up(tmp_path: Path):
    clip = make_video(tmp_path / "long50.mp4", SynthSpec(width=160, height=90, fps=50, seconds=16.0))
    info = probe(clip)
    stages = {Stage.LOAD: 30.0, Stage.VISUAL_ENCODE: 10.0, Stage.TEXT_ENCODE: 1.0, Stage.DENOISE: 6.0,
              "other": 2.0, "my_marked_substage": 1.0}  # rows a stage table may hold besides the pipeline's
    got = by_id(check_input(info, str(clip), stages, windowed=True))
    assert set(got) == {"input_needs_normalising", "input_long_clip"}
    norm, long = got["input_needs_normalising"], got["input_long_clip"]
    assert norm.fix == long.fix == f"foleyscope prep {clip} -o long50_prepped.mp4 --fps 25 --max-seconds 15"
    assert norm.fix_prep == long.fix_prep == {"fps": 25.0, "max_seconds": 15.0}
    assert shlex.split(norm.evidence["keep_whole_clip"])[4:] == ["long50_normalised.mp4", "--fps", "25",
                                                                  "--max-seconds", "16"]
    # 16 s is two engine windows: denoise halves; visual encode scales by 15/16; load and text do not move
    assert long.evidence["stages_saved_s"] == {"visual_encode": pytest.approx(10 / 16, abs=1e-3),
                                               "denoise": pytest.approx(3.0, abs=1e-3)}
    d, r, keep = norm.evidence["decode_s"], norm.evidence["decode_ratio_after_prep"], 15.0 / info.duration_s
    # prep's copy decodes r times as long per second (r > 1 on a noisy tiny clip: normalising saves nothing)
    r = min(r, 1.0)
    assert norm.est_saving_s + long.est_saving_s == pytest.approx(d * (1 - r * keep) + 10 / 16 + 3.0, abs=2e-3)

    out = run_fix(norm.fix)
    fixed = probe(out)
    assert fixed.fps == 25.0 and fixed.duration_s <= ARTICLE.window_s
    assert check_input(fixed, str(out), {}) == []


def test_fix_outputs_go_to_the_out_dir_when_one_is_given(tmp_path: Path):
    clip = make_video(tmp_path / "fast.mp4", SynthSpec(width=160, height=90, fps=50, seconds=1.0))
    [f] = check_input(probe(clip), str(clip), {}, out_dir="fixes")
    assert shlex.split(f.fix)[4] == str(Path("fixes") / "fast_normalised.mp4")


def test_a_bit_rate_finding_does_not_return_on_the_file_its_own_fix_wrote(tmp_path: Path):
    clip = write_grainy(tmp_path / "grain.mp4", 1280, 720, 25, 1.0, grain=12.0, crf=0)
    [f] = check_input(probe(clip), str(clip), {})
    assert [r["rule"] for r in f.evidence["reasons"]] == ["bit_rate"]
    assert f.evidence["decode_ratio_after_prep"] <= 0.8 and f.est_saving_s > 0
    out = run_fix(f.fix)
    assert check_input(probe(out), str(out), {}) == [], "the fixed file is not flagged again"


def test_decoding_twice_is_priced_against_one_measured_pass_and_the_one_pass_twin_is_quiet(tmp_path: Path):
    clip = make_video(tmp_path / "hd.mp4", SynthSpec(width=1280, height=720, fps=25, seconds=2.0))
    ctx = DiagnoseContext(video_path=str(clip), input_info=probe(clip))
    wasteful = diagnose(pipeline, clip, decode_twice, context=ctx, sample_hz=0)
    found = by_id(wasteful.findings)
    assert "input_needs_normalising" not in found and "input_long_clip" not in found, "720p25 H.264 is fine"
    f = found["decode_wasted_work"]
    assert "prep" not in f.fix and "extract_frames" in f.fix
    ev = f.evidence
    assert ev["decode_stage_s"] == pytest.approx(wasteful.stages["decode"]["seconds"], abs=1e-3)
    assert ev["compared"] == "CPU" and ev["ratio"] >= 1.5
    assert ev["ratio"] == pytest.approx(ev["decode_stage_cpu_s"] / ev["one_pass_cpu_s"], rel=0.01)
    assert f.est_saving_s == pytest.approx(ev["decode_stage_s"] * (1 - 1 / ev["ratio"]), rel=0.01)
    efficient = diagnose(pipeline, clip, context=ctx, sample_hz=0)
    assert "decode_wasted_work" not in by_id(efficient.findings)
    assert efficient.stages["decode"]["seconds"] == pytest.approx(ev["one_pass_s"], rel=0.5)


def test_a_decode_slowed_by_other_processes_is_not_mistaken_for_wasted_work(tmp_path: Path):
    clip = make_video(tmp_path / "hd.mp4", SynthSpec(width=1280, height=720, fps=25, seconds=3.0))
    one_pass_s = reference_decode(str(clip), 3.0, probe(clip).duration_s).best_s
    hogs: list[subprocess.Popen] = []

    def under_load() -> None:
        """The efficient pipeline while other processes spin on every core; they end before the checks."""
        hogs.extend(subprocess.Popen([sys.executable, "-c", "while True: pass"])
                    for _ in range(2 * len(os.sched_getaffinity(0))))
        try:
            pipeline(clip)
        finally:
            for hog in hogs:
                hog.kill()
                hog.wait()

    report = diagnose(under_load, context=DiagnoseContext(video_path=str(clip), input_info=probe(clip)),
                      sample_hz=0)
    slowed = report.stages["decode"]["seconds"]
    assert slowed >= 1.5 * one_pass_s and slowed - one_pass_s >= 0.1, "the load must have slowed the decode"
    assert "decode_wasted_work" not in by_id(report.findings)


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
