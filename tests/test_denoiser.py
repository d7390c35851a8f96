"""The Foley denoiser: official key layout, file round-trip, step-invariant caching, conditioning,
determinism, bf16, preset sizes and the analytic FLOP count (tiny config, CPU, a few seconds)."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import foleyscope.model.foley as foley
from foleyscope.errors import FoleyscopeError
from foleyscope.model.flops import denoiser_flops_per_step, denoiser_prepare_flops
from foleyscope.model.foley import FOLEY_PRESETS, FoleyConfig, FoleyDenoiser, is_ignored_key
from foleyscope.model.foley_blocks import conv_swiglu_width

TINY = FoleyConfig.preset("tiny")
L, N_CLIP, N_SYNC, N_TEXT = 250, 40, 120, 77  # 5 s: 50 Hz latents, 8 fps clip, 24 sync tokens per second


def official_layout(cfg: FoleyConfig) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the official HunyuanVideoFoley state dict, written from reading models/hifi_foley.py.

    Biases everywhere except the SwiGLU projections; parameter-free LayerNorms have no keys; convs keep
    nn.Conv1d's [out, in, kernel]; the conv-SwiGLU inner width is 2/3 of 4*hidden rounded up to 256.
    """
    h, d, c = cfg.hidden, cfg.head_dim, cfg.latent_channels
    inner = conv_swiglu_width(4 * h)
    keys: dict[str, tuple[int, ...]] = {}

    def linear(name, n_in, n_out, bias=True):
        keys[f"{name}.weight"] = (n_out, n_in)
        if bias:
            keys[f"{name}.bias"] = (n_out,)

    def conv(name, n_in, n_out, k, bias):
        keys[f"{name}.weight"] = (n_out, n_in, k)
        if bias:
            keys[f"{name}.bias"] = (n_out,)

    conv("audio_embedder.proj", c, h, 1, True)
    for w, (i, o) in {"w1": (cfg.clip_dim, h), "w2": (h, h), "w3": (cfg.clip_dim, h)}.items():
        linear(f"visual_proj.{w}", i, o, bias=False)
    linear("cond_in.linear_1", cfg.text_dim, h)
    linear("cond_in.linear_2", h, h)
    linear("time_in.mlp.0", 256, h)
    linear("time_in.mlp.2", h, h)
    linear("sync_in.0", cfg.sync_dim, h)
    for w, (i, o) in {"w1": (h, inner), "w2": (inner, h), "w3": (h, inner)}.items():
        conv(f"sync_in.2.{w}", i, o, 1, False)
    keys["sync_pos_emb"] = (1, 1, 8, cfg.sync_dim)
    for n in range(cfg.depth_triple):
        p = f"triple_blocks.{n}"
        streams = (("audio", "audio_self_attn_qkv", "audio_self", "audio_self_proj"),
                   ("v_cond", "v_cond_attn_qkv", "v_cond_attn", "v_cond_self_proj"))
        for stream, qkv, self_norm, self_proj in streams:
            linear(f"{p}.{stream}_mod.linear", h, 9 * h)
            linear(f"{p}.{qkv}", h, 3 * h)
            keys[f"{p}.{self_norm}_q_norm.weight"] = (d,)
            keys[f"{p}.{self_norm}_k_norm.weight"] = (d,)
            linear(f"{p}.{self_proj}", h, h)
            linear(f"{p}.{stream}_cross_q", h, h)
            keys[f"{p}.{stream}_cross_q_norm.weight"] = (d,)
            linear(f"{p}.{stream}_cross_proj", h, h)
            linear(f"{p}.{stream}_mlp.fc1", h, 4 * h)
            linear(f"{p}.{stream}_mlp.fc2", 4 * h, h)
        linear(f"{p}.text_cross_kv", h, 2 * h)
        keys[f"{p}.text_cross_k_norm.weight"] = (d,)
    for n in range(cfg.depth_single):
        p = f"single_blocks.{n}"
        linear(f"{p}.modulation.linear", h, 6 * h)
        linear(f"{p}.linear_qkv", h, 3 * h)
        conv(f"{p}.linear1", h, h, 3, True)
        for w, (i, o) in {"w1": (h, inner), "w2": (inner, h), "w3": (h, inner)}.items():
            conv(f"{p}.linear2.{w}", i, o, 3, False)
        keys[f"{p}.q_norm.weight"] = (d,)
        keys[f"{p}.k_norm.weight"] = (d,)
    linear("final_layer.linear", h, c)
    linear("final_layer.adaLN_modulation.1", h, 2 * h)
    keys["empty_clip_feat"] = (1, cfg.clip_dim)
    keys["empty_sync_feat"] = (1, cfg.sync_dim)
    return keys


def inputs(seed: int = 0, batch: int = 2):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 128, L, generator=g)
    clip = torch.randn(batch, N_CLIP, 768, generator=g)
    sync = torch.randn(batch, N_SYNC, 768, generator=g)
    text = torch.randn(batch, N_TEXT, 768, generator=g)
    return x, clip, sync, text


