"""The check registry: a check's id and step are declared once, by `@check`; every check reads the same
RunData (steps 4 and 5 included); the report's tables are computed once, before the checks, so the order
the checks run in changes nothing; one check raising costs only its own findings."""

from __future__ import annotations

import copy
import time

import pytest

from foleyscope.doctor import checks, environment, tables
from foleyscope.doctor.api import DiagnoseContext, diagnose
from foleyscope.doctor.checks.input import check_input
from foleyscope.doctor.checks.service import service_findings
from foleyscope.doctor.finding import Finding
from foleyscope.doctor.registry import Check, Found, check
from foleyscope.doctor.run import RunData
from foleyscope.media.probe import probe
from foleyscope.stages import Stage
from foleyscope.trace import StageFlops, Tracer, emit, stage


def _found(saving: float) -> Found:
    return Found(severity="info", title="t", evidence={"s": saving}, fix="f", est_saving_s=saving)


def test_a_check_names_what_it_found_with_its_own_id_and_step() -> None:
    per_stage = Check("per_stage", 2, "one per stage", lambda run: (_found(s) for s in (1.0, 2.0)))
    assert [(f.id, f.step, f.est_saving_s) for f in per_stage(None)] == [("per_stage", 2, 1.0),
                                                                          ("per_stage", 2, 2.0)]
    assert Check("quiet", 0, "nothing", lambda run: None)(None) == []
    restated = Check("restated", 1, "a ready Finding", lambda run: Finding("other", 3, "info", "t", {}, "f", 0.0))
    with pytest.raises(TypeError, match="restated"):
        restated(None)


def test_an_id_is_declared_once() -> None:
    before = checks.all_checks()
    with pytest.raises(ValueError, match="'stall'"):
        check("stall", step=1, doc="a second stall")(lambda run: None)
    assert checks.all_checks() == before


def test_a_check_that_raises_costs_only_its_own_findings() -> None:
    def boom(run: RunData) -> None:
        raise RuntimeError("planted")

    order = [Check("boom", 0, "raises", boom), Check("fine", 0, "finds", lambda run: _found(1.0))]
    findings, errors = checks.run_checks(None, order)  # type: ignore[arg-type]
    assert [f.id for f in findings] == ["fine"]
    assert errors == {"boom": "RuntimeError: planted"}


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _workload() -> None:
    """A stall and a stage far below its compute floor: findings from steps 0, 1 and the floor table."""
    import torch

    a, b = torch.randn(16, 16), torch.randn(16, 16)
    with stage(Stage.DECODE):
        _spin(0.1)
    with stage("fetch"):
        time.sleep(0.4)
    with stage(Stage.DENOISE):
        end, k = time.perf_counter() + 0.7, 0
        while time.perf_counter() < end:
            a[:4] @ b[:, :4]
            k += 1
    emit(StageFlops("denoise", 2.0 * 4 * 16 * 4 * k))


def test_tables_and_findings_do_not_depend_on_the_order_checks_run_in() -> None:
    with Tracer() as tracer:
        _workload()
    run = RunData.from_tracer(tracer, [], environment.collect(tracer.modules), context=DiagnoseContext())
    run.tables, errors = tables.compute(run)
    assert errors == {}
    computed = copy.deepcopy(run.tables)
    forward, forward_errors = checks.run_checks(run)
    backward, backward_errors = checks.run_checks(run, checks.registered()[::-1])
    assert forward_errors == backward_errors == {}
    assert [f.to_dict() for f in forward] == [f.to_dict() for f in backward]
    assert "stall" in {f.id for f in forward}
    shared = (run.stages["denoise"].wait_cores or 0.0) >= 0.3  # then other processes explain the slowness
    assert shared or "low_compute_efficiency" in {f.id for f in forward}
    assert run.tables == computed, "a check changed a table"
    assert tables.compute(run)[0] == computed  # and computing them again gives the same tables
    floor = computed.floor["stages"]["denoise"]
    row = computed.stages["denoise"]
    assert row["floor_s"] == pytest.approx(floor["floor_s"], abs=1e-6) and row["efficiency"] > 0


def test_steps_4_and_5_are_checks_of_the_run_like_the_others(make_clip) -> None:
    clip = make_clip(width=160, height=90, seconds=1.0, fps=50)  # 50 fps: above what the model samples
    measured = {"url": "http://127.0.0.1:1/generate", "clip": str(clip), "body_bytes": clip.stat().st_size,
                "cold_wait_s": 3.0, "warm_wait_s": 1.0, "warm_total_s": 1.0, "warm_upload_s": 0.0,
                "upload_share": 0.0,
                "parallel": {"n": 4, "wall_s": 4.0, "latencies_s": [1.0, 2.0, 3.0, 4.0],
                             "effective_concurrency": 1.0, "first_to_last_latency": 0.25}}
    ctx = DiagnoseContext(video_path=str(clip), input_info=probe(clip), service=measured)

    def pipeline() -> None:
        with stage(Stage.DECODE):
            _spin(0.05)

    report = diagnose(pipeline, context=ctx, sample_hz=0)
    assert report.meta["check_errors"] == {}
    step5 = [f.to_dict() for f in report.findings if f.step == 5]
    assert [f["id"] for f in step5] == ["service_serialises_requests", "service_cold_start"]
    assert step5 == [f.to_dict() for f in service_findings(measured)]
    step4 = [f.to_dict() for f in report.findings if f.step == 4]
    assert [f["id"] for f in step4] == ["input_needs_normalising"]
    seconds = {name: row["seconds"] for name, row in report.stages.items()}
    assert step4 == [f.to_dict() for f in check_input(probe(clip), str(clip), seconds)]
