"""The engine end to end on the tiny preset: real decoding, real (random, seeded) networks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import torch

from foleyscope.cli import main
from foleyscope.engine.modes import Mode
from foleyscope.engine.pipeline import FoleyPipeline


@pytest.fixture(scope="module")
def pipe() -> FoleyPipeline:
    return FoleyPipeline.load("tiny", device="cpu", mode=Mode("fp32"), seed=0)


def test_audio_is_48k_and_exactly_as_long_as_the_video(pipe, make_clip):
    clip = make_clip(width=160, height=90, seconds=2.2, fps=25)
    result = pipe(clip, "a ball bouncing", steps=3, seed=1)
    assert result.sample_rate == 48000
    assert result.audio.dtype == np.float32
    assert result.audio.shape == (round(2.2 * 48000),)
    assert np.isfinite(result.audio).all() and result.audio.std() > 1e-3


def loop_video(src: Path, dst: Path, times: int) -> Path:
    """`src` played `times` times in a row by stream copy (what `ffmpeg -stream_loop` makes): the
    windows of a long clip then see the same pictures, the case that made correlated takes clip."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        vout = out.add_stream_from_template(vin)
        packets = [p for p in inp.demux(vin) if p.size]
        span = max(p.pts + p.duration for p in packets) - min(p.pts for p in packets)
        for k in range(times):
            for p in packets:
                q = av.Packet(bytes(p))
                q.pts, q.dts, q.duration, q.time_base = p.pts + k * span, p.dts + k * span, p.duration, p.time_base
                q.is_keyframe, q.stream = p.is_keyframe, vout
                out.mux(q)
    return dst


@pytest.fixture(scope="module")
def short_windows(pipe) -> FoleyPipeline:
    """The same networks with 3 s windows overlapping by 1 s: a 7 s clip has the seams of a 40 s one."""
    return FoleyPipeline(pipe.components, dataclasses.replace(pipe.preset, window_s=3.0, overlap_s=1.0),
                         pipe.device, pipe.mode)


