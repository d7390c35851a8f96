"""What the commands print: a real description, notices that do not wrap, --quiet, log-style progress
when stderr is not a terminal, bars with an ETA that are cleared when a run fails, convert's table,
and docs whose links resolve."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import pytest
import torch
from rich.console import Console

from foleyscope.cli import main
from foleyscope.progress import StageProgress
from foleyscope.stages import STAGES
from foleyscope.trace import Progress

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(width=160, height=90, seconds=1.0, fps=25)


def test_top_level_help_is_a_real_description(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "subcommand lives" not in out and "Generate Foley audio for videos" in out
    assert "--quiet" in out


def test_no_weights_notice_is_one_short_line(make_clip, tmp_path, capsys):
    assert main(["generate", str(make_clip(**SMALL)), "--prompt", "x", "--steps", "1", "--dtype", "fp32",
                 "-o", str(tmp_path / "a.wav")]) == 0
    err = capsys.readouterr().err.splitlines()
    notice = [line for line in err if "--weights" in line]
    assert len(notice) == 1 and len(notice[0]) < 100 and notice[0].endswith("noise."), err
    assert all(line == line.rstrip() for line in err)


def test_quiet_prints_nothing_but_errors(make_clip, tmp_path, capsys):
    out = tmp_path / "a.wav"
    assert main(["--quiet", "generate", str(make_clip(**SMALL)), "--prompt", "x", "--steps", "2",
                 "--dtype", "fp32", "-o", str(out)]) == 0
    assert out.is_file() and capsys.readouterr() == ("", "")
    assert main(["-q", "generate", str(tmp_path / "nope.mp4"), "--prompt", "x"]) == 2
    assert capsys.readouterr().err == f"foleyscope: error: {tmp_path / 'nope.mp4'}: no such file\n"


def test_log_progress_when_stderr_is_not_a_terminal(make_clip, tmp_path, capsys):
    assert main(["generate", str(make_clip(**SMALL)), "--prompt", "x", "--steps", "20", "--dtype", "fp32",
                 "-o", str(tmp_path / "a.wav")]) == 0
    err = capsys.readouterr().err
    assert "━" not in err and "\x1b" not in err
    lines = err.splitlines()
    for name in STAGES:
        if name != "load":
            assert f"{name}: started" in " ".join(lines) and any(ln.startswith(f"{name}: done in ") for ln in lines)
    steps = [ln for ln in lines if re.match(r"denoise: \d+/20 \(\d+%\)", ln)]
    assert [ln.split()[1] for ln in steps] == [f"{2 * i}/20" for i in range(1, 10)]
    assert all(re.search(r"ETA \d+(\.\d)? m?s$", ln) for ln in steps), steps


def test_terminal_bars_show_an_eta_for_denoise():
    buf = io.StringIO()
    with StageProgress(Console(file=buf, force_terminal=True, width=120)) as progress:
        progress(Progress("start", "denoise", 0, 50))
        for i in range(1, 6):
            time.sleep(0.02)
            progress(Progress("step", "denoise", i, 50, 0.02))
        progress.display.progress.refresh()
    assert re.search(r"ETA \d", buf.getvalue())


def test_terminal_bars_are_cleared_before_an_error_line():
    buf = io.StringIO()
    with pytest.raises(RuntimeError), StageProgress(Console(file=buf, force_terminal=True, width=120)) as progress:
        progress(Progress("end", "decode", 1, 1))
        progress(Progress("start", "denoise", 0, 50))
        raise RuntimeError("decoding failed")
    after_last_erase = buf.getvalue().rsplit("\x1b[2K", 1)[-1]
    assert "decode" not in after_last_erase and "denoise" not in after_last_erase


def test_convert_prints_a_table_with_units_that_fits(tmp_path, capsys):
    torch.save({"w": torch.zeros(64, 64)}, tmp_path / "synchformer_state_dict.pth")
    assert main(["convert", "--weights", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert all(len(line) <= 80 for line in err.splitlines()), err
    assert re.search(r"synchformer_state_dict\.safetensors\s*│\s*0\.0 MB\s*│\s*\d+(\.\d)? m?s\s*│", err), err


def _links(md: Path) -> list[str]:
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", md.read_text()) if not re.match(r"[a-z]+:|#", t)]


def test_doc_links_resolve_and_the_doctor_links_the_five_steps():
    for md in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for target in _links(md):
            assert (md.parent / target.split("#")[0]).exists(), f"{md.name} links to missing {target}"
    assert "five-steps.md" in _links(REPO / "docs" / "doctor.md")
    steps = (REPO / "docs" / "five-steps.md").read_text()
    for words in ("utilisation", "every stage", "dtype", "foleyscope prep", "serving"):
        assert words in steps, words


def test_readme_documents_the_new_behaviour():
    readme = (REPO / "README.md").read_text()
    for words in ("--quiet", "143", ".webm", "skipped", "2**63-1"):
        assert words in readme, words
