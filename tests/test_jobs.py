"""One Job and run_job: outputs written atomically, progress as events, cancellation between steps."""

from __future__ import annotations

import ast
import threading
from pathlib import Path

import pytest
import soundfile as sf

from foleyscope.engine.jobs import Cancelled, CancelToken, Job, run_job
from foleyscope.engine.modes import Mode
from foleyscope.engine.pipeline import FoleyPipeline
from foleyscope.trace import Progress

PACKAGE = Path(__file__).resolve().parents[1] / "foleyscope"


@pytest.fixture(scope="module")
def pipe() -> FoleyPipeline:
    return FoleyPipeline.load("tiny", device="cpu", mode=Mode("fp32"), seed=0)


def test_run_job_writes_its_outputs_and_reports_every_stage_and_step(pipe, make_clip, tmp_path):
    clip = make_clip(width=160, height=90, seconds=1.2, fps=25)
    events: list[Progress] = []
    job = Job(clip, "rain", steps=3, seed=0, out=tmp_path / "a.wav", mux=tmp_path / "a.mp4")
    done = run_job(pipe, job, events.append)
    assert done.outputs == [tmp_path / "a.wav", tmp_path / "a.mp4"]
    assert sf.info(tmp_path / "a.wav").duration == pytest.approx(1.2, abs=1e-3)
    starts = [e.stage for e in events if e.kind == "start"]
    assert starts == ["decode", "visual_encode", "text_encode", "sync_encode", "denoise", "vae_decode",
                      "postprocess"]
    steps = [e for e in events if e.kind == "step" and e.stage == "denoise"]
    assert [(e.done, e.total) for e in steps] == [(1, 3), (2, 3), (3, 3)] and all(e.seconds > 0 for e in steps)
    assert [e.stage for e in events if e.kind == "end"] == starts


def test_a_cancelled_job_stops_within_one_step_and_writes_nothing(pipe, make_clip, tmp_path):
    clip = make_clip(width=160, height=90, seconds=1.2, fps=25)
    token = CancelToken()
    steps_done: list[int] = []

    def progress(e: Progress) -> None:
        if e.kind == "step" and e.stage == "denoise":
            steps_done.append(int(e.done))
            if e.done == 2:  # cancelled from another thread, as a server would
                t = threading.Thread(target=token.cancel)
                t.start()
                t.join()

    job = Job(clip, "rain", steps=50, seed=0, out=tmp_path / "a.wav", mux=tmp_path / "a.mp4")
    with pytest.raises(Cancelled):
        run_job(pipe, job, progress, cancel=token)
    assert steps_done == [2] or steps_done == [1, 2], "the step after the cancel never completed"
    assert list(tmp_path.iterdir()) == [], "no output, not even a temp file"


def test_a_job_cancelled_before_it_starts_never_runs(pipe, make_clip, tmp_path):
    token = CancelToken()
    token.cancel()
    events: list[Progress] = []
    with pytest.raises(Cancelled):
        run_job(pipe, Job(make_clip(width=160, height=90, seconds=1.0, fps=25), "x", out=tmp_path / "a.wav"),
                events.append, cancel=token)
    assert events == [] and not (tmp_path / "a.wav").exists()


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("layer", ["engine", "media", "model", "trace"])
def test_the_engine_and_what_it_stands_on_never_import_the_doctor(layer):
    offenders = {str(p.relative_to(PACKAGE)): sorted(m for m in _imports(p) if m.startswith("foleyscope.doctor"))
                 for p in (PACKAGE / layer).rglob("*.py")}
    assert not {k: v for k, v in offenders.items() if v}
