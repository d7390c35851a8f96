"""Synchformer video branch: official key layout, file round trip, segment/token math on real
decoded frames, dtype behaviour and FLOP count."""

import math

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from foleyscope.errors import FoleyscopeError
from foleyscope.media.synth import SynthSpec, make_video, read_index
from foleyscope.model.synchformer import (
    IGNORED_KEY_PREFIXES,
    SYNC_PRESETS,
    SyncEncoder,
    SynchformerConfig,
    sync_flops,
)

TINY = SYNC_PRESETS["tiny"]


def seeded(seed: int = 0, cfg: SynchformerConfig = TINY) -> SyncEncoder:
    torch.manual_seed(seed)
    return SyncEncoder(cfg).eval()


def noise_frames(n: int, batch: int = 1, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, n, 224, 224, 3), dtype=torch.uint8, generator=g)


@pytest.fixture(scope="module")
def clip_frames(tmp_path_factory) -> torch.Tensor:
    """35 real decoded 25 fps frames, 224x224 rgb24, as the decode stage hands them over."""
    path = make_video(tmp_path_factory.mktemp("sync") / "clip.mp4",
                      SynthSpec(width=224, height=224, fps=25, seconds=1.4))
    with av.open(str(path)) as box:
        frames = [f.to_ndarray(format="rgb24") for f in box.decode(video=0)]
    assert [read_index(f) for f in frames] == list(range(35))
    return torch.from_numpy(np.stack(frames)).unsqueeze(0)


def test_official_key_layout():
    """Names and shapes derived from the official Synchformer's vfeat_extractor (MotionFormer)."""
    with torch.device("meta"):
        sd = SyncEncoder(SYNC_PRESETS["official"]).state_dict()
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert all(k.startswith("vfeat_extractor.") for k in sd)
    assert not any(k.startswith(IGNORED_KEY_PREFIXES) for k in sd)
    assert len(sd) == 236 and sum(math.prod(s) for s in shapes.values()) == 121_850_112
    expected = {
        "vfeat_extractor.patch_embed_3d.proj.weight": (768, 3, 2, 16, 16),
        "vfeat_extractor.cls_token": (1, 1, 768),
        "vfeat_extractor.pos_embed": (1, 197, 768),
        "vfeat_extractor.temp_embed": (1, 8, 768),
        "vfeat_extractor.blocks.0.timeattn.qkv.weight": (2304, 768),
        "vfeat_extractor.blocks.11.attn.proj.bias": (768,),
        "vfeat_extractor.blocks.11.norm3.weight": (768,),
        "vfeat_extractor.blocks.5.mlp.fc1.weight": (3072, 768),
        "vfeat_extractor.norm.bias": (768,),
        "vfeat_extractor.spatial_attn_agg.cls_token": (1, 1, 768),
        "vfeat_extractor.spatial_attn_agg.self_attn.in_proj_weight": (2304, 768),
        "vfeat_extractor.spatial_attn_agg.self_attn.out_proj.weight": (768, 768),
        "vfeat_extractor.spatial_attn_agg.linear1.weight": (3072, 768),
        "vfeat_extractor.spatial_attn_agg.norm2.weight": (768,),
    }
    for key, shape in expected.items():
        assert shapes[key] == shape, key
    assert not any(k.startswith("vfeat_extractor.blocks.12.") for k in sd)


def test_official_file_round_trip(tmp_path):
    """An official-layout file (our keys plus entries for the parts we do not build) loads strictly
    once the ignored prefixes are set aside, and gives identical features."""
    model = seeded(2)
    blob = dict(model.state_dict())
    extras = {
        "afeat_extractor.patch_embed.proj.weight": torch.randn(4, 1, 16, 16),
        "aproj.weight": torch.randn(4, 4),
        "vproj.bias": torch.randn(4),
        "transformer.OFF_tok": torch.randn(1, 1, 4),
        "vfeat_extractor.patch_embed.proj.weight": torch.randn(32, 3, 32, 32),
    }
    path = tmp_path / "synchformer_state_dict.pth"
    torch.save({**blob, **extras}, path)
    sd = torch.load(path, weights_only=True, map_location="cpu", mmap=True)
    ignored = sorted(k for k in sd if k.startswith(IGNORED_KEY_PREFIXES))
    assert ignored == sorted(extras)
    loaded = SyncEncoder(TINY).eval()
    loaded.load_state_dict({k: v for k, v in sd.items() if k not in ignored}, strict=True)
    frames = noise_frames(24)
    with torch.inference_mode():
        assert torch.equal(loaded(frames), model(frames))
        assert not torch.allclose(seeded(3)(frames), model(frames))


