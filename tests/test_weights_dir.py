"""A --weights folder in the official release layout, written here at the tiny preset's sizes, loads
through the real path (files on disk, memory-mapped, key-checked) and reproduces the in-memory model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from foleyscope.cli import main
from foleyscope.engine.modes import Mode
from foleyscope.engine.pipeline import FoleyPipeline
from foleyscope.engine.presets import PRESETS, random_components
from foleyscope.errors import FoleyscopeError
from foleyscope.tokenizer_data import tiny_tokenizer


def write_official_layout(root: Path, seed: int = 0) -> None:
    """The five release artefacts, from seeded random tiny networks, as the official code saves them."""
    from transformers import ClapConfig, ClapModel, SiglipConfig, SiglipModel

    preset = PRESETS["tiny"]
    comps = random_components(preset, torch.device("cpu"), torch.float32, seed)
    den = comps.denoiser.state_dict()
    den["repa_proj.0.weight"] = torch.zeros(4, 4)  # a training-only key the release carries
    torch.save({k: v.to(torch.bfloat16) for k, v in den.items()}, root / "foleyscope_tiny.pth")
    from foleyscope.model.dac_vae import DacVAE

    vae = DacVAE(preset.vae)  # full DAC with its encoder, as released; the decoder is the in-memory one
    result = vae.load_state_dict(comps.vae.state_dict(), strict=False)
    assert not result.unexpected_keys and all(k.startswith(("encoder.", "quant_conv.")) for k in result.missing_keys)
    torch.save({"state_dict": vae.state_dict(), "metadata": {"kwargs": preset.vae.to_metadata()}},
               root / "vae_128d_48k.pth")
    torch.save(comps.sync_encoder.state_dict(), root / "synchformer_state_dict.pth")
    vis = comps.visual_encoder.config
    siglip = SiglipModel(SiglipConfig(text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                                   "num_attention_heads": 2, "vocab_size": 99},
                                      vision_config=vis.to_dict()))
    siglip.vision_model.load_state_dict(comps.visual_encoder.vision_model.state_dict())
    siglip.save_pretrained(root / "siglip2-base-patch16-512")
    txt = comps.text_encoder.config
    audio = {"hidden_size": 32, "num_hidden_layers": 1, "depths": [1, 1, 1, 1],
             "num_attention_heads": [1, 1, 1, 1], "patch_embeds_hidden_size": 32}
    clap = ClapModel(ClapConfig(text_config=txt.to_dict(), audio_config=audio, projection_dim=32))
    missing = clap.text_model.load_state_dict(comps.text_encoder.text_model.state_dict(), strict=False)
    assert not missing.unexpected_keys
    clap.save_pretrained(root / "larger_clap_general")
    tiny_tokenizer().save_pretrained(root / "larger_clap_general")


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("weights")
    write_official_layout(root)
    return root


def test_official_layout_loads_and_matches_the_in_memory_model(weights_dir, make_clip):
    clip = make_clip(width=160, height=90, seconds=1.0, fps=25)
    loaded = FoleyPipeline.load("tiny", weights=weights_dir, device="cpu", mode=Mode("fp32"))
    report = loaded.components.denoiser.load_report
    assert report.ignored == ["repa_proj.0.weight"] and not report.missing
    assert loaded.components.vae.load_report.ignored, "the VAE encoder keys are listed as ignored"
    comps = random_components(PRESETS["tiny"], torch.device("cpu"), torch.float32, 0)
    comps.denoiser.load_state_dict({k: v.to(torch.bfloat16).float() for k, v in comps.denoiser.state_dict().items()})
    fresh = FoleyPipeline(comps, PRESETS["tiny"], torch.device("cpu"), Mode("fp32"))
    a = loaded(clip, "a door slams", steps=3, seed=5).audio
    b = fresh(clip, "a door slams", steps=3, seed=5).audio
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_generate_cli_with_weights_dir(weights_dir, make_clip, tmp_path):
    clip = make_clip(width=160, height=90, seconds=1.0, fps=25)
    out = tmp_path / "w.wav"
    assert main(["generate", str(clip), "--prompt", "knock", "--preset", "tiny", "--weights", str(weights_dir),
                 "--steps", "2", "--dtype", "fp32", "-o", str(out)]) == 0
    assert sf.info(out).samplerate == 48000


def test_a_wrong_checkpoint_is_reported_by_key_name(weights_dir, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    for item in weights_dir.iterdir():
        (bad / item.name).symlink_to(item)
    (bad / "foleyscope_tiny.pth").unlink()
    state = torch.load(weights_dir / "foleyscope_tiny.pth", weights_only=True)
    state.pop("final_layer.linear.weight")
    state["triple_blocks.9.bogus"] = torch.zeros(1)
    torch.save(state, bad / "foleyscope_tiny.pth")
    with pytest.raises(FoleyscopeError) as err:
        FoleyPipeline.load("tiny", weights=bad, device="cpu", mode=Mode("fp32"))
    assert "final_layer.linear.weight" in str(err.value) and "triple_blocks.9.bogus" in str(err.value)
    assert json.dumps(str(err.value)).count("\\n") == 0, "one line"


def test_a_truncated_checkpoint_is_named_before_any_model_loads(weights_dir, make_clip, tmp_path, capsys,
                                                                 monkeypatch):
    bad = tmp_path / "bad"
    bad.mkdir()
    for item in weights_dir.iterdir():
        (bad / item.name).symlink_to(item)
    (bad / "foleyscope_tiny.pth").unlink()
    data = (weights_dir / "foleyscope_tiny.pth").read_bytes()
    (bad / "foleyscope_tiny.pth").write_bytes(data[: len(data) * 3 // 5])  # a download cut short

    def refuse(cls, *args, **kwargs):
        raise AssertionError("the models were loaded before the weight files were checked")

    monkeypatch.setattr(FoleyPipeline, "load", classmethod(refuse))
    clip = make_clip(width=160, height=90, seconds=1.0, fps=25)
    rc = main(["generate", str(clip), "--prompt", "knock", "--preset", "tiny", "--weights", str(bad),
               "--steps", "1", "-o", str(tmp_path / "a.wav")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("foleyscope: error: "), err
    assert "foleyscope_tiny.pth" in err and "truncated" in err
    assert not (tmp_path / "a.wav").exists()
