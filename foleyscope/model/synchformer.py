"""Synchformer video branch (MotionFormer divided space-time ViT) behind the `sync_encode` stage.

The denoiser is conditioned on audio-visual sync features: 25 fps RGB frames, already resized to
224 (short side, bicubic) and centre-cropped, are cut into 16-frame segments with stride 8
(`n_segments = (T - 16) // 8 + 1`; trailing frames that do not fill a segment are dropped, as in the
official pipeline). Each segment becomes 8 tubelets-in-time x 14 x 14 patches, runs through a ViT whose
blocks attend over time then space, and a per-frame CLS-pooling layer reduces every time step to one
768-d token: 8 tokens per segment, [B, S * 8, 768] in all (10 s -> 30 segments -> 240 tokens).

Parameter names follow the official `synchformer_state_dict.pth` (prefix `vfeat_extractor.`) so the
release file loads strictly once the parts we do not build (IGNORED_KEY_PREFIXES) are set aside.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from foleyscope.errors import FoleyscopeError

# Checkpoint entries for parts the pipeline never runs: the audio branch (AST), the audio/visual
# projections and the offset-classification transformer, and the 2-D patch embedding that
# MotionFormer keeps but does not use (it tokenises with the 3-D tubelet embedding).
IGNORED_KEY_PREFIXES: tuple[str, ...] = (
    "afeat_extractor.",
    "aproj.",
    "vproj.",
    "transformer.",
    "vfeat_extractor.patch_embed.",
)

_LN_EPS = 1e-6


@dataclass(frozen=True)
class SynchformerConfig:
    image_size: int = 224
    patch_size: int = 16
    tubelet: int = 2  # frames per 3-D patch
    segment_frames: int = 16
    segment_stride: int = 8
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: int = 4
    fps: int = 25
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __post_init__(self) -> None:
        if self.segment_frames % self.tubelet or self.image_size % self.patch_size:
            raise FoleyscopeError("Synchformer config: segment/tubelet or image/patch sizes do not divide")
        if self.embed_dim % self.num_heads:
            raise FoleyscopeError("Synchformer config: embed_dim must be divisible by num_heads")

    @property
    def tokens_per_segment(self) -> int:
        return self.segment_frames // self.tubelet

    @property
    def patches_per_frame(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def n_segments(self, n_frames: int) -> int:
        """Segments the official splitter makes from `n_frames` frames (0 if too few)."""
        if n_frames < self.segment_frames:
            return 0
        return (n_frames - self.segment_frames) // self.segment_stride + 1

    def n_tokens(self, n_frames: int) -> int:
        return self.n_segments(n_frames) * self.tokens_per_segment


SYNC_PRESETS: dict[str, SynchformerConfig] = {
    "official": SynchformerConfig(),
    # Same 224 px input, segment logic and token count; 32 px patches and a narrow, 1-block ViT.
    # Note its feature width is 32, not 768.
    "tiny": SynchformerConfig(patch_size=32, embed_dim=32, depth=1, num_heads=2),
}


class _QKVAttention(nn.Module):
    """MotionFormer's divided attention: the CLS token attends to every token, each patch token
    attends along one axis (time or space) plus the CLS token. Keys: `qkv`, `proj`."""

    def __init__(self, dim: int, heads: int, along_time: bool) -> None:
        super().__init__()
        self.heads, self.along_time = heads, along_time
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, frames: int) -> Tensor:
        n, length, dim = x.shape
        h, hd = self.heads, dim // self.heads
        patches = (length - 1) // frames
        q, k, v = self.qkv(x).view(n, length, 3, h, hd).permute(2, 0, 3, 1, 4)  # each [n, h, L, hd]
        cls_out = F.scaled_dot_product_attention(q[:, :, :1], k, v)  # [n, h, 1, hd]

        def grid(t: Tensor) -> Tensor:  # patch tokens as [n, h, groups, group_len, hd]
            t = t[:, :, 1:].reshape(n, h, frames, patches, hd)
            return t.transpose(2, 3) if self.along_time else t

        def with_cls(t: Tensor, g: Tensor) -> Tensor:  # prepend the CLS key/value to every group
            return torch.cat([t[:, :, None, :1].expand(-1, -1, g.shape[2], -1, -1), g], dim=3)

        qg, kg, vg = grid(q), grid(k), grid(v)
        kg, vg = with_cls(k, kg), with_cls(v, vg)
        groups, glen = qg.shape[2], qg.shape[3]
        out = F.scaled_dot_product_attention(
            qg.reshape(n * h, groups, glen, hd),
            kg.reshape(n * h, groups, glen + 1, hd),
            vg.reshape(n * h, groups, glen + 1, hd),
        ).view(n, h, groups, glen, hd)
        if self.along_time:
            out = out.transpose(2, 3)
        out = torch.cat([cls_out, out.reshape(n, h, frames * patches, hd)], dim=2)
        return self.proj(out.transpose(1, 2).reshape(n, length, dim))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _Block(nn.Module):
    """Pre-norm block: time attention (norm3), space attention (norm1), MLP (norm2)."""

    def __init__(self, cfg: SynchformerConfig) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.norm1 = nn.LayerNorm(d, eps=_LN_EPS)
        self.norm2 = nn.LayerNorm(d, eps=_LN_EPS)
        self.norm3 = nn.LayerNorm(d, eps=_LN_EPS)
        self.timeattn = _QKVAttention(d, cfg.num_heads, along_time=True)
        self.attn = _QKVAttention(d, cfg.num_heads, along_time=False)
        self.mlp = _Mlp(d, d * cfg.mlp_ratio)

    def forward(self, x: Tensor, frames: int) -> Tensor:
        x = x + self.timeattn(self.norm3(x), frames)
        x = x + self.attn(self.norm1(x), frames)
        return x + self.mlp(self.norm2(x))


class _InProj(nn.Module):
    """Holds `in_proj_weight` / `in_proj_bias` / `out_proj` under the checkpoint's `self_attn` names."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)