@pytest.mark.parametrize(("n_frames", "segments"), [(16, 1), (23, 1), (24, 2), (41, 4), (250, 30), (375, 45)])
def test_segment_count_matches_official_formula(n_frames, segments):
    # the official splitter: (T - 16) // 8 + 1 windows of 16 frames, stride 8, each -> 8 tokens
    assert TINY.n_segments(n_frames) == segments == (n_frames - 16) // 8 + 1
    assert TINY.n_tokens(n_frames) == 8 * segments
    assert SYNC_PRESETS["official"].n_tokens(250) == 240  # 10 s at 25 fps


@pytest.mark.parametrize("n_frames", [16, 24, 33])
def test_output_shape_for_lengths(n_frames):
    with torch.inference_mode():
        out = seeded()(noise_frames(n_frames, batch=2))
    assert out.shape == (2, TINY.n_tokens(n_frames), TINY.embed_dim)


def test_ten_seconds_give_240_tokens():
    frames = torch.full((1, 250, 224, 224, 3), 128, dtype=torch.uint8)
    frames[:, ::3] = 30
    with torch.inference_mode():
        out = seeded()(frames)
    assert out.shape == (1, 240, TINY.embed_dim) and torch.isfinite(out).all()


def test_segments_are_windows_of_the_real_clip(clip_frames):
    """Token group k is the model applied to frames [8k, 8k + 16) of the decoded clip."""
    model = seeded()
    calls = []
    with torch.inference_mode():
        out = model(clip_frames, segment_batch=2, progress=lambda done, total: calls.append((done, total)))
        assert out.shape == (1, 24, TINY.embed_dim)  # 35 frames -> 3 segments; the last 3 frames unused
        for k in range(3):
            window = model.normalize(clip_frames[:, 8 * k : 8 * k + 16])
            assert torch.allclose(out[0, 8 * k : 8 * k + 8], model.vfeat_extractor(window)[0], atol=1e-5)
        assert torch.allclose(model(clip_frames, segment_batch=16), out, atol=1e-5)
        reversed_clip = model(clip_frames.flip(1)[:, 3:])  # same frames, time reversed
    assert calls == [(2, 3), (3, 3)]
    assert not torch.allclose(reversed_clip.flip(1), out, atol=1e-3)  # time order matters


def test_uint8_and_unit_float_inputs_agree(clip_frames):
    model = seeded()
    with torch.inference_mode():
        a = model(clip_frames[:, :16])
        b = model(clip_frames[:, :16].float() / 255.0)
    assert torch.allclose(a, b, atol=1e-5)


def test_determinism_under_seed():
    frames = noise_frames(16)
    with torch.inference_mode():
        a, b, c = seeded(5)(frames), seeded(5)(frames), seeded(6)(frames)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_bf16_close_to_fp32():
    model = seeded()
    frames = noise_frames(24)
    with torch.inference_mode():
        ref = model(frames)
        low = model.to(torch.bfloat16)(frames)
    assert low.dtype == torch.bfloat16
    low = low.float()
    assert (low - ref).abs().max() < 0.05 * ref.abs().max()
    assert torch.corrcoef(torch.stack([low.flatten(), ref.flatten()]))[0, 1] > 0.999


def test_bad_input_is_a_clear_error():
    model = seeded()
    with pytest.raises(FoleyscopeError, match="at least 16 frames"):
        model(noise_frames(15))
    with pytest.raises(FoleyscopeError, match=r"\[B, T, 224, 224, 3\]"):
        model(torch.zeros(1, 16, 3, 224, 224, dtype=torch.uint8))


def _math_attention(q, k, v, *args, **kwargs):
    """Plain softmax attention: the FLOP counter sees its matmuls (it cannot see CPU SDPA kernels)."""
    return ((q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5).softmax(-1) @ v


@pytest.mark.parametrize("cfg", [SynchformerConfig(patch_size=32, embed_dim=32, depth=2, num_heads=2),
                                 SynchformerConfig(patch_size=56, embed_dim=48, depth=1, num_heads=3,
                                                   mlp_ratio=2)])
def test_flops_match_flop_counter(cfg, monkeypatch):
    model = seeded(cfg=cfg)
    frames = noise_frames(24)
    with torch.inference_mode():
        ref = model(frames)
        monkeypatch.setattr(F, "scaled_dot_product_attention", _math_attention)
        with FlopCounterMode(display=False) as counter:
            out = model(frames)
    assert torch.allclose(out, ref, atol=1e-5)  # the substitute computes the same thing
    assert counter.get_total_flops() == sync_flops(cfg, 24)
    official = sync_flops(SYNC_PRESETS["official"], 250)
    assert 1.0e13 < official < 1.3e13  # ~11 TFLOP for 10 s of video at the release size
