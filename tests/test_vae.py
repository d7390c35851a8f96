"""DAC-VAE: official key layout, file round trip, audio length math, dtype behaviour, FLOP count."""

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from foleyscope.errors import FoleyscopeError
from foleyscope.model.dac_vae import (
    DAC_PRESETS,
    ENCODER_KEY_PREFIXES,
    DacConfig,
    DacVAE,
    vae_decode_flops,
)

TINY = DAC_PRESETS["tiny"]


def seeded(seed: int = 0, cfg: DacConfig = TINY, **kw) -> DacVAE:
    torch.manual_seed(seed)
    return DacVAE(cfg, **kw).eval()


def latents(length: int, batch: int = 1, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 128, length, generator=torch.Generator().manual_seed(seed))


def test_presets_map_50hz_latents_to_48khz():
    for cfg in DAC_PRESETS.values():
        assert cfg.hop_length == 960 and cfg.sample_rate == 48000 and cfg.latent_dim == 128
        assert cfg.sample_rate / cfg.hop_length == 50


def test_official_key_layout():
    """Names and shapes derived from the official DAC (legacy weight_norm, nn.Sequential indices)."""
    with torch.device("meta"):
        sd = DacVAE(DAC_PRESETS["official"]).state_dict()
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert {k.split(".")[0] for k in sd} == {"encoder", "quant_conv", "post_quant_conv", "decoder"}
    assert len(sd) == 298
    assert sum(math.prod(s) for s in shapes.values()) == 371_589_058  # 1.49 GB in fp32, as released
    expected = {
        "encoder.block.0.weight_v": (128, 1, 7),
        "encoder.block.1.block.0.block.0.alpha": (1, 128, 1),
        "encoder.block.5.block.4.weight_v": (4096, 2048, 16),
        "encoder.block.7.weight_g": (128, 1, 1),
        "quant_conv.weight": (256, 128, 1),
        "post_quant_conv.weight": (128, 128, 1),
        "decoder.model.0.weight_v": (2048, 128, 7),
        "decoder.model.1.block.0.alpha": (1, 2048, 1),
        "decoder.model.1.block.1.weight_v": (2048, 1024, 16),  # ConvTranspose1d: [in, out, k]
        "decoder.model.1.block.1.weight_g": (2048, 1, 1),
        "decoder.model.1.block.4.block.1.weight_v": (1024, 1024, 7),
        "decoder.model.5.block.1.weight_v": (128, 64, 4),
        "decoder.model.6.alpha": (1, 64, 1),
        "decoder.model.7.weight_v": (1, 64, 7),
        "decoder.model.7.bias": (1,),
    }
    for key, shape in expected.items():
        assert shapes[key] == shape, key
    convs = {k.rsplit(".", 1)[0] for k in sd if k.endswith("weight_v")}
    assert all(f"{c}.weight_g" in sd and f"{c}.bias" in sd for c in convs)
    assert not any("parametrizations" in k or (k.endswith(".weight") and "quant_conv" not in k) for k in sd)
    assert not any(k.startswith("decoder.model.8") for k in sd)  # tanh has no parameters


def test_decoder_only_drops_exactly_the_encoder_keys():
    with torch.device("meta"):
        full = DacVAE(TINY).state_dict()
        dec = DacVAE(TINY, encoder=False).state_dict()
    assert set(dec) == {k for k in full if not k.startswith(ENCODER_KEY_PREFIXES)}
    with pytest.raises(FoleyscopeError, match="decoder-only"):
        seeded(encoder=False).encode(torch.zeros(1, 1, 960))


def test_official_file_round_trip(tmp_path):
    """{"state_dict", "metadata": {"kwargs"}} written to disk loads strictly and decodes identically."""
    model = seeded(3)
    path = tmp_path / "vae_128d_48k.pth"
    torch.save({"state_dict": model.state_dict(), "metadata": {"kwargs": TINY.to_metadata()}}, path)
    blob = torch.load(path, weights_only=True, map_location="cpu", mmap=True)
    cfg = DacConfig.from_metadata(blob["metadata"]["kwargs"])
    assert cfg == TINY
    loaded = DacVAE(cfg).eval()
    loaded.load_state_dict(blob["state_dict"], strict=True)
    z = latents(6)
    with torch.inference_mode():
        assert torch.equal(loaded.decode(z), model.decode(z))
        other = seeded(4).decode(z)
    assert not torch.allclose(other, model.decode(z))  # the weights really came from the file

    decoder_only = DacVAE(cfg, encoder=False).eval()
    kept = {k: v for k, v in blob["state_dict"].items() if not k.startswith(ENCODER_KEY_PREFIXES)}
    decoder_only.load_state_dict(kept, strict=True)
    with torch.inference_mode():
        assert torch.equal(decoder_only.decode(z), model.decode(z))