class _ClsPool(nn.Module):
    """A pre-norm transformer layer over [CLS, tokens] whose CLS output is the pooled token.

    Only the CLS row is returned, so only the CLS query, its residual and its MLP are computed:
    the same result as running the full layer and keeping row 0.
    """

    def __init__(self, cfg: SynchformerConfig) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.heads = cfg.num_heads
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.self_attn = _InProj(d)
        self.linear1 = nn.Linear(d, d * cfg.mlp_ratio)
        self.linear2 = nn.Linear(d * cfg.mlp_ratio, d)
        self.norm1 = nn.LayerNorm(d, eps=_LN_EPS)
        self.norm2 = nn.LayerNorm(d, eps=_LN_EPS)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, x: Tensor) -> Tensor:  # [n, L, d] -> [n, d]
        n, length, d = x.shape
        h, hd = self.heads, d // self.heads
        x = torch.cat([self.cls_token.expand(n, -1, -1), x], dim=1)
        y = self.norm1(x)
        w, b = self.self_attn.in_proj_weight, self.self_attn.in_proj_bias
        q = F.linear(y[:, :1], w[:d], b[:d]).view(n, 1, h, hd).transpose(1, 2)
        kv = F.linear(y, w[d:], b[d:]).view(n, length + 1, 2, h, hd).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, kv[0], kv[1]).transpose(1, 2).reshape(n, d)
        c = x[:, 0] + self.self_attn.out_proj(a)
        return c + self.linear2(F.gelu(self.linear1(self.norm2(c))))


class _TubeletEmbed(nn.Module):
    def __init__(self, cfg: SynchformerConfig) -> None:
        super().__init__()
        p = cfg.patch_size
        self.proj = nn.Conv3d(3, cfg.embed_dim, (cfg.tubelet, p, p), stride=(cfg.tubelet, p, p))


