"""Building blocks of the HunyuanVideo-Foley denoiser.

Attribute names and parameter shapes follow the official state-dict layout exactly, so the released
checkpoints load without renaming. Every tensor inside the blocks is head-first ([B, heads, S, D]) so the
RoPE tables ([S, D/2]) broadcast without reshaping and SDPA needs no extra transposes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# ---------------------------------------------------------------------------------------------- helpers


def rope_table(positions: Tensor, head_dim: int, theta: float) -> tuple[Tensor, Tensor]:
    """cos and sin [S, head_dim/2] in float32 for rotary embedding at (possibly non-contiguous) positions."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim))
    angles = torch.outer(positions.float(), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate adjacent channel pairs (x[2i], x[2i+1]) of x [..., S, D] by the table angles.

    Done in float32 (as the reference does) and cast back, so bf16 runs keep accurate positions.
    """
    pairs = x.float().unflatten(-1, (-1, 2))
    even, odd = pairs[..., 0], pairs[..., 1]
    out = torch.stack((even * cos - odd * sin, odd * cos + even * sin), dim=-1)
    return out.flatten(-2).to(x.dtype)


def nearest_exact_index(n_in: int, n_out: int, device: torch.device | None = None) -> Tensor:
    """Source indices that F.interpolate(mode="nearest-exact") picks when resizing n_in -> n_out.

    Asking torch itself (on an arange) guarantees the same float rounding at cell boundaries.
    """
    src = torch.arange(n_in, dtype=torch.float32, device=device).view(1, 1, n_in)
    return F.interpolate(src, size=n_out, mode="nearest-exact").view(n_out).long()


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift


def attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """SDPA over head-first tensors; returns tokens [B, S, heads*D]."""
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)


def split_heads(x: Tensor, n: int, heads: int) -> Tensor:
    """[B, S, n*H] laid out as (n, heads, head_dim) -> [n, B, heads, S, head_dim]."""
    return x.unflatten(-1, (n, heads, -1)).permute(2, 0, 3, 1, 4)


# ---------------------------------------------------------------------------------------------- layers


class RMSNorm(nn.Module):
    """RMS norm over the last axis, computed in float32 then scaled by `weight` in the input dtype.

    eps=None reproduces nn.RMSNorm's default: the machine epsilon of the *input* dtype.
    """

    def __init__(self, dim: int, eps: float | None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        eps = torch.finfo(x.dtype).eps if self.eps is None else self.eps
        return F.rms_norm(x.float(), (x.shape[-1],), eps=eps).to(x.dtype) * self.weight


class ChannelLastConv(nn.Module):
    """1-D convolution along the token axis of [B, L, C]; kernel 1 runs as a plain matmul.

    The weight keeps nn.Conv1d's [out, in, k] layout (that is how the checkpoint stores it).
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, bias: bool):
        super().__init__()
        conv = nn.Conv1d(c_in, c_out, kernel, bias=bias)  # only to borrow its default initialisation
        self.weight = conv.weight
        self.bias = conv.bias

    def forward(self, x: Tensor) -> Tensor:
        k = self.weight.shape[-1]
        if k == 1:
            return F.linear(x, self.weight[..., 0], self.bias)
        return F.conv1d(x.transpose(1, 2), self.weight, self.bias, padding=k // 2).transpose(1, 2)


def conv_swiglu_width(hidden: int, multiple_of: int = 256) -> int:
    """Inner width of the conv SwiGLU: 2/3 of the nominal width, rounded up to a multiple of 256."""
    inner = int(2 * hidden / 3)
    return multiple_of * ((inner + multiple_of - 1) // multiple_of)


class ConvSwiGLU(nn.Module):
    """SwiGLU MLP whose three projections are token-axis convolutions (kernel 1 or 3), no biases."""

    def __init__(self, dim: int, hidden: int, kernel: int):
        super().__init__()
        inner = conv_swiglu_width(hidden)
        self.w1 = ChannelLastConv(dim, inner, kernel, bias=False)
        self.w2 = ChannelLastConv(inner, dim, kernel, bias=False)
        self.w3 = ChannelLastConv(dim, inner, kernel, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class SwiGLU(nn.Module):
    """Gated projection of the SigLIP2 frame features into the visual stream."""

    def __init__(self, dim: int, hidden: int, out: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, out, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class Modulation(nn.Module):
    """adaLN parameters: SiLU then one linear producing `factor` vectors of width `dim`."""

    def __init__(self, dim: int, factor: int):
        super().__init__()
        self.linear = nn.Linear(dim, factor * dim)

    def forward(self, vec: Tensor) -> Tensor:
        return self.linear(F.silu(vec))


class SiLUProjection(nn.Module):
    """Linear-SiLU-Linear projection of the CLAP text tokens (`cond_in`)."""

    def __init__(self, dim_in: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(dim_in, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class TimestepEmbed(nn.Module):
    """Sinusoidal embedding of t in [0, 1000] (cos half first) followed by an MLP."""

    def __init__(self, dim: int, freq_dim: int = 256, max_period: float = 10000.0):
        super().__init__()
        self.freq_dim = freq_dim
        self.max_period = max_period
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(self.max_period) * torch.arange(half, device=t.device).float() / half)
        args = t.float()[:, None] * freqs[None]
        emb = torch.cat([args.cos(), args.sin()], dim=-1)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


class AudioEmbed(nn.Module):
    """Patch-1 embedding of latents [B, C, L] -> tokens [B, L, hidden] (a kernel-1 conv)."""

    def __init__(self, c_in: int, dim: int):
        super().__init__()
        self.proj = ChannelLastConv(c_in, dim, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x.transpose(1, 2))


class FinalLayer(nn.Module):
    """LayerNorm then a linear to the latent channels.

    `adaLN_modulation` exists only so the checkpoint's weights have a home: the reference feeds it a
    per-token vector, and its modulate() silently drops 3-D shift/scale, so the modulation never acts.
    We reproduce that (and skip computing it).
    """

    def __init__(self, dim: int, c_out: int):
        super().__init__()
        self.linear = nn.Linear(dim, c_out)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(F.layer_norm(x, (x.shape[-1],), eps=1e-6))


# ---------------------------------------------------------------------------------------------- blocks


@dataclass
class RopeTables:
    """Step-invariant rotary tables (float32 cos/sin pairs, each [S, head_dim/2]).

    audio_joint / visual_joint: the joint audio-visual self-attention, where audio token i sits at
    position 2i and each visual token at 2i+1 of the audio token it is stretched onto.
    visual_gather: which visual token feeds each visual slot after that stretch-and-squeeze (None when
    it is the identity, i.e. whenever the latent is at least as long as the clip sequence).
    audio_seq / visual_seq / text_seq: plain 0..S-1 positions (cross-attention and single blocks).
    """

    audio_joint: tuple[Tensor, Tensor]
    visual_joint: tuple[Tensor, Tensor]
    visual_gather: Tensor | None
    audio_seq: tuple[Tensor, Tensor]
    visual_seq: tuple[Tensor, Tensor]


class TripleBlock(nn.Module):
    """Dual-stream block: joint audio+visual self-attention, then both streams query the text tokens
    (cross-attention), then per-stream MLPs; each stream gets 9-way adaLN from the timestep vector."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        head_dim = dim // heads
        mlp = int(dim * mlp_ratio)
        self.audio_mod = Modulation(dim, 9)
        self.audio_self_attn_qkv = nn.Linear(dim, 3 * dim)
        self.audio_self_q_norm = RMSNorm(head_dim, 1e-6)
        self.audio_self_k_norm = RMSNorm(head_dim, 1e-6)
        self.audio_self_proj = nn.Linear(dim, dim)
        self.v_cond_mod = Modulation(dim, 9)
        self.v_cond_attn_qkv = nn.Linear(dim, 3 * dim)
        self.v_cond_attn_q_norm = RMSNorm(head_dim, 1e-6)
        self.v_cond_attn_k_norm = RMSNorm(head_dim, 1e-6)
        self.v_cond_self_proj = nn.Linear(dim, dim)
        self.audio_cross_q = nn.Linear(dim, dim)
        self.v_cond_cross_q = nn.Linear(dim, dim)
        self.text_cross_kv = nn.Linear(dim, 2 * dim)
        self.audio_cross_q_norm = RMSNorm(head_dim, 1e-6)
        self.v_cond_cross_q_norm = RMSNorm(head_dim, 1e-6)
        self.text_cross_k_norm = RMSNorm(head_dim, 1e-6)
        self.audio_cross_proj = nn.Linear(dim, dim)
        self.v_cond_cross_proj = nn.Linear(dim, dim)
        self.audio_mlp = MLP(dim, mlp)
        self.v_cond_mlp = MLP(dim, mlp)

    def text_kv(self, text: Tensor, rope: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """Keys (normed, rotated) and values of the projected text tokens: step-invariant, cached."""
        k, v = split_heads(self.text_cross_kv(text), 2, self.heads)
        return apply_rope(self.text_cross_k_norm(k).to(v.dtype), *rope), v

    def _joint_qkv(self, x, mod, qkv, q_norm, k_norm):
        q, k, v = split_heads(qkv(modulate(_ln(x), mod[0], mod[1])), 3, self.heads)
        return q_norm(q).to(v.dtype), k_norm(k).to(v.dtype), v

    def forward(self, audio: Tensor, visual: Tensor, vec: Tensor, text_k: Tensor, text_v: Tensor,
                rope: RopeTables) -> tuple[Tensor, Tensor]:
        am = [m.unsqueeze(1) for m in self.audio_mod(vec).chunk(9, dim=-1)]
        vm = [m.unsqueeze(1) for m in self.v_cond_mod(vec).chunk(9, dim=-1)]
        n_vis = visual.shape[1]

        # 1. joint self-attention (visual tokens first, as in the reference)
        aq, ak, av = self._joint_qkv(audio, am, self.audio_self_attn_qkv, self.audio_self_q_norm,
                                     self.audio_self_k_norm)
        vq, vk, vv = self._joint_qkv(visual, vm, self.v_cond_attn_qkv, self.v_cond_attn_q_norm,
                                     self.v_cond_attn_k_norm)
        aq, ak = apply_rope(aq, *rope.audio_joint), apply_rope(ak, *rope.audio_joint)
        if rope.visual_gather is not None:
            vq, vk = vq[:, :, rope.visual_gather], vk[:, :, rope.visual_gather]
        vq, vk = apply_rope(vq, *rope.visual_joint), apply_rope(vk, *rope.visual_joint)
        out = attention(torch.cat((vq, aq), 2), torch.cat((vk, ak), 2), torch.cat((vv, av), 2))
        v_out, a_out = out.split([n_vis, out.shape[1] - n_vis], dim=1)
        audio = audio + am[2] * self.audio_self_proj(a_out)
        visual = visual + vm[2] * self.v_cond_self_proj(v_out)

        # 2. cross-attention: both streams query the cached text keys/values
        aq = split_heads(self.audio_cross_q(modulate(_ln(audio), am[3], am[4])), 1, self.heads)[0]
        vq = split_heads(self.v_cond_cross_q(modulate(_ln(visual), vm[3], vm[4])), 1, self.heads)[0]
        aq = apply_rope(self.audio_cross_q_norm(aq), *rope.audio_seq)
        vq = apply_rope(self.v_cond_cross_q_norm(vq), *rope.visual_seq)
        out = attention(torch.cat((vq, aq), 2), text_k, text_v)
        v_out, a_out = out.split([n_vis, out.shape[1] - n_vis], dim=1)
        audio = audio + am[5] * self.audio_cross_proj(a_out)
        visual = visual + vm[5] * self.v_cond_cross_proj(v_out)

        # 3. MLPs
        audio = audio + am[8] * self.audio_mlp(modulate(_ln(audio), am[6], am[7]))
        visual = visual + vm[8] * self.v_cond_mlp(modulate(_ln(visual), vm[6], vm[7]))
        return audio, visual


class SingleBlock(nn.Module):
    """Audio-only block with per-token 6-way adaLN (timestep + sync), SDPA, a kernel-3 conv output
    projection and a kernel-3 conv SwiGLU MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        self.modulation = Modulation(dim, 6)
        self.linear_qkv = nn.Linear(dim, 3 * dim)
        self.linear1 = ChannelLastConv(dim, dim, 3, bias=True)
        self.linear2 = ConvSwiGLU(dim, int(dim * mlp_ratio), kernel=3)
        self.q_norm = RMSNorm(dim // heads, None)
        self.k_norm = RMSNorm(dim // heads, None)

    def forward(self, x: Tensor, vec: Tensor, rope: tuple[Tensor, Tensor]) -> Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(vec).chunk(6, dim=-1)
        h = modulate(_ln(x, 1e-5), shift1, scale1)
        # this block packs q/k/v innermost: channel index = (head, dim, which)
        q, k, v = self.linear_qkv(h).unflatten(-1, (self.heads, -1, 3)).permute(4, 0, 2, 1, 3)
        q, k = apply_rope(self.q_norm(q), *rope), apply_rope(self.k_norm(k), *rope)
        # v strided by 3 would push SDPA onto its slow math path
        x = x + gate1 * self.linear1(attention(q, k, v.contiguous()))
        return x + gate2 * self.linear2(modulate(_ln(x, 1e-5), shift2, scale2))


def _ln(x: Tensor, eps: float = 1e-6) -> Tensor:
    return F.layer_norm(x, (x.shape[-1],), eps=eps)
