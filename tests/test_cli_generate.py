"""`foleyscope generate` finds every input and output problem before a model loads: one error line,
exit 2, nothing written. Batches probe every item first and say what they skip."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import av
import pytest
from test_cli_errors import assert_one_error_line

from foleyscope.cli import main

SMALL = dict(width=160, height=90, seconds=1.0, fps=25)


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make loading a model fail the test: these checks must all happen before it."""
    from foleyscope.engine.pipeline import FoleyPipeline

    def refuse(cls, *args, **kwargs):
        raise AssertionError("a model was loaded before the inputs and outputs were checked")

    monkeypatch.setattr(FoleyPipeline, "load", classmethod(refuse))


def _generate(*argv: object) -> int:
    return main(["generate", *map(str, argv), "--steps", "1", "--dtype", "fp32"])


def test_mux_onto_the_input_is_refused_before_any_model_loads(make_clip, tmp_path, capsys, no_model):
    clip = Path(shutil.copy(make_clip(**SMALL), tmp_path / "in.mp4"))
    rc = _generate(clip, "--prompt", "x", "-o", tmp_path / "a.wav", "--mux", clip)
    assert_one_error_line(capsys, rc, "overwrite the input")
    assert os.listdir(tmp_path) == ["in.mp4"]


def test_mux_container_that_cannot_hold_the_codec_is_refused_before_any_model_loads(
        make_clip, tmp_path, capsys, no_model):
    vp8 = make_clip(ext=".webm", codec="libvpx", **SMALL)
    out = tmp_path / "out"
    rc = _generate(vp8, "--prompt", "x", "-o", out / "a.wav", "--mux", out / "a.mp4")
    line = assert_one_error_line(capsys, rc, "a.mp4")
    assert ".mkv" in line and ".webm" in line  # it names what would work
    assert not out.exists()


def test_mux_into_webm(make_clip, tmp_path, capsys):
    vp8 = make_clip(ext=".webm", codec="libvpx", **SMALL)
    assert _generate(vp8, "--prompt", "x", "-o", tmp_path / "a.wav", "--mux", tmp_path / "a.webm") == 0
    with av.open(str(tmp_path / "a.webm")) as f:
        assert f.streams.video[0].codec_context.name == "vp8" and len(f.streams.audio) == 1


@pytest.mark.parametrize("seed", [str(2**70), str(2**63), "-1"])
def test_seed_out_of_range_is_one_line(make_clip, capsys, no_model, seed):
    rc = _generate(make_clip(**SMALL), "--prompt", "x", "--seed", seed)
    assert_one_error_line(capsys, rc, "--seed must be 0 to 2**63-1")


def test_steps_are_limited_and_the_limit_is_documented(make_clip, capsys, no_model):
    rc = main(["generate", str(make_clip(**SMALL)), "--prompt", "x", "--steps", "1001"])
    assert_one_error_line(capsys, rc, "--steps must be 1 to 1000")
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    assert "1 to 1000" in " ".join(capsys.readouterr().out.split())
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "1000" in readme


def test_batch_folder_takes_every_video_and_lists_what_it_skips(make_clip, tmp_path, capsys):
    folder, out = tmp_path / "clips", tmp_path / "out"
    folder.mkdir()
    shutil.copy(make_clip(ext=".mpg", codec="mpeg1video", **SMALL), folder / "a.mpg")
    shutil.copy(make_clip(ext=".ts", codec="mpeg2video", **SMALL), folder / "b.ts")
    shutil.copy(make_clip(**SMALL), folder / "c.mp4")
    shutil.copy(make_clip(**SMALL), folder / ".hidden.mp4")
    (folder / "notes.txt").write_text("shot list\n")
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "sub").mkdir()
    assert _generate("--batch", folder, "--prompt", "x", "--out-dir", out) == 0
    assert sorted(os.listdir(out)) == ["a.wav", "b.wav", "c.wav"]
    err = capsys.readouterr().err.splitlines()
    model = next(i for i, line in enumerate(err) if line.startswith("model:"))
    skip = next(i for i, line in enumerate(err) if line.startswith("skipping 2 of 5 files"))
    assert skip < model, "the skip list is printed before any model loads"
    assert err[skip + 1].startswith("  empty.mp4: ") and err[skip + 2].startswith("  notes.txt: ")
    assert not any("hidden" in line for line in err)


def test_batch_mux_folder_picks_a_container_that_holds_each_codec(make_clip, tmp_path, capsys):
    folder, out = tmp_path / "clips", tmp_path / "out"
    folder.mkdir()
    shutil.copy(make_clip(ext=".webm", codec="libvpx", **SMALL), folder / "v.webm")  # VP8: not in .mp4
    shutil.copy(make_clip(ext=".flv", codec="flv", **SMALL), folder / "f.flv")  # FLV1: in none of them
    rc = _generate("--batch", folder, "--prompt", "x", "--out-dir", out, "--mux", out / "videos")
    err = capsys.readouterr().err.splitlines()
    assert rc == 2 and err[-1] == "foleyscope: error: 1 of 2 videos failed (see above)"
    flv = next(i for i, line in enumerate(err) if line.startswith(f"foleyscope: error: {folder / 'f.flv'} -> "))
    assert flv < next(i for i, line in enumerate(err) if line.startswith("model:"))
    assert os.listdir(out / "videos") == ["v.webm"] and sorted(os.listdir(out)) == ["v.wav", "videos"]


def test_batch_csv_rows_are_probed_before_any_model_loads(make_clip, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a video\n")
    shutil.copy(make_clip(**SMALL), tmp_path / "good.mp4")
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("video,prompt\ngood.mp4,knock\nmissing.mp4,knock\nnotes.txt,knock\n")
    out = tmp_path / "out"
    rc = _generate("--batch", csv_path, "--out-dir", out)
    err = capsys.readouterr().err.splitlines()
    assert rc == 2 and err[-1] == "foleyscope: error: 2 of 3 videos failed (see above)"
    model = next(i for i, line in enumerate(err) if line.startswith("model:"))
    errors = [i for i, line in enumerate(err) if line.startswith("foleyscope: error:")]
    assert len(errors) == 3 and errors[1] < model, err
    assert "missing.mp4" in err[errors[0]] and "notes.txt" in err[errors[1]]
    assert os.listdir(out) == ["good.wav"]


def test_batch_csv_where_nothing_can_run_loads_no_model(tmp_path, capsys, no_model):
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("video,prompt\nmissing.mp4,knock\nother.mp4,knock\n")
    rc = _generate("--batch", csv_path, "--out-dir", tmp_path / "out")
    err = capsys.readouterr().err.splitlines()
    assert rc == 2 and len(err) == 3 and "none of its 2 videos" in err[-1]


def test_csv_saved_by_a_spreadsheet_with_a_byte_order_mark(make_clip, tmp_path):
    shutil.copy(make_clip(**SMALL), tmp_path / "clip.mp4")
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("video,prompt\r\nclip.mp4,door knock\r\n", encoding="utf-8-sig")
    assert _generate("--batch", csv_path, "--out-dir", tmp_path / "out") == 0
    assert (tmp_path / "out" / "clip.wav").is_file()


def test_a_prompt_longer_than_the_text_window_is_warned_about_once(make_clip, tmp_path, capsys):
    prompt = "footsteps on wet gravel, " * 400
    assert _generate(make_clip(**SMALL), "--prompt", prompt, "-o", tmp_path / "a.wav") == 0
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("foleyscope: warning:")]
    assert len(warnings) == 1 and "77-token window" in warnings[0] and len(warnings[0]) < 200
