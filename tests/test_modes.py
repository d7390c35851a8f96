"""Modes: one frozen Mode, each switch a small function; the engine reports its mode on every call."""

from __future__ import annotations

import argparse
from dataclasses import fields

import numpy as np
import pytest
import torch

import foleyscope.engine.modes as modes
from foleyscope.engine.modes import Mode, add_mode_args, mode_from_args
from foleyscope.engine.pipeline import FoleyPipeline
from foleyscope.errors import FoleyscopeError
from foleyscope.trace import ModeReport, Tracer, current_stage


@pytest.fixture(scope="module")
def clip(make_clip):
    return make_clip(width=160, height=90, seconds=1.0, fps=25)


@pytest.fixture(scope="module")
def reference(clip) -> np.ndarray:
    return FoleyPipeline.load("tiny", device="cpu", mode=Mode("fp32"))(clip, "rain", steps=2, seed=0).audio


def _reported(tracer: Tracer) -> ModeReport:
    reports = tracer.facts(ModeReport)
    assert reports, "the pipeline reports its mode on every call"
    return reports[-1]


def test_compile_switch_keeps_the_output_and_reports_itself(clip, reference, monkeypatch):
    # inductor takes tens of seconds to build on a CPU; the "eager" backend exercises the same wiring
    real = modes.compile_denoiser
    monkeypatch.setattr(modes, "compile_denoiser", lambda den, **kw: real(den, backend="eager"))
    fast = FoleyPipeline.load("tiny", device="cpu", mode=Mode("fp32", compile=True))
    with Tracer() as tracer:
        got = fast(clip, "rain", steps=2, seed=0).audio
    assert hasattr(fast.components.denoiser.forward, "_torchdynamo_orig_callable"), "not compiled"
    assert _reported(tracer).compile is True
    np.testing.assert_allclose(got, reference, atol=1e-5)


def test_attention_backend_is_pinned_reported_and_keeps_the_output(clip, reference, monkeypatch):
    seen: list[object] = []
    real_sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(*args, **kwargs):
        if current_stage() == "denoise":  # the switch pins the denoiser's attention only
            seen.append(torch._C._get_math_sdp_enabled() and not torch._C._get_flash_sdp_enabled())
        return real_sdpa(*args, **kwargs)

    math = FoleyPipeline.load("tiny", device="cpu", mode=Mode("fp32", attention="math"))
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    with Tracer() as tracer:
        got = math(clip, "rain", steps=2, seed=0).audio
    monkeypatch.undo()
    assert seen and all(seen), "the denoiser's attention ran with only the math backend enabled"
    assert _reported(tracer).attention == "math"
    np.testing.assert_allclose(got, reference, atol=1e-4)


def test_a_pipeline_loaded_before_the_tracer_still_reports_its_mode(clip):
    pipe = FoleyPipeline.load("tiny", device="cpu", mode=Mode("fp32"))
    with Tracer() as tracer:
        pipe(clip, "rain", steps=1, seed=0)
    report = _reported(tracer)
    assert (report.device, report.dtype, report.attention, report.compile) == ("cpu", "fp32", "auto", False)
    assert "denoise" in report.dtype_stages and "vae_decode" not in report.dtype_stages


def test_cuda_only_attention_is_refused_on_cpu_in_one_line():
    with pytest.raises(FoleyscopeError, match="--attention efficient: .* CUDA-only"):
        FoleyPipeline.load("tiny", device="cpu", mode=Mode("fp32", attention="efficient"))


def test_auto_dtype_resolves_to_what_the_measurement_finds_fastest():
    from foleyscope import hardware

    pipe = FoleyPipeline.load("tiny", device="cpu")
    expected = "bf16" if hardware.speedup("cpu", "bf16") > 1.2 else "fp32"
    assert pipe.mode.dtype == expected and pipe.dtype == getattr(torch, {"bf16": "bfloat16"}.get(expected, "float32"))


def test_every_mode_field_has_a_cli_flag_and_round_trips():
    parser = argparse.ArgumentParser()
    add_mode_args(parser)
    args = parser.parse_args(["--dtype", "bf16", "--attention", "flash", "--compile"])
    assert mode_from_args(args) == Mode("bf16", attention="flash", compile=True)
    assert mode_from_args(parser.parse_args([])) == Mode()
    assert {f.name for f in fields(Mode)} == set(vars(parser.parse_args([])))
    assert Mode("bf16", attention="flash", compile=True).describe() == "bf16, attention flash, compiled"
    assert Mode("bf16", encoders="dtype").describe() == "bf16, attention auto, encoders bf16"


