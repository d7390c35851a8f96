"""Speed switches: --compile wires torch.compile onto the denoiser step and tells the doctor so."""

from __future__ import annotations

import numpy as np

import foleyscope.engine.modes as accel
from foleyscope.engine.pipeline import FoleyPipeline
from foleyscope.trace import Tracer


def test_compile_switch_keeps_the_output_and_reports_itself(make_clip, monkeypatch):
    clip = make_clip(width=160, height=90, seconds=1.0, fps=25)
    plain = FoleyPipeline.load("tiny", device="cpu", dtype="fp32")
    expected = plain(clip, "rain", steps=2, seed=0).audio
    # inductor takes tens of seconds to build on a CPU; the "eager" backend exercises the same wiring
    real = accel.compile_denoiser
    monkeypatch.setattr(accel, "compile_denoiser", lambda den, **kw: real(den, backend="eager"))
    with Tracer() as tracer:
        fast = FoleyPipeline.load("tiny", device="cpu", dtype="fp32", compile=True)
        got = fast(clip, "rain", steps=2, seed=0).audio
    assert hasattr(fast.components.denoiser.forward, "_torchdynamo_orig_callable"), "not compiled"
    modes = [e.fields for e in tracer.events if e.kind == "inference_mode"]
    assert modes and modes[-1]["compile"] is True
    np.testing.assert_allclose(got, expected, atol=1e-5)
