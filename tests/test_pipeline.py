"""The engine end to end on the tiny preset: real decoding, real (random, seeded) networks."""

from __future__ import annotations

import av
import numpy as np
import pytest
import soundfile as sf
import torch

from foleyscope.cli import main
from foleyscope.pipeline import FoleyPipeline


@pytest.fixture(scope="module")
def pipe() -> FoleyPipeline:
    return FoleyPipeline.load("tiny", device="cpu", dtype="fp32", seed=0)


def test_audio_is_48k_and_exactly_as_long_as_the_video(pipe, make_clip):
    clip = make_clip(width=160, height=90, seconds=2.2, fps=25)
    result = pipe(clip, "a ball bouncing", steps=3, seed=1)
    assert result.sample_rate == 48000
    assert result.audio.dtype == np.float32
    assert result.audio.shape == (round(2.2 * 48000),)
    assert np.isfinite(result.audio).all() and result.audio.std() > 1e-3


def test_a_25_s_clip_gives_25_s_of_audio_with_no_silent_seam(pipe, make_clip):
    clip = make_clip(width=96, height=64, seconds=25.0, fps=25)
    result = pipe(clip, "footsteps", steps=1, seed=3)
    assert len(result.windows) == 2
    assert result.audio.shape == (25 * 48000,)
    rms = np.sqrt((result.audio.reshape(-1, 4800) ** 2).mean(axis=1))  # 100 ms blocks
    assert rms.min() > 0.2 * np.median(rms), "a dip near a window seam"


def test_seed_makes_it_deterministic_and_conditions_matter(pipe, make_clip):
    clip = make_clip(width=160, height=90, seconds=0.8, fps=25)
    a = pipe(clip, "glass breaking", steps=3, seed=7).audio
    assert np.array_equal(a, pipe(clip, "glass breaking", steps=3, seed=7).audio)
    assert not np.allclose(a, pipe(clip, "glass breaking", steps=3, seed=8).audio)
    assert not np.allclose(a, pipe(clip, "glass breaking", steps=3, seed=7, cfg=1.0).audio)
    other_neg = pipe(clip, "glass breaking", steps=3, seed=7, negative_prompt="quiet hum").audio
    assert not np.allclose(a, other_neg), "the negative prompt must reach the uncond branch"
    other_prompt = pipe(clip, "a dog barking loudly", steps=3, seed=7).audio
    assert not np.allclose(a, other_prompt)


def test_step_invariant_work_runs_once_per_video(pipe, make_clip, monkeypatch):
    clip = make_clip(width=160, height=90, seconds=1.2, fps=25)
    c = pipe.components
    calls = {"text": 0, "visual": 0, "prepare": 0, "forward": 0}
    h1 = c.text_encoder.register_forward_hook(lambda *a: calls.__setitem__("text", calls["text"] + 1))
    h2 = c.visual_encoder.register_forward_hook(lambda *a: calls.__setitem__("visual", calls["visual"] + 1))
    h3 = c.denoiser.register_forward_hook(lambda *a: calls.__setitem__("forward", calls["forward"] + 1))
    prepare = c.denoiser.prepare

    def counted(*args, **kwargs):
        calls["prepare"] += 1
        return prepare(*args, **kwargs)

    monkeypatch.setattr(c.denoiser, "prepare", counted)
    try:
        pipe(clip, "rain", steps=5, seed=0)
    finally:
        for h in (h1, h2, h3):
            h.remove()
    assert calls == {"text": 1, "visual": 1, "prepare": 1, "forward": 5}


def test_heun_uses_two_evaluations_per_step_and_differs_from_euler(pipe, make_clip):
    clip = make_clip(width=160, height=90, seconds=1.2, fps=25)
    n = []
    hook = pipe.components.denoiser.register_forward_hook(lambda *a: n.append(1))
    try:
        heun = pipe(clip, "rain", steps=3, seed=0, solver="heun").audio
    finally:
        hook.remove()
    assert len(n) == 5  # the last step lands on sigma 0, where Heun's corrector is skipped
    assert not np.allclose(heun, pipe(clip, "rain", steps=3, seed=0).audio)


def test_generate_cli_writes_wav_and_muxed_video(make_clip, tmp_path):
    clip = make_clip(width=160, height=90, seconds=1.6, fps=25)
    wav, mp4 = tmp_path / "a.wav", tmp_path / "a.mp4"
    code = main(["generate", str(clip), "--prompt", "thud", "--steps", "2", "--seed", "0",
                 "--dtype", "fp32", "-o", str(wav), "--mux", str(mp4)])
    assert code == 0
    audio, sr = sf.read(wav)
    assert sr == 48000 and len(audio) == round(1.6 * 48000)
    with av.open(str(mp4)) as c:
        assert c.streams.video and c.streams.audio
        assert c.streams.audio[0].codec_context.name == "aac"
        assert float(c.duration / 1e6) == pytest.approx(1.6, abs=0.05)


def test_batch_csv_loads_the_model_once(make_clip, tmp_path, monkeypatch):
    a = make_clip(width=160, height=90, seconds=1.0, fps=25)
    b = make_clip(width=128, height=72, seconds=1.4, fps=24)
    csv = tmp_path / "list.csv"
    csv.write_text(f'video,prompt\n{a},"a knock"\n{b},"a splash, water"\n')
    loads = []
    real_load = FoleyPipeline.load.__func__
    counted = classmethod(lambda cls, *x, **k: loads.append(1) or real_load(cls, *x, **k))
    monkeypatch.setattr(FoleyPipeline, "load", counted)
    out = tmp_path / "out"
    assert main(["generate", "--batch", str(csv), "--out-dir", str(out), "--steps", "2", "--dtype", "fp32"]) == 0
    assert len(loads) == 1
    assert sf.info(out / f"{a.stem}.wav").duration == pytest.approx(1.0, abs=1e-3)
    assert sf.info(out / f"{b.stem}.wav").duration == pytest.approx(1.4, abs=0.05)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "missing.mp4", "--prompt", "x"], "no such file"),
        (["generate", "{clip}", "--prompt", "x", "-o", "{tmp}/a.mp3"], ".wav or .flac"),
        (["generate", "{clip}", "--prompt", "x", "--steps", "0"], "--steps"),
        (["generate", "{clip}", "--prompt", "x", "--preset", "xxl"], "needs --weights"),
        (["generate", "{clip}", "--prompt", "x", "--device", "cuda"] if not torch.cuda.is_available()
         else ["generate", "{clip}", "--prompt", "x", "--device", "tpu"], "--device"),
        (["generate", "{clip}"], "--prompt is required"),
    ],
)
def test_generate_bad_input_is_one_line_exit_2_and_no_file(argv, message, make_clip, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    clip = make_clip(width=160, height=90, seconds=1.0, fps=25)
    argv = [a.format(clip=clip, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("foleyscope: error:") and message in err[-1]
    assert "Traceback" not in "\n".join(err)
    assert not list(tmp_path.rglob("*.wav")) and not list(tmp_path.rglob("a.*"))