@pytest.mark.parametrize("encoders, expected", [("official", torch.float32), ("dtype", torch.bfloat16)])
def test_encoder_precision_follows_the_official_pipeline_unless_asked(clip, encoders, expected):
    pipe = FoleyPipeline.load("tiny", device="cpu", mode=Mode("bf16", encoders=encoders))
    c = pipe.components
    assert next(c.visual_encoder.parameters()).dtype == expected
    assert next(c.text_encoder.parameters()).dtype == expected
    assert next(c.denoiser.parameters()).dtype == torch.bfloat16 and next(c.vae.parameters()).dtype == torch.float32
    with Tracer() as tracer:
        pipe(clip, "rain", steps=1, seed=0)
    stages = _reported(tracer).dtype_stages
    assert ("visual_encode" in stages) is (encoders == "dtype") and "denoise" in stages


def _eager_compile(monkeypatch) -> None:
    """inductor takes tens of seconds on a CPU; dynamo's capture (what graph breaks and recompiles are
    about) is the same with the eager backend."""
    real = modes.compile_denoiser
    monkeypatch.setattr(modes, "compile_denoiser", lambda den, **kw: real(den, backend="eager"))


def test_compiled_step_loop_has_no_graph_break_and_no_recompile_on_a_second_video(make_clip, monkeypatch):
    from torch._dynamo.utils import counters

    _eager_compile(monkeypatch)
    first, second = make_clip(width=160, height=90, seconds=1.0), make_clip(width=192, height=108, seconds=1.0)
    pipe = FoleyPipeline.load("tiny", device="cpu", mode=Mode("fp32", compile=True))
    counters.clear()
    pipe(first, "rain", steps=2, seed=0)
    after_first = (counters["frames"]["total"], counters["stats"]["unique_graphs"])
    assert after_first == (1, 1) and not counters["graph_break"], dict(counters)  # one graph for the whole step
    pipe(second, "footsteps on gravel", steps=3, seed=1)
    assert (counters["frames"]["total"], counters["stats"]["unique_graphs"]) == after_first, dict(counters)


@pytest.mark.parametrize("spec", ["fp32", "bf16+compile+int8dq+cache", "fp32+cache=0.2+no-tf32",
                                  "bf16+cudagraphs+fp8", "auto+fp8+offload=blocks:4",
                                  "bf16+offload=model+attention=math", "bf16+encoders=dtype"])
def test_a_mode_spec_reads_back_as_the_same_mode(spec):
    mode = modes.parse_mode(spec)
    assert modes.parse_mode(mode.spec) == mode
    assert mode.spec == spec, "the spec names every field that differs from the default, in one order"


def test_the_new_mode_flags_parse_from_the_command_line():
    parser = argparse.ArgumentParser()
    add_mode_args(parser)
    args = parser.parse_args(["--quant", "int8dq", "--cache", "0.1", "--offload", "blocks:2", "--cudagraphs",
                              "--no-tf32"])
    assert mode_from_args(args) == Mode(quant="int8dq", cache=0.1, offload="blocks:2", cudagraphs=True, tf32=False)
    assert mode_from_args(args).describe() == "auto, attention auto, cudagraphs, int8dq, cache 0.1, offload blocks:2"


def test_the_mode_report_carries_every_switch(clip):
    pipe = FoleyPipeline.load("tiny", device="cpu", mode=Mode("fp32", quant="int8wo", cache=0.3))
    with Tracer() as tracer:
        pipe(clip, "rain", steps=2, seed=0)
    first, last = tracer.facts(ModeReport)[0], tracer.facts(ModeReport)[-1]
    assert (first.quant, first.cache, first.offload, first.cuda_graphs, first.tf32) == ("int8wo", 0.3, "none",
                                                                                         False, None)
    assert first.cache_steps_computed is None  # known once the denoiser has run: the last report has it
    assert last.cache_steps_computed + last.cache_steps_skipped == 2


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="TF32 and CUDA graphs need a CUDA GPU")


@needs_cuda
@pytest.mark.parametrize("tf32", [True, False])
def test_fp32_on_cuda_uses_tf32_unless_told_not_and_reports_it(clip, tf32):
    pipe = FoleyPipeline.load("tiny", device="cuda", mode=Mode("fp32", tf32=tf32))
    with Tracer() as tracer:
        pipe(clip, "rain", steps=1, seed=0)
    assert torch.backends.cuda.matmul.allow_tf32 is tf32 and _reported(tracer).tf32 is tf32


@needs_cuda
def test_cudagraphs_keep_the_output_and_capture_once_per_shape(make_clip):
    from torch._dynamo.utils import counters

    first, second = make_clip(width=160, height=90, seconds=1.0), make_clip(width=192, height=108, seconds=1.0)
    reference = FoleyPipeline.load("tiny", device="cuda", mode=Mode("bf16"))(first, "rain", steps=3, seed=0).audio
    pipe = FoleyPipeline.load("tiny", device="cuda", mode=Mode("bf16", cudagraphs=True))
    counters.clear()
    got = pipe(first, "rain", steps=3, seed=0).audio
    graphs = counters["stats"]["unique_graphs"]
    pipe(second, "dog", steps=3, seed=1)
    assert counters["stats"]["unique_graphs"] == graphs
    assert abs(got - reference).max() < 2e-2 * abs(reference).max()