@pytest.mark.parametrize("length", [1, 7, 50])
def test_decode_length_and_range(length):
    with torch.inference_mode():
        audio = seeded().decode(latents(length, batch=2))
    assert audio.shape == (2, 1, length * 960)
    assert torch.isfinite(audio).all() and audio.abs().max() <= 1.0
    assert audio.std() > 1e-3  # not a silent or constant signal


def test_encode_pads_to_whole_latent_frames():
    model = seeded()
    audio = torch.sin(torch.arange(3000) / 7.0).view(1, 1, -1) * 0.5
    with torch.inference_mode():
        z = model.encode(audio)
        assert z.shape == (1, 128, math.ceil(3000 / 960))
        assert model.decode(z).shape[-1] == z.shape[-1] * 960
        assert torch.equal(model.encode(audio[0]), z)  # [B, T] is accepted too


def test_determinism_under_seed():
    z = latents(5)
    with torch.inference_mode():
        a, b, c = seeded(7).decode(z), seeded(7).decode(z), seeded(8).decode(z)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_fold_weight_norm_keeps_output_and_keys(tmp_path):
    model = seeded()
    z = latents(4)
    with torch.inference_mode():
        ref = model.decode(z)
        keys = set(model.state_dict())
        folded = model.fold_weight_norm().decode(z)
    assert torch.allclose(folded, ref, atol=1e-6) and set(model.state_dict()) == keys
    model.load_state_dict(seeded(9).state_dict())  # loading new weights must drop the cached ones
    with torch.inference_mode():
        assert torch.equal(model.decode(z), seeded(9).decode(z))


def test_bf16_close_to_fp32():
    model = seeded()
    z = latents(20)
    with torch.inference_mode():
        ref = model.decode(z)
        low = model.to(torch.bfloat16).decode(z)
    assert low.dtype == torch.bfloat16
    low = low.float()
    assert (low - ref).abs().max() < 0.05
    assert torch.corrcoef(torch.stack([low.flatten(), ref.flatten()]))[0, 1] > 0.99


def test_from_metadata_rules():
    cfg = DacConfig.from_metadata({"encoder_dim": 8, "encoder_rates": [2, 3, 4, 5, 8], "latent_dim": None,
                                   "decoder_dim": 64, "decoder_rates": [8, 5, 4, 3, 2],
                                   "sample_rate": 48000, "n_codebooks": 9, "continuous": True})
    assert cfg.latent_dim == 8 * 2**5  # the official default when the metadata leaves it out
    with pytest.raises(FoleyscopeError, match="quantised"):
        DacConfig.from_metadata({**TINY.to_metadata(), "continuous": False})
    with pytest.raises(FoleyscopeError, match="hop"):
        DacConfig(decoder_rates=(8, 5, 4, 3, 3))


def test_bad_latents_are_a_clear_error():
    with pytest.raises(FoleyscopeError, match=r"latents \[B, 128, L\]"):
        seeded().decode(torch.zeros(1, 64, 5))


@pytest.mark.parametrize("cfg", [TINY, DacConfig(encoder_dim=4, latent_dim=16, decoder_dim=96,
                                                 decoder_rates=(5, 8, 3, 4, 2))])
def test_flops_match_flop_counter(cfg):
    model = seeded(cfg=cfg, encoder=False)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.decode(torch.randn(2, cfg.latent_dim, 9))
    assert counter.get_total_flops() == vae_decode_flops(cfg, 9, batch=2)
    official = vae_decode_flops(DAC_PRESETS["official"], 500)
    assert 1.0e12 < official < 1.3e12  # ~1.15 TFLOP to decode 10 s at the release size
