"""`--quant`: the denoiser's linear layers converted by torchao, on the tiny preset's real networks.

Drift is measured on the denoiser's final latents against the unquantised run of the same mode
(same conditioning, seed and steps). Measured on this project's CPU: int8wo 0.2% relative L2 in
fp32 (0.6% in bf16), int8dq 0.9% (1.0% in bf16); the bounds below leave about 3x room.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from foleyscope.engine.modes import Mode
from foleyscope.engine.pipeline import FoleyPipeline
from foleyscope.engine.quant import quantisable
from foleyscope.errors import FoleyscopeError
from foleyscope.trace import ModeReport, Tracer

pytest.importorskip("torchao", reason="the quant modes need torchao (requirements.txt)")

STEPS = 3
MAX_DRIFT = {"int8wo": 0.01, "int8dq": 0.03}  # relative L2 of the final latents (measured: 0.2%, 0.9%)


@pytest.fixture(scope="module")
def conditions(make_clip):
    pipe = FoleyPipeline.load("tiny", device="cpu", mode=Mode("fp32"))
    cond = pipe.prepare(make_clip(width=160, height=90, seconds=1.0, fps=25), "rain")
    return cond, pipe.denoise(cond, steps=STEPS, seed=0)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("quant", ["int8wo", "int8dq"])
def test_int8_modes_quantise_every_linear_layer_and_stay_close_to_fp32(conditions, quant):
    from torchao.utils import TorchAOBaseTensor

    cond, reference = conditions
    pipe = FoleyPipeline.load("tiny", device="cpu", mode=Mode("fp32", quant=quant))
    linears = [m for m in pipe.components.denoiser.modules() if isinstance(m, nn.Linear)]
    assert linears and all(quantisable(m) for m in linears)  # the tiny preset's widths are all multiples of 16
    assert all(isinstance(m.weight, TorchAOBaseTensor) for m in linears), "every Linear weight is a torchao tensor"
    assert all(m.weight.dtype == torch.float32 for m in linears)  # it still computes in the mode's dtype
    assert {type(m.weight).__name__ for m in linears} == {"Int8Tensor"}
    with Tracer() as tracer:
        latents = pipe.denoise(cond, steps=STEPS, seed=0)
        pipe.report_mode()
    assert torch.isfinite(latents).all()
    assert 0 < _rel(latents, reference) < MAX_DRIFT[quant]  # changed, but by rounding only
    assert tracer.facts(ModeReport)[-1].quant == quant


def test_int8dq_runs_the_whole_pipeline_in_bf16(make_clip):
    clip = make_clip(width=160, height=90, seconds=1.0, fps=25)
    plain = FoleyPipeline.load("tiny", device="cpu", mode=Mode("bf16"))(clip, "rain", steps=2, seed=0).audio
    quant = FoleyPipeline.load("tiny", device="cpu", mode=Mode("bf16", quant="int8dq"))(clip, "rain", steps=2, seed=0)
    assert quant.audio.shape == plain.shape and bool(torch.isfinite(torch.from_numpy(quant.audio)).all())
    assert float(abs(quant.audio - plain).max()) < 0.05 * float(abs(plain).max())


def test_layers_whose_widths_torchao_cannot_take_are_left_alone():
    from foleyscope.engine.quant import quantise

    net = nn.Sequential(nn.Linear(64, 128), nn.Linear(128, 40), nn.Linear(40, 64))
    assert quantise(net, "int8wo") == 1
    assert [type(m.weight).__name__ for m in net] == ["Int8Tensor", "Parameter", "Parameter"]


def test_fp8_is_refused_on_cpu_with_the_reason():
    with pytest.raises(FoleyscopeError, match=r"--quant fp8: CUDA only \(this run is on cpu\)"):
        FoleyPipeline.load("tiny", device="cpu", mode=Mode("bf16", quant="fp8"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="float8 matmuls need a CUDA GPU (compute capability >= 8.9)")
def test_fp8_rowwise_quantises_the_denoiser_on_cuda_or_refuses_an_older_gpu(make_clip):
    clip = make_clip(width=160, height=90, seconds=1.0, fps=25)
    if torch.cuda.get_device_capability() < (8, 9):
        with pytest.raises(FoleyscopeError, match="compute capability >= 8.9"):
            FoleyPipeline.load("tiny", device="cuda", mode=Mode("bf16", quant="fp8"))
        return
    plain = FoleyPipeline.load("tiny", device="cuda", mode=Mode("bf16"))
    fp8 = FoleyPipeline.load("tiny", device="cuda", mode=Mode("bf16", quant="fp8"))
    assert {type(m.weight).__name__ for m in fp8.components.denoiser.modules() if isinstance(m, nn.Linear)} == {
        "Float8Tensor"}
    cond = plain.prepare(clip, "rain")
    ref, got = plain.denoise(cond, steps=STEPS, seed=0), fp8.denoise(cond, steps=STEPS, seed=0)
    assert torch.isfinite(got).all() and _rel(got, ref) < 0.1