def seeded_model(seed: int = 0, cfg: FoleyConfig = TINY) -> FoleyDenoiser:
    torch.manual_seed(seed)
    return FoleyDenoiser(cfg).eval()


def run(model, x, clip, sync, text, t=500.0):
    with torch.no_grad():
        return model(x, torch.full((x.shape[0],), t), model.prepare(clip, sync, text, x.shape[-1]))


def test_keys_and_shapes_match_the_official_layout():
    ours = {k: tuple(v.shape) for k, v in FoleyDenoiser(TINY).state_dict().items()}
    assert ours == official_layout(TINY)
    # the hand-derived conv-SwiGLU widths of the released models (hidden 1536 and 1408)
    widths = [conv_swiglu_width(4 * h) for h in (1536, 1408, 128)]
    assert widths == [4096, 3840, 512]


def test_official_layout_state_dict_round_trips_through_a_file(tmp_path):
    g = torch.Generator().manual_seed(7)
    sd = {k: torch.randn(shape, generator=g) * 0.05 for k, shape in official_layout(TINY).items()}
    sd["repa_projector.0.weight"] = torch.randn(4, 4, generator=g)  # training-only extra a release may carry
    path = tmp_path / "hunyuanvideo_foley_tiny.pth"
    torch.save(sd, path)

    loaded = torch.load(path, weights_only=True, mmap=True)
    ignored = [k for k in loaded if is_ignored_key(k)]
    assert ignored == ["repa_projector.0.weight"]
    model = FoleyDenoiser(TINY).eval()
    model.load_state_dict({k: v for k, v in loaded.items() if k not in ignored}, strict=True)
    blk0, single0 = model.triple_blocks[0], model.single_blocks[0]
    assert torch.equal(blk0.text_cross_kv.weight, sd["triple_blocks.0.text_cross_kv.weight"])
    assert torch.equal(single0.linear2.w2.weight, sd["single_blocks.0.linear2.w2.weight"])

    path2 = tmp_path / "resaved.pth"
    torch.save(model.state_dict(), path2)
    again = FoleyDenoiser(TINY).eval()
    again.load_state_dict(torch.load(path2, weights_only=True), strict=True)
    out1, out2 = run(model, *inputs()), run(again, *inputs())
    assert torch.equal(out1, out2)
    assert out1.shape == (2, 128, L) and torch.isfinite(out1).all() and out1.std() > 0


def test_no_real_key_is_ever_treated_as_ignored():
    for cfg in FOLEY_PRESETS.values():
        with torch.device("meta"):
            names = FoleyDenoiser(cfg).state_dict().keys()
        assert not any(is_ignored_key(k) for k in names)


def test_step_invariant_work_runs_once_per_video(monkeypatch):
    model = seeded_model()
    calls: dict[str, int] = {}

    def count(name):
        return lambda *_: calls.__setitem__(name, calls.get(name, 0) + 1)

    watched = {"visual_proj": model.visual_proj, "cond_in": model.cond_in, "sync_in": model.sync_in}
    watched |= {f"text_kv{i}": blk.text_cross_kv for i, blk in enumerate(model.triple_blocks)}
    for name, module in watched.items():
        module.register_forward_hook(count(name))
    real_table = foley.rope_table
    monkeypatch.setattr(foley, "rope_table", lambda *a: (count("rope")(), real_table(*a))[1])
    steps_seen = []
    model.single_blocks[0].register_forward_hook(lambda *_: steps_seen.append(1))

    x, clip, sync, text = inputs()
    with torch.no_grad():
        cond = model.prepare(clip, sync, text, L)
        after_prepare = dict(calls)
        for t in (1000.0, 750.0, 500.0, 250.0):
            x = x - 0.25 * model(x, torch.full((2,), t), cond)
    assert len(steps_seen) == 4
    assert after_prepare == calls  # the steps added nothing
    assert all(calls[name] == 1 for name in watched)
    assert calls["rope"] == 5  # joint audio, joint visual, audio seq, visual seq, text: once each


def test_deterministic_under_a_seed():
    a, b = seeded_model(3), seeded_model(3)
    out_a, out_b = run(a, *inputs(1)), run(b, *inputs(1))
    assert torch.equal(out_a, out_b)
    assert torch.equal(out_a, run(a, *inputs(1)))  # and repeatable on the same instance
    assert not torch.equal(out_a, run(seeded_model(4), *inputs(1)))


