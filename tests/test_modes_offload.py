"""`--offload model|blocks[:N]`: CUDA modes, refused on a CPU in one line; their machinery (which
network or block is resident when, hooks around blocks, quantised weights moved through their inner
tensors) is exercised on a CPU by pointing it at the CPU itself, where copies are plain and there is
no side stream. The CUDA tests skip without a GPU."""

from __future__ import annotations

import pytest
import torch

from foleyscope.cli import main
from foleyscope.engine.modes import Mode, compile_denoiser, parse_mode, resolve
from foleyscope.engine.offload import BlockStream, ModelOffload, Parked, parse_offload
from foleyscope.engine.pipeline import FoleyPipeline
from foleyscope.errors import FoleyscopeError

CPU = torch.device("cpu")
STEPS = 2
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="offload moves weights to a CUDA GPU")


@pytest.fixture(scope="module")
def clip(make_clip):
    return make_clip(width=160, height=90, seconds=1.0, fps=25)


@pytest.fixture(scope="module")
def conditions(clip):
    pipe = FoleyPipeline.load("tiny", device="cpu", mode=Mode("fp32"))
    cond = pipe.prepare(clip, "rain")
    return cond, pipe.denoise(cond, steps=STEPS, seed=0)


@pytest.mark.parametrize("spec, expected", [("none", ("none", 0)), ("model", ("model", 0)),
                                            ("blocks", ("blocks", 4)), ("blocks:0", ("blocks", 0)),
                                            ("blocks:12", ("blocks", 12))])
def test_offload_specs_parse(spec, expected):
    assert parse_offload(spec) == expected
    assert parse_mode(f"bf16+offload={spec}").offload == spec


@pytest.mark.parametrize("spec", ["blocks:x", "blocks:-1", "model:2", "layers"])
def test_a_bad_offload_spec_is_refused_even_on_cpu(spec):
    with pytest.raises(FoleyscopeError, match=rf"--offload {spec}: "):
        resolve(Mode("fp32", offload=spec), CPU)


def test_cudagraphs_with_offload_is_refused_whatever_the_device():
    with pytest.raises(FoleyscopeError, match="--cudagraphs with --offload model"):
        resolve(Mode("bf16", cudagraphs=True, offload="model"), torch.device("cuda"))


@pytest.mark.parametrize("flags, message", [(["--offload", "model"], "--offload model: CUDA only"),
                                            (["--offload", "blocks:4"], "--offload blocks:4: CUDA only"),
                                            (["--cudagraphs"], "--cudagraphs: CUDA only"),
                                            (["--quant", "fp8"], "--quant fp8: CUDA only")])
def test_cuda_only_modes_are_one_line_exit_2_from_generate_on_cpu(clip, tmp_path, capsys, flags, message):
    # -q: without it, the "No --weights" notice comes first (generate resolves the mode as it loads)
    rc = main(["-q", "generate", str(clip), "--prompt", "rain", "--device", "cpu", "--dtype", "fp32",
               "--steps", "1", "-o", str(tmp_path / "out.wav"), *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"foleyscope: error: {message}"), err
    assert not (tmp_path / "out.wav").exists()


def test_model_offload_loads_each_network_once_per_video_not_per_step(clip, monkeypatch):
    pipe = FoleyPipeline.load("tiny", device="cpu", mode=Mode("fp32"))
    reference = pipe(clip, "rain", steps=STEPS, seed=0).audio
    offloaded = FoleyPipeline.load("tiny", device="cpu", mode=Mode("fp32"))
    ModelOffload(offloaded.components, CPU)
    loads: list[int] = []
    real_load = Parked.load
    monkeypatch.setattr(Parked, "load", lambda self, *a: (loads.append(id(self)), real_load(self, *a))[1])
    got = offloaded(clip, "rain", steps=STEPS, seed=0).audio
    assert len(loads) == 5 == len(set(loads))  # 3 encoders, the denoiser (prepare + all steps), the VAE
    assert torch.equal(torch.from_numpy(got), torch.from_numpy(reference))


@pytest.mark.parametrize("resident, quant", [(0, "none"), (1, "int8wo")])
def test_streamed_blocks_are_resident_only_around_their_forward(conditions, resident, quant):
    cond, _ = conditions
    pipe = FoleyPipeline.load("tiny", device="cpu", mode=Mode("fp32", quant=quant))
    reference = pipe.denoise(cond, steps=STEPS, seed=0)
    den = pipe.components.denoiser
    stream = BlockStream(den, CPU, resident)
    seen: list[tuple[bool, int]] = []
    for i, block in enumerate([*den.triple_blocks, *den.single_blocks][resident:]):
        block.register_forward_pre_hook(
            lambda m, a, i=i: seen.append((stream.parked[i].resident, sum(p.resident for p in stream.parked))))
    assert len(stream.parked) == 2 - resident
    assert torch.equal(pipe.denoise(cond, steps=STEPS, seed=0), reference)  # int8 weights moved intact too
    assert seen and all(here for here, _ in seen) and max(n for _, n in seen) <= 2
    assert any(not t.resident for t in stream.parked) or len(stream.parked) == 1  # dropped after use


def test_streamed_blocks_compile_one_graph_per_block_kind(conditions):
    from torch._dynamo.utils import counters

    cond, reference = conditions
    pipe = FoleyPipeline.load("tiny", device="cpu", mode=Mode("fp32"))
    compile_denoiser(pipe.components.denoiser, backend="eager", per_block=True)
    BlockStream(pipe.components.denoiser, CPU, 0)
    counters.clear()
    torch.testing.assert_close(pipe.denoise(cond, steps=STEPS, seed=0), reference, atol=1e-5, rtol=1e-5)
    pipe.denoise(cond, steps=STEPS, seed=0)
    assert counters["stats"]["unique_graphs"] == 2 and not counters["graph_break"]  # triple + single block


@needs_cuda
@pytest.mark.parametrize("offload", ["model", "blocks", "blocks:1"])
def test_offload_on_cuda_keeps_the_output_and_lowers_the_resident_weights(clip, offload):
    plain = FoleyPipeline.load("tiny", device="cuda", mode=Mode("fp32", tf32=False))
    reference = plain(clip, "rain", steps=STEPS, seed=0).audio
    del plain
    torch.cuda.empty_cache()
    pipe = FoleyPipeline.load("tiny", device="cuda", mode=Mode("fp32", tf32=False, offload=offload))
    got = pipe(clip, "rain", steps=STEPS, seed=0).audio
    assert abs(got - reference).max() < 1e-4
    den = pipe.components.denoiser
    on_gpu = sum(p.numel() for p in den.parameters() if p.is_cuda)
    assert on_gpu < sum(p.numel() for p in den.parameters())
    host = [p for p in den.single_blocks[-1].parameters()]
    assert all(p.is_pinned() for p in host if not p.is_cuda)