def _rms_db(audio: np.ndarray, n: int) -> np.ndarray:
    return 20 * np.log10(np.sqrt((audio[: len(audio) // n * n].reshape(-1, n) ** 2).mean(axis=1)))


@pytest.mark.parametrize("looped", [True, False], ids=["looped", "plain"])
def test_seams_keep_the_level_and_add_no_clipping(short_windows, make_clip, tmp_path, looped):
    if looped:
        clip = loop_video(make_clip(width=96, height=64, seconds=2.0, fps=25), tmp_path / "looped.mp4", 4)
    else:
        clip = make_clip(width=96, height=64, seconds=7.0, fps=25)
    result = short_windows(clip, "footsteps", steps=2, seed=3)
    duration = 8.0 if looped else 7.0
    assert len(result.windows) >= 3 and result.audio.shape == (round(duration * 48000),)
    rms = _rms_db(result.audio, 24000)  # 0.5 s slices
    for w in result.windows[1:]:  # the slices around every seam against their neighbours
        k = int(w.start_s * 2)
        around = rms[max(0, k - 2) : k + 4]
        assert np.abs(np.diff(around)).max() < 0.5, (w, np.round(around, 2))
    loudest_window = max(np.abs(a).max() for a in result.window_audio)
    assert np.abs(result.audio).max() <= loudest_window + 1e-6, "the join made samples louder than any window"


def test_overlapping_windows_end_on_the_same_audio(short_windows, make_clip):
    clip = make_clip(width=96, height=64, seconds=7.0, fps=25)
    result = short_windows(clip, "footsteps", steps=2, seed=3)
    for i, (a, b) in enumerate(zip(result.windows, result.windows[1:], strict=False)):
        n = round((a.end_s - b.start_s) * 48000)
        x, y = result.window_audio[i][-n:], result.window_audio[i + 1][:n]
        mid = slice(n // 4, 3 * n // 4)  # away from each window's own edge, where the VAE sees less context
        assert np.linalg.norm(x[mid] - y[mid]) <= 1e-3 * np.linalg.norm(x[mid])


def test_windows_in_chunks_give_the_same_track_as_one_batch(short_windows, make_clip):
    clip = make_clip(width=96, height=64, seconds=7.0, fps=25)
    together = short_windows(clip, "footsteps", steps=2, seed=3).audio
    one_at_a_time = FoleyPipeline(short_windows.components, dataclasses.replace(short_windows.preset, window_batch=1),
                                  short_windows.device, short_windows.mode)
    steps_seen = []
    apart = one_at_a_time(clip, "footsteps", steps=2, seed=3,
                          progress=lambda e: steps_seen.append((e.done, e.total)) if e.kind == "step" and
                          e.stage == "denoise" else None).audio
    np.testing.assert_allclose(apart, together, atol=1e-4)
    assert steps_seen[-1] == (2, 2), "progress counts denoising steps, each covering every chunk"


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
    den = c.denoiser
    calls: dict[str, int] = {}

    def counter(name):
        return lambda *a, **k: calls.__setitem__(name, calls.get(name, 0) + 1)

    modules = {"text": c.text_encoder, "visual": c.visual_encoder, "forward": den, "visual_proj": den.visual_proj,
               "cond_in": den.cond_in, "sync_in": den.sync_in}
    hooks = [m.register_forward_hook(counter(name)) for name, m in modules.items()]
    for name, fn in (("prepare", den.prepare), ("rope_tables", den.rope_tables)):
        monkeypatch.setattr(den, name, lambda *a, _fn=fn, _name=name, **k: counter(_name)() or _fn(*a, **k))
    for blk in den.triple_blocks:
        monkeypatch.setattr(blk, "text_kv", lambda *a, _fn=blk.text_kv, **k: counter("text_kv")() or _fn(*a, **k))
    try:
        pipe(clip, "rain", steps=5, seed=0)
    finally:
        for h in hooks:
            h.remove()
    once = {"text": 1, "visual": 1, "prepare": 1, "visual_proj": 1, "cond_in": 1, "sync_in": 1, "rope_tables": 1}
    assert calls == {**once, "forward": 5, "text_kv": len(den.triple_blocks)}


def test_latent_count_is_the_officials_for_every_frame_count_that_fits_one_window(pipe):
    """int(T / 25 * 50), float truncation included (2T - 1 for T = 29, 57, 58, 113-116, ...): the same
    noise then gives the official's latents. Beyond 15 s the official stops; we window instead."""
    for t in range(1, 376):
        windows, latent_len = pipe._plan(t / 25, t)
        assert len(windows) == 1 and windows[0].length_s == t / 25
        assert latent_len == int(t / 25 * 50), t
    windows, latent_len = pipe._plan(25.0, 625)
    assert len(windows) == 2 and latent_len == 750


def test_odd_frame_counts_take_the_official_latents_and_fade_the_ms_they_lack(pipe, make_clip):
    # 29 frames (1.16 s): the release's float clock takes 28 of them at 25 fps, and int(28 / 25 * 50) = 56
    clip = make_clip(width=64, height=36, fps=25, seconds=29 / 25)
    cond = pipe.prepare(clip, "tick")
    assert cond.latent_len == 56 and cond.sync.shape[0] == 1
    audio = pipe.decode(cond, pipe.denoise(cond, steps=2, seed=0)).audio
    assert audio.shape == (round(29 / 25 * 48000),), "still exactly as long as the video"
    made = 56 * 960
    assert not audio[made:].any(), "the 40 ms the latents do not cover are padding"
    tail = np.abs(audio[made - 240 : made])  # the last 5 ms of sound fade out: no click at the cut
    assert tail[-24:].max() < 0.2 * max(np.abs(audio[made - 2400 : made - 240]).max(), 1e-6)


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


def test_batch_refuses_two_videos_that_would_write_the_same_file(make_clip, tmp_path, capsys):
    a = make_clip(width=160, height=90, seconds=1.0, fps=25)
    (tmp_path / "d1").mkdir()
    (tmp_path / "d2").mkdir()
    for d in ("d1", "d2"):
        (tmp_path / d / "c.mp4").write_bytes(a.read_bytes())
    csv = tmp_path / "list.csv"
    csv.write_text("video,prompt\nd1/c.mp4,knock\nd2/c.mp4,knock\n")
    assert main(["generate", "--batch", str(csv), "--out-dir", str(tmp_path / "out"), "--steps", "1"]) == 2
    assert "would both write" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


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
        (["generate", "{clip}", "--prompt", "x", "--preset", "mid", "--weights", "{tmp}"], "mid has no checkpoint"),
        (["generate", "{clip}", "--prompt", "x", "--device", "cuda"] if not torch.cuda.is_available()
         else ["generate", "{clip}", "--prompt", "x", "--device", "tpu"], "--device"),
        (["generate", "{clip}"], "--prompt is required"),
        (["generate", "{clip}", "--prompt", "x", "--cfg", "nan"], "--cfg"),
        (["generate", "{clip}", "--prompt", "x", "-o", "{tmp}/dir.wav"], "is a folder"),
        (["generate", "{clip}", "--prompt", "x", "-o", "{clip}/a.wav"], "is a file, not a folder"),
        (["generate", "{clip}", "--prompt", "x", "--mux", "{tmp}/a.mp3"], "--mux"),
    ],
)
def test_generate_bad_input_is_one_line_exit_2_and_no_file(argv, message, make_clip, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dir.wav").mkdir()
    clip = make_clip(width=160, height=90, seconds=1.0, fps=25)
    argv = [a.format(clip=clip, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("foleyscope: error:") and message in err[-1]
    assert "Traceback" not in "\n".join(err)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()], "an output file was left behind"


def test_without_guidance_the_prompt_row_keeps_the_padding_of_the_pair(pipe, make_clip, monkeypatch):
    """As the official: [negative, prompt] are always encoded together, and cfg 1 feeds the padded
    prompt row (no mask), so a prompt shorter than the negative prompt still sees its pad tokens."""
    clip = make_clip(width=160, height=90, seconds=0.8, fps=25)
    negative, prompt = "noisy, harsh, distorted, clipping, hum", "tick"
    den = pipe.components.denoiser
    seen = []
    real = den.prepare
    monkeypatch.setattr(den, "prepare", lambda clip, sync, text, n: seen.append(text) or real(clip, sync, text, n))
    pipe(clip, prompt, negative_prompt=negative, steps=1, seed=0, cfg=1.0)
    pair = pipe.components.text_encoder([negative, prompt])[0]
    alone = pipe.components.text_encoder([prompt])[0]
    assert alone.shape[1] < pair.shape[1], "the prompt alone is shorter: the case that differed"
    assert seen[0].shape[0] == 1 and torch.equal(seen[0], pair[1:].to(seen[0].dtype))


@pytest.mark.parametrize("rule", ["official", "exact"])
def test_the_frame_rule_reaches_the_reader(pipe, make_clip, monkeypatch, rule):
    import foleyscope.engine.pipeline as pipeline_module

    seen = []
    real = pipeline_module.extract_frames
    monkeypatch.setattr(pipeline_module, "extract_frames",
                        lambda *a, **k: seen.append(k["frames"]) or real(*a, **k))
    chosen = FoleyPipeline(pipe.components, pipe.preset, pipe.device, pipe.mode, frames=rule)
    chosen(make_clip(width=64, height=36, seconds=0.8, fps=25), "x", steps=1, seed=0)
    assert seen == [rule]


def test_generate_takes_the_frame_rule(make_clip, tmp_path):
    clip = make_clip(width=64, height=36, seconds=0.8, fps=30)
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    common = ["--prompt", "x", "--steps", "1", "--seed", "0", "--dtype", "fp32"]
    assert main(["generate", str(clip), *common, "-o", str(a)]) == 0
    assert main(["generate", str(clip), *common, "--frames", "exact", "-o", str(b)]) == 0
    x, y = sf.read(a)[0], sf.read(b)[0]
    assert len(x) == len(y) and not np.allclose(x, y), "30 fps: the two rules feed the models other frames"