def test_conditioning_changes_the_output():
    model = seeded_model()
    x, clip, sync, text = inputs()
    base = run(model, x, clip, sync, text)
    for changed in (run(model, x, clip, sync, text + 0.5),   # text (prompt)
                    run(model, x, clip * -1, sync, text),    # clip frames
                    run(model, x, clip, sync.roll(8, 1), text),  # sync tokens
                    run(model, x, clip, sync, text, t=100.0)):   # timestep
        assert (changed - base).abs().max() > 1e-3 * base.abs().max()
    # batch rows are independent: changing sample 1's text leaves sample 0 alone
    text2 = text.clone()
    text2[1] += 0.5
    other = run(model, x, clip, sync, text2)
    assert torch.allclose(other[0], base[0], rtol=1e-5, atol=1e-6) and not torch.allclose(other[1], base[1])


def test_cfg_uncond_branch_uses_the_learnable_empty_features():
    model = seeded_model()
    with torch.no_grad():
        model.empty_clip_feat.normal_()
        model.empty_sync_feat.normal_()
    x, clip, sync, text = inputs(batch=1)
    e_clip, e_sync = model.uncond_features(1, N_CLIP, N_SYNC)
    assert e_clip.shape == (1, N_CLIP, 768) and e_sync.shape == (1, N_SYNC, 768)
    assert torch.equal(e_clip[0, 5], model.empty_clip_feat[0])
    neg = torch.zeros_like(text)
    with torch.no_grad():
        cond = model.prepare(torch.cat([e_clip, clip]), torch.cat([e_sync, sync]), torch.cat([neg, text]), L)
        v = model(torch.cat([x, x]), torch.full((2,), 600.0), cond)
        alone = model(x, torch.full((1,), 600.0), model.prepare(e_clip, e_sync, neg, L))
    assert torch.allclose(v[:1], alone, rtol=1e-4, atol=1e-5)  # [uncond, cond] batching is exact
    assert (v[1] - v[0]).abs().max() > 1e-2 * v.abs().max()


def test_bf16_is_close_to_fp32():
    model = seeded_model()
    ref = run(model, *inputs())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = run(model, *inputs())
    half = run(seeded_model().to(torch.bfloat16), *inputs())
    assert half.dtype == torch.bfloat16
    for out in (auto, half):
        err = (out.float() - ref).abs().max() / ref.abs().max()
        assert err < 5e-2, err


def test_bad_shapes_raise_clear_errors():
    model = seeded_model()
    x, clip, sync, text = inputs()
    with pytest.raises(FoleyscopeError, match="multiple of 8"):
        model.prepare(clip, sync[:, :-3], text, L)
    with pytest.raises(FoleyscopeError, match="widths"):
        model.prepare(clip[..., :500], sync, text, L)
    cond = model.prepare(clip, sync, text, L)
    with pytest.raises(FoleyscopeError, match="length"):
        model(x[..., :-1], torch.full((2,), 10.0), cond)
    with pytest.raises(FoleyscopeError, match="unknown denoiser preset"):
        FoleyConfig.preset("huge")


@pytest.mark.parametrize("name,billions", [("xxl", 5.1), ("xl", 2.9)])
def test_release_presets_have_the_documented_sizes(name, billions):
    cfg = FoleyConfig.preset(name)
    with torch.device("meta"):
        model = FoleyDenoiser(cfg)
    n = sum(p.numel() for p in model.parameters())
    assert abs(n / 1e9 - billions) < 0.1, n
    assert len(model.triple_blocks) == cfg.depth_triple and len(model.single_blocks) == cfg.depth_single
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == official_layout(cfg)


SMALL = FoleyConfig("2+3", depth_triple=2, depth_single=3, hidden=192, heads=3)


@pytest.mark.parametrize("cfg", [TINY, SMALL])
def test_analytic_flops_match_a_measured_count(cfg):
    model = seeded_model(0, cfg)
    x, clip, sync, text = inputs()
    # the math SDPA backend decomposes attention into bmm, which the counter sees on CPU
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        with FlopCounterMode(display=False) as prep:
            cond = model.prepare(clip, sync, text, L)
        with FlopCounterMode(display=False) as step:
            model(x, torch.full((2,), 300.0), cond)
    per_step = denoiser_flops_per_step(cfg, L, N_CLIP, N_SYNC, N_TEXT, batch=2)
    prepare = denoiser_prepare_flops(cfg, L, N_CLIP, N_SYNC, N_TEXT, batch=2)
    assert per_step == pytest.approx(step.get_total_flops(), rel=0.02)
    assert prepare == pytest.approx(prep.get_total_flops(), rel=0.02)
    assert denoiser_flops_per_step(cfg, L, N_CLIP, N_SYNC, N_TEXT, batch=1) == per_step / 2


def test_xxl_flops_are_near_two_per_parameter_per_audio_token():
    cfg = FoleyConfig.preset("xxl")
    with torch.device("meta"):
        params = sum(p.numel() for p in FoleyDenoiser(cfg).parameters())
    per_step = denoiser_flops_per_step(cfg, 500, 80, 240, 77, batch=2)  # 10 s with CFG
    # below 2*params*tokens (the triple blocks' adaLN runs once per sample, not per token), not far below
    assert 0.6 < per_step / (2 * params * 2 * 500) < 1.0
