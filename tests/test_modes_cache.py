"""`--cache`: First-Block-Cache in the denoiser's step loop, on the tiny preset's real networks.

With random weights the first block's residual changes by 50-70% between steps (the timestep
modulation is random too), so skipping takes a threshold near 1 here; trained weights change far
less between adjacent steps, which is what the default 0.05 is for."""

from __future__ import annotations

import logging

import pytest
import torch

import foleyscope.engine.modes as modes
from foleyscope.engine.modes import Mode, parse_mode
from foleyscope.engine.pipeline import FoleyPipeline
from foleyscope.model.step_cache import StepCache
from foleyscope.trace import ModeReport, Tracer

STEPS = 6


@pytest.fixture(scope="module")
def conditions(make_clip):
    pipe = FoleyPipeline.load("tiny", device="cpu", mode=Mode("fp32"))
    cond = pipe.prepare(make_clip(width=160, height=90, seconds=1.0, fps=25), "rain")
    return cond, pipe.denoise(cond, steps=STEPS, seed=0)


def _run(mode: Mode, cond, threshold: float | None = None) -> tuple[torch.Tensor, ModeReport]:
    pipe = FoleyPipeline.load("tiny", device="cpu", mode=mode)
    if threshold is not None:  # below the Mode: an active cache at a threshold the CLI calls "off"
        pipe.components.denoiser.step_cache = threshold
    with Tracer() as tracer:
        latents = pipe.denoise(cond, steps=STEPS, seed=0)
    reports = tracer.facts(ModeReport)
    return latents, reports[-1] if reports else None


def test_an_active_cache_at_threshold_zero_computes_every_step_and_changes_nothing(conditions):
    cond, reference = conditions
    latents, report = _run(Mode("fp32"), cond, threshold=0.0)
    assert torch.equal(latents, reference)  # the split forward (head, body, final) is the same arithmetic
    assert (report.cache_steps_computed, report.cache_steps_skipped) == (STEPS, 0)


def test_cache_off_reports_no_counts_and_leaves_the_output_alone(conditions):
    cond, reference = conditions
    pipe = FoleyPipeline.load("tiny", device="cpu", mode=Mode("fp32", cache=0.0))
    assert pipe.components.denoiser.step_cache is None
    with Tracer() as tracer:
        pipe.report_mode()
        assert torch.equal(pipe.denoise(cond, steps=STEPS, seed=0), reference)
    report = tracer.facts(ModeReport)[-1]
    assert (report.cache, report.cache_steps_computed, report.cache_steps_skipped) == (0.0, None, None)


def test_a_large_threshold_skips_steps_reports_and_logs_them_and_stays_finite(conditions, caplog):
    cond, reference = conditions
    with caplog.at_level(logging.INFO, logger="foleyscope.engine.pipeline"):
        latents, report = _run(parse_mode("fp32+cache=1.5"), cond)
    assert report.cache == 1.5
    assert report.cache_steps_skipped > 0 and report.cache_steps_computed >= 1
    assert report.cache_steps_computed + report.cache_steps_skipped == STEPS
    assert torch.isfinite(latents).all() and not torch.equal(latents, reference)
    assert float((latents - reference).norm() / reference.norm()) < 0.05  # measured 0.4%, 1 of 6 steps computed
    assert f"{report.cache_steps_skipped} skipped" in caplog.text


def test_every_video_starts_with_an_empty_cache(conditions):
    cond, _ = conditions
    pipe = FoleyPipeline.load("tiny", device="cpu", mode=Mode("fp32", cache=1.5))
    counts = []
    for _ in range(2):
        with Tracer() as tracer:
            pipe.denoise(cond, steps=STEPS, seed=0)
        report = tracer.facts(ModeReport)[-1]
        counts.append((report.cache_steps_computed, report.cache_steps_skipped))
    assert counts[0] == counts[1]  # the second video's first step is computed again, nothing carried over


def test_the_skip_decision_is_the_relative_l1_change_since_the_last_full_step():
    cache = StepCache(threshold=0.1)
    base = torch.ones(2, 4, 8)
    assert not cache.can_skip(base)  # the first step always runs in full
    cache.store(torch.full((2, 4, 8), 3.0))
    assert cache.can_skip(base * 1.05)  # 5% change
    assert cache.can_skip(base * 1.09)  # still measured against the full step, not the skipped one
    assert not cache.can_skip(base * 1.2)  # 20%: run, and this becomes the new reference
    assert cache.can_skip(base * 1.25)  # 4% from 1.2
    assert (cache.computed, cache.skipped) == (2, 3)


def test_compiled_with_the_cache_the_parts_are_compiled_and_the_output_kept(conditions, monkeypatch):
    cond, _ = conditions
    real = modes.compile_denoiser
    monkeypatch.setattr(modes, "compile_denoiser", lambda den, **kw: real(den, backend="eager"))
    plain, plain_report = _run(Mode("fp32", cache=1.5), cond)
    compiled, report = _run(Mode("fp32", cache=1.5, compile=True), cond)
    assert (report.cache_steps_computed, report.cache_steps_skipped) == (
        plain_report.cache_steps_computed, plain_report.cache_steps_skipped)
    torch.testing.assert_close(compiled, plain, atol=1e-5, rtol=1e-5)