class MotionFormer(nn.Module):
    """The ViT itself: [n, T, H, W, 3] normalised segments -> [n, T / tubelet, D] pooled tokens."""

    def __init__(self, cfg: SynchformerConfig) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.cfg = cfg
        self.patch_embed_3d = _TubeletEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.patches_per_frame + 1, d))
        self.temp_embed = nn.Parameter(torch.zeros(1, cfg.tokens_per_segment, d))
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(d, eps=_LN_EPS)
        self.spatial_attn_agg = _ClsPool(cfg)
        for t in (self.cls_token, self.pos_embed, self.temp_embed):
            nn.init.trunc_normal_(t, std=0.02)

    def tokenize(self, x: Tensor) -> Tensor:
        """Channels-last segments -> tubelet tokens (a strided Conv3d written as one matmul)."""
        cfg = self.cfg
        n, t, hh, ww, c = x.shape
        p, tb = cfg.patch_size, cfg.tubelet
        x = x.reshape(n, t // tb, tb, hh // p, p, ww // p, p, c)
        x = x.permute(0, 1, 3, 5, 7, 2, 4, 6)  # [n, t', h', w', C, tb, p, p]: the Conv3d weight order
        x = x.reshape(n, (t // tb) * (hh // p) * (ww // p), c * tb * p * p)
        w = self.patch_embed_3d.proj.weight
        return F.linear(x, w.view(w.shape[0], -1), self.patch_embed_3d.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        cfg = self.cfg
        frames, patches = cfg.tokens_per_segment, cfg.patches_per_frame
        tok = self.tokenize(x)
        n, _, d = tok.shape
        pos = (self.pos_embed[:, None, 1:] + self.temp_embed[:, :, None]).reshape(1, frames * patches, d)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(n, -1, -1)
        x = torch.cat([cls, tok + pos], dim=1)
        for blk in self.blocks:
            x = blk(x, frames)
        x = self.norm(x[:, 1:]).reshape(n * frames, patches, d)
        return self.spatial_attn_agg(x).view(n, frames, d)


ProgressFn = Callable[[int, int], None]


class SyncEncoder(nn.Module):
    """Video branch of Synchformer.

    forward(frames): frames are [B, T, H, W, 3] (channels last, as decoded rgb24) at 25 fps with
    H = W = cfg.image_size, either uint8 (0-255) or float in [0, 1]. Returns [B, S * 8, D] with
    S = cfg.n_segments(T). Segments run in chunks of `segment_batch` to bound memory.
    """

    def __init__(self, cfg: SynchformerConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or SynchformerConfig()
        self.vfeat_extractor = MotionFormer(cfg)
        mean = torch.tensor(cfg.mean).view(1, 1, 1, 1, 3)
        std = torch.tensor(cfg.std).view(1, 1, 1, 1, 3)
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)

    @property
    def out_dim(self) -> int:
        return self.cfg.embed_dim

    def _check(self, frames: Tensor) -> None:
        cfg = self.cfg
        size = cfg.image_size
        if frames.ndim != 5 or tuple(frames.shape[2:]) != (size, size, 3):
            raise FoleyscopeError(
                f"sync_encode expects frames [B, T, {size}, {size}, 3] (resized and centre-cropped), "
                f"got {tuple(frames.shape)}"
            )
        if frames.shape[1] < cfg.segment_frames:
            raise FoleyscopeError(
                f"sync_encode needs at least {cfg.segment_frames} frames "
                f"({cfg.segment_frames / cfg.fps:.2f} s at {cfg.fps} fps), got {frames.shape[1]}"
            )

    def normalize(self, frames: Tensor) -> Tensor:
        """uint8 0-255 or float 0-1 pixels -> (x - mean) / std in the model's dtype."""
        x = frames.float()
        if not frames.is_floating_point():
            x = x / 255.0
        x = (x - self.pixel_mean.float()) / self.pixel_std.float()
        return x.to(self.vfeat_extractor.pos_embed.dtype)

    def forward(self, frames: Tensor, segment_batch: int = 16, progress: ProgressFn | None = None) -> Tensor:
        self._check(frames)
        cfg = self.cfg
        b, s = frames.shape[0], cfg.n_segments(frames.shape[1])
        frames = frames.to(self.pixel_mean.device)
        # [B, S, 16, H, W, 3] view over the overlapping windows; a chunk is copied only when normalised
        seg = frames.unfold(1, cfg.segment_frames, cfg.segment_stride).permute(0, 1, 5, 2, 3, 4)
        outs, done = [], 0
        for bi in range(b):
            for i in range(0, s, segment_batch):
                chunk = self.normalize(seg[bi, i : i + segment_batch])
                outs.append(self.vfeat_extractor(chunk))
                done += chunk.shape[0]
                if progress is not None:
                    progress(done, b * s)
        return torch.cat(outs).view(b, s * cfg.tokens_per_segment, cfg.embed_dim)


def sync_flops(cfg: SynchformerConfig, n_frames: int, batch: int = 1) -> int:
    """Matmul FLOPs (2 per MAC) of SyncEncoder.forward on `n_frames` frames, attention included;
    LayerNorm, softmax and GELU are left out. Counts the pooled-CLS shortcut we actually run."""
    d = cfg.embed_dim
    f, p = cfg.tokens_per_segment, cfg.patches_per_frame
    tokens = 1 + f * p
    hidden = d * cfg.mlp_ratio
    per_seg = 2 * f * p * d * (3 * cfg.tubelet * cfg.patch_size**2)  # tubelet embedding
    block = 2 * (2 * tokens * d * 3 * d + 2 * tokens * d * d)  # qkv + proj, time and space
    block += 2 * 4 * tokens * d  # CLS query over all tokens, both attentions
    block += 4 * f * p * (f + 1) * d + 4 * f * p * (p + 1) * d  # patch queries along time / space
    block += 2 * 2 * tokens * d * hidden  # MLP
    per_seg += cfg.depth * block
    pool = 2 * (p + 1) * d * 2 * d + 2 * d * d  # K/V of every token, Q of CLS
    pool += 4 * (p + 1) * d + 2 * d * d + 2 * 2 * d * hidden  # attention, out_proj, MLP (CLS only)
    per_seg += f * pool
    return batch * cfg.n_segments(n_frames) * per_seg
