"""SigLIP2 image and CLAP text encoders: tiny full models saved by transformers in the official Hugging
Face folder layout load through our loaders and give transformers' own outputs; the tiny presets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (
    AutoTokenizer,
    ClapConfig,
    ClapModel,
    ClapTextModelWithProjection,
    SiglipConfig,
    SiglipModel,
    SiglipVisionConfig,
)

from foleyscope.errors import FoleyscopeError
from foleyscope.media.synth import index_frame
from foleyscope.model.encoders import (
    VisualEncoder,
    load_text_encoder,
    load_visual_encoder,
    save_visual_encoder,
    tiny_text_encoder,
    tiny_visual_encoder,
)
from foleyscope.tokenizer_data import _trained, tiny_tokenizer

ROOT = Path(__file__).resolve().parents[1]
NEG = "noisy, harsh"
LONG = "footsteps on gravel, then a door creaks open and slams shut, " * 6  # well over 77 tokens


def frames(n: int, size: int) -> torch.Tensor:
    """Drawn index frames (bands) mixed with noise frames, uint8 [n, size, size, 3]."""
    rng = np.random.default_rng(0)
    out = [index_frame(i * 7, size, size) if i % 2 == 0 else rng.integers(0, 256, (size, size, 3), np.uint8)
           for i in range(n)]
    return torch.from_numpy(np.stack(out))


def reference_image_features(model: SiglipModel, x: torch.Tensor) -> torch.Tensor:
    """What the official pipeline computes: x/255, mean/std 0.5, get_image_features (either return type)."""
    px = (x.permute(0, 3, 1, 2).float() / 255.0 - 0.5) / 0.5
    with torch.no_grad():
        out = model.get_image_features(pixel_values=px)
    return out if isinstance(out, torch.Tensor) else out.pooler_output


@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SiglipModel]:
    torch.manual_seed(0)
    config = SiglipConfig(
        text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=64),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=64, patch_size=16),
    )
    model = SiglipModel(config).eval()
    folder = tmp_path_factory.mktemp("siglip2-base-patch16-512")
    model.save_pretrained(folder)
    return folder, model


def test_siglip_folder_gives_get_image_features(siglip_dir: tuple[Path, SiglipModel]) -> None:
    folder, model = siglip_dir
    assert json.loads((folder / "config.json").read_text())["model_type"] == "siglip"
    enc = load_visual_encoder(folder)
    x = frames(5, 64)
    ours = enc(x)
    want = reference_image_features(model, x)
    assert ours.shape == (5, 32)
    torch.testing.assert_close(ours, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(enc(x, batch_size=2), ours, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(enc(x.numpy()), ours, rtol=0, atol=0)  # the frame extractor's arrays
    report = enc.load_report
    assert report.missing == [] and report.unexpected == []
    assert any(k.startswith("text_model.") for k in report.ignored) and "logit_scale" in report.ignored

    half = load_visual_encoder(folder, dtype=torch.bfloat16)
    got = half(x)
    assert got.dtype == torch.bfloat16
    assert ((got.float() - want).norm() / want.norm()) < 0.03


def test_visual_encoder_single_file_round_trip(siglip_dir: tuple[Path, SiglipModel], tmp_path: Path) -> None:
    folder, model = siglip_dir
    enc = load_visual_encoder(folder)
    save_visual_encoder(enc, tmp_path / "siglip2.safetensors")
    again = load_visual_encoder(tmp_path / "siglip2.safetensors")
    x = frames(3, 64)
    torch.testing.assert_close(again(x), reference_image_features(model, x), rtol=1e-5, atol=1e-5)


def test_visual_encoder_refuses_wrong_inputs(siglip_dir: tuple[Path, SiglipModel], tmp_path: Path) -> None:
    folder, _ = siglip_dir
    enc = load_visual_encoder(folder)
    with pytest.raises(FoleyscopeError, match=r"uint8 frames \[N, 64, 64, 3\]"):
        enc(frames(2, 64).float())
    with pytest.raises(FoleyscopeError, match="uint8 frames"):
        enc(frames(2, 32))

    naflex = tmp_path / "naflex"
    naflex.mkdir()
    (naflex / "config.json").write_text(json.dumps({"model_type": "siglip2"}))
    with pytest.raises(FoleyscopeError, match="NaFlex"):
        load_visual_encoder(naflex)
    with pytest.raises(FoleyscopeError, match="no config.json"):
        load_visual_encoder(tmp_path)

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((folder / "config.json").read_text())
    state = load_file(folder / "model.safetensors")
    del state["vision_model.head.probe"]
    save_file(state, broken / "model.safetensors")
    with pytest.raises(FoleyscopeError, match="SigLIP2 image encoder .*missing.*vision_model.head.probe"):
        load_visual_encoder(broken)


# ---------------------------------------------------------------------------------------------- CLAP


@pytest.fixture(scope="module")
def clap_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ClapTextModelWithProjection]:
    """A full ClapModel (text + audio towers) and its RoBERTa tokenizer, as the HF release stores them."""
    torch.manual_seed(0)
    tok = tiny_tokenizer()
    config = ClapConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=514, type_vocab_size=1,
                         projection_dim=16),
        audio_config=dict(depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 1, 1], patch_embeds_hidden_size=8,
                          hidden_size=64, projection_dim=16, spec_size=64, num_mel_bins=16, window_size=4),
        projection_dim=16,
    )
    folder = tmp_path_factory.mktemp("larger_clap_general")
    ClapModel(config).eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    # The official code's text model, loaded by transformers itself from the same folder.
    reference = ClapTextModelWithProjection.from_pretrained(folder).eval()
    return folder, reference


def reference_text(folder: Path, model: ClapTextModelWithProjection, prompts: list[str]):
    """Official: tokenizer(padding=True) -> ClapTextModelWithProjection -> last_hidden_state[:, :77]."""
    tok = AutoTokenizer.from_pretrained(folder)
    inputs = tok(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True, return_dict=True)
    return out.last_hidden_state[:, :77], inputs["attention_mask"][:, :77].bool()


def test_clap_folder_gives_last_hidden_state(clap_dir) -> None:
    folder, reference = clap_dir
    enc = load_text_encoder(folder)
    for prompts in ([NEG, "footsteps on gravel"], [NEG, LONG], ["rain"]):
        feats, mask = enc(prompts)
        want, want_mask = reference_text(folder, reference, prompts)
        assert feats.shape == want.shape and feats.shape[1] <= 77
        torch.testing.assert_close(feats, want, rtol=1e-5, atol=1e-5)
        assert torch.equal(mask, want_mask)
    assert enc([NEG, LONG])[0].shape[1] == 77  # the long prompt is encoded whole, then cut to 77
    report = enc.load_report
    assert report.unexpected == [] and any(k.startswith("audio_model.") for k in report.ignored)


def test_fixed_length_mode_keeps_real_tokens_identical(clap_dir) -> None:
    folder, _ = clap_dir
    free, fixed = load_text_encoder(folder), load_text_encoder(folder, pad_to_length=True)
    prompts = [NEG, "a dog barks twice"]
    a, mask_a = free(prompts)
    b, mask_b = fixed(prompts)
    assert b.shape == (2, 77, 32) and mask_b.sum() == mask_a.sum()
    torch.testing.assert_close(b[mask_b], a[mask_a], rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore:Deprecated in 0.9.0")  # transformers reading vocab.json/merges.txt
def test_clap_loads_older_layouts(clap_dir, tmp_path: Path) -> None:
    """vocab.json + merges.txt instead of tokenizer.json, and no saved position/token-type id buffers."""
    folder, reference = clap_dir
    old = tmp_path / "clap"
    old.mkdir()
    for name in ("config.json", "tokenizer_config.json"):
        (old / name).write_text((folder / name).read_text())
    vocab, merges = _trained()
    (old / "vocab.json").write_text(json.dumps(vocab))
    (old / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    state = load_file(folder / "model.safetensors")
    for key in ("text_model.embeddings.position_ids", "text_model.embeddings.token_type_ids"):
        state.pop(key, None)
    save_file(state, old / "model.safetensors")

    enc = load_text_encoder(old)
    assert sorted(enc.load_report.defaulted) == ["text_model.embeddings.position_ids",
                                                 "text_model.embeddings.token_type_ids"]
    prompts = [NEG, "glass shatters on the floor"]
    torch.testing.assert_close(enc(prompts)[0], reference_text(folder, reference, prompts)[0],
                               rtol=1e-5, atol=1e-5)


def test_text_encoder_errors(clap_dir, tmp_path: Path) -> None:
    folder, _ = clap_dir
    enc = load_text_encoder(folder)
    with pytest.raises(FoleyscopeError, match="list of prompts"):
        enc([])
    with pytest.raises(FoleyscopeError, match="list of prompts"):
        enc("a single string")
    bare = tmp_path / "no_tokenizer"
    bare.mkdir()
    (bare / "config.json").write_text((folder / "config.json").read_text())
    (bare / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    with pytest.raises(FoleyscopeError, match="no CLAP tokenizer files"):
        load_text_encoder(bare)
    (bare / "tokenizer.json").write_text("{not json")
    with pytest.raises(FoleyscopeError, match="cannot load the CLAP tokenizer"):
        load_text_encoder(bare)


# ---------------------------------------------------------------------------------------------- tiny


def test_tiny_encoders_are_seeded_and_shaped() -> None:
    x = frames(3, 512)
    v1, v2, v3 = (tiny_visual_encoder(seed, width=48) for seed in (7, 7, 8))
    out = v1(x)
    assert out.shape == (3, 48) and torch.isfinite(out).all()
    assert torch.equal(out, v2(x)) and not torch.allclose(out, v3(x))
    assert not torch.allclose(out[0], out[1])  # different frames, different features

    t1, t2 = tiny_text_encoder(3, width=24), tiny_text_encoder(3, width=24)
    prompts = [NEG, "footsteps on gravel and a door creaks open"]
    feats, mask = t1(prompts)
    assert feats.shape[0] == 2 and feats.shape[2] == 24 and feats.shape[1] == mask.shape[1] <= 77
    assert mask[1].all() and not mask[0].all()  # the shorter prompt is padded to the longer one
    assert torch.equal(feats, t2(prompts)[0])
    assert not torch.allclose(feats[0, 1], feats[1, 1])


def test_tiny_tokenizer_is_the_same_in_every_process() -> None:
    code = ("import hashlib, json; from foleyscope.tokenizer_data import _trained; v, m = _trained(); "
            "print(hashlib.sha256(json.dumps([sorted(v.items()), m]).encode()).hexdigest())")
    digests = set()
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONHASHSEED=seed)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                             check=True)
        digests.add(out.stdout.strip())
    assert len(digests) == 1
    tok = tiny_tokenizer()
    ids = tok(["footsteps on gravel"])["input_ids"][0]
    assert ids[0] == 0 and ids[-1] == 2 and len(ids) < len("footsteps on gravel")  # merges are used
    assert tok.decode(ids, skip_special_tokens=True) == "footsteps on gravel"


def test_encoder_flop_formulas_match_the_flop_counter() -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from foleyscope.model.encoders import text_encode_flops, visual_encode_flops

    cfg = SiglipVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                             image_size=128, patch_size=16)
    enc = VisualEncoder(cfg).eval()
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counted:  # CPU flash is invisible
        enc(torch.zeros(3, 128, 128, 3, dtype=torch.uint8))
    assert visual_encode_flops(cfg, 3) == pytest.approx(counted.get_total_flops(), rel=0.01)
    text = tiny_text_encoder(0, 64)
    prompts = ["a dog barking in the rain", "noisy"]
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counted:
        feats, _ = text(prompts)
    assert text_encode_flops(text.config, 2, feats.shape[1]) == pytest.approx(counted.get_total_flops(), rel=0.01)
