"""`foleyscope bench` on the tiny preset: every requested mode gets its times, memory and drift, the
same mode run twice gives the same output, bf16 drifts a little, and bad input is refused in one line
before any model loads."""

from __future__ import annotations

import contextlib
import io
import json
import re

import numpy as np
import pytest
import torch

from foleyscope.cli import main
from foleyscope.engine.bench import denoise_batch
from foleyscope.engine.drift import log_mel_distance_db, rel_l2
from foleyscope.engine.modes import Mode
from foleyscope.engine.pipeline import FoleyPipeline

STAGES = {"decode", "visual_encode", "text_encode", "sync_encode", "denoise", "vae_decode"}


@pytest.fixture(scope="module")
def benched(tmp_path_factory, make_clip):
    """One bench run shared by the tests that read it: fp32 (the reference) and bf16, batch 1 and 2."""
    out = tmp_path_factory.mktemp("bench") / "b.json"
    clip = make_clip(seconds=2.0)
    terminal = io.StringIO()
    with contextlib.redirect_stdout(terminal):
        code = main(["--quiet", "bench", str(clip), "--prompt", "rain on a tin roof", "--steps", "2", "--repeat",
                     "2", "--modes", "fp32,bf16", "--batch", "1,2", "--json", str(out), "--device", "cpu"])
    assert code == 0
    return {**json.loads(out.read_text()), "terminal": terminal.getvalue()}


def test_every_mode_has_its_stage_times_speedup_memory_and_throughput(benched):
    assert list(benched["modes"]) == ["fp32", "bf16"] and benched["reference"] == "fp32"
    for spec, row in benched["modes"].items():
        assert row["error"] is None, spec
        assert STAGES <= set(row["stages"]), spec
        for stage in STAGES:
            times = row["stages"][stage]
            assert len(times["runs"]) == 2 and times["min"] <= times["median"] <= times["max"]
        assert row["total"]["median"] >= sum(row["stages"][s]["median"] for s in ("denoise", "vae_decode"))
        assert row["speedup"] > 0 and row["memory_kind"] == "rss"
        assert row["peak_bytes"] > row["growth_bytes"] > 0, "RSS of the process, and what the mode added"
        assert set(row["clips_per_min"]) == {"1", "2"} and all(v["median"] > 0 for v in row["clips_per_min"].values())
    assert benched["modes"]["fp32"]["speedup"] == 1.0


def test_the_reference_has_zero_drift_and_runs_repeat_to_the_bit(benched):
    fp32 = benched["modes"]["fp32"]
    assert fp32["drift"] == {"latents_rel_l2": 0.0, "audio_rel_l2": 0.0, "log_mel_db": 0.0}
    assert fp32["repeat_drift_latents"] == 0.0, "the same mode twice gives the same latents"


def test_bf16_drifts_a_little_from_fp32(benched):
    drift = benched["modes"]["bf16"]["drift"]
    assert 0 < drift["latents_rel_l2"] < 0.05
    assert 0 < drift["audio_rel_l2"] < 0.05
    assert 0 < drift["log_mel_db"] < 1.0


def test_the_terminal_tables_list_every_mode(benched):
    out = benched["terminal"]
    assert "seconds per stage" in out and "against fp32" in out
    for spec in ("fp32", "bf16"):
        assert len(re.findall(rf"^\s*{spec}\s", out, re.M)) == 2, f"{spec}: a row in each table"


def test_a_batch_of_two_videos_gives_the_first_the_latents_of_a_single_run(make_clip):
    pipe = FoleyPipeline.load("tiny", device="cpu", mode=Mode("fp32"))
    cond = pipe.prepare(make_clip(seconds=2.0), "rain")
    single = pipe.denoise(cond, steps=2, seed=7)
    batch = denoise_batch(pipe, [cond, cond], steps=2, cfg=4.5, solver="euler", seed=7)
    assert batch.shape == (2, *single.shape[1:])
    torch.testing.assert_close(batch[:1], single, rtol=1e-4, atol=1e-5)
    assert rel_l2(batch[1].numpy(), batch[0].numpy()) > 0.1, "the second video draws its own noise"


def test_log_mel_distance_reads_a_uniform_gain_in_db():
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(48000).astype(np.float32) * 0.1
    assert log_mel_distance_db(noise, noise, 48000) == 0.0
    assert log_mel_distance_db(noise * 10 ** (1 / 20), noise, 48000) == pytest.approx(1.0, abs=1e-6)
    assert log_mel_distance_db(noise * 10 ** (3 / 20), noise, 48000) == pytest.approx(3.0, abs=1e-6)


@pytest.mark.parametrize(("extra", "message"), [
    (["--modes", "fp32,fp33"], "unknown part 'fp33'"),
    (["--modes", "bf16,fp8"], "--quant fp8: CUDA only"),
    (["--modes", "fp32,bf16+cudagraphs"], "--cudagraphs: CUDA only"),
    (["--repeat", "0"], "--repeat must be 1 to"),
    (["--batch", "1,0"], "--batch 1,0: each size must be 1 to"),
    (["--batch", "two"], "--batch two: expected sizes like 1,4"),
    (["--modes", "fp32,fp32"], "are the same mode here"),
    (["--preset", "xxl"], "--preset xxl needs --weights DIR"),
    (["--preset", "mid", "--weights", "."], "--preset mid has no checkpoint"),
])
def test_bad_input_is_one_line_and_exit_2_before_any_model_loads(make_clip, capsys, monkeypatch, extra, message):
    def no_load(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(FoleyPipeline, "load", no_load)
    code = main(["bench", str(make_clip(seconds=2.0)), "--prompt", "x", "--device", "cpu", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("foleyscope: error: ") and message in err[0], err
