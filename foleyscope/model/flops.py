"""Analytic FLOP counts of the Foley denoiser (matmuls, convolutions and attention; 2 FLOPs per MAC).

Elementwise work (norms, RoPE, gates, activations) is left out: it is memory-bound and a few percent
at most. The doctor divides these counts by a measured peak FLOP/s to get a compute floor per step.
Counts follow foleyscope.model.foley exactly, including what it skips: the step-invariant part
(prepare) is not in the per-step count, and the final layer's unused adaLN modulation is in neither.
"""

from __future__ import annotations

from foleyscope.model.foley import FoleyConfig
from foleyscope.model.foley_blocks import conv_swiglu_width


def _linear(tokens: int, c_in: int, c_out: int) -> float:
    return 2.0 * tokens * c_in * c_out


def _attention(q_len: int, kv_len: int, width: int) -> float:
    """Q.K^T plus P.V over all heads (width = heads * head_dim)."""
    return 4.0 * q_len * kv_len * width


def denoiser_flops_per_step(cfg: FoleyConfig, latent_len: int, n_clip: int, n_sync: int, n_text: int,
                            batch: int) -> float:
    """FLOPs of one forward() (one sampler step) for `batch` sequences (a CFG pair counts as 2).

    n_sync does not enter: the sync features are projected once, in prepare().
    """
    h, L, nc, t = cfg.hidden, latent_len, n_clip, n_text
    mlp = int(h * cfg.mlp_ratio)
    conv_inner = conv_swiglu_width(int(h * cfg.mlp_ratio))
    both = L + nc

    top = _linear(1, cfg.time_freq_dim, h) + _linear(1, h, h)  # timestep MLP
    top += _linear(L, cfg.latent_channels, h)  # audio embedder
    top += _linear(L, h, cfg.latent_channels)  # final linear

    triple = 2 * _linear(1, h, 9 * h)  # audio + visual adaLN from the timestep vector
    triple += _linear(both, h, 3 * h) + _attention(both, both, h) + _linear(both, h, h)  # joint self-attn
    triple += _linear(both, h, h) + _attention(both, t, h) + _linear(both, h, h)  # text cross-attn
    triple += _linear(both, h, mlp) + _linear(both, mlp, h)  # MLPs

    single = _linear(L, h, 6 * h)  # per-token adaLN
    single += _linear(L, h, 3 * h) + _attention(L, L, h)
    single += _linear(L, 3 * h, h)  # kernel-3 conv output projection
    single += 3 * _linear(L, 3 * h, conv_inner)  # kernel-3 conv SwiGLU (w1, w3: h->inner, w2: inner->h)

    return batch * (top + cfg.depth_triple * triple + cfg.depth_single * single)


def denoiser_prepare_flops(cfg: FoleyConfig, latent_len: int, n_clip: int, n_sync: int, n_text: int,
                           batch: int) -> float:
    """FLOPs of prepare(): the step-invariant projections, done once per video batch.

    latent_len does not enter (stretching the sync tokens to it is a gather).
    """
    h = cfg.hidden
    sync_inner = conv_swiglu_width(4 * h)
    k = cfg.sync_in_kernel
    visual = 2 * _linear(n_clip, cfg.clip_dim, h) + _linear(n_clip, h, h)
    text = _linear(n_text, cfg.text_dim, h) + _linear(n_text, h, h)
    text += cfg.depth_triple * _linear(n_text, h, 2 * h)  # every block's text keys/values
    sync = _linear(n_sync, cfg.sync_dim, h) + 3 * _linear(n_sync, k * h, sync_inner)
    return batch * (visual + text + sync)
