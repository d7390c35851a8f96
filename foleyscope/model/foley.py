"""The HunyuanVideo-Foley denoiser: a flow-matching transformer that predicts latent velocity.

Our own implementation of the official `HunyuanVideoFoley` (models/hifi_foley.py). The state dict has the
official key names and shapes, so `hunyuanvideo_foley.pth` (xxl) and `hunyuanvideo_foley_xl.pth` (xl)
load as-is. The work is split in two:

* `prepare()` runs once per video: visual projection of the SigLIP2 frames, the Synchformer sync
  projection stretched to the latent length, the text projection and every block's text keys/values,
  and all RoPE tables.
* `forward()` runs once per sampler step and only touches what depends on the noisy latent or t.

Inputs follow the reference: latents [B, 128, L] at 50 Hz, t in [0, 1000] (t = sigma * 1000),
clip features [B, Nc, 768] (8 fps), sync features [B, Ns, 768] (Ns a multiple of 8), CLAP text
tokens [B, 77, 768]. The classifier-free-guidance branch uses `uncond_features()` (the learnable empty
visual features) and the negative-prompt text, batched as [uncond, cond].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from foleyscope.errors import FoleyscopeError
from foleyscope.model.foley_blocks import (
    AudioEmbed,
    ConvSwiGLU,
    FinalLayer,
    RopeTables,
    SiLUProjection,
    SingleBlock,
    SwiGLU,
    TimestepEmbed,
    TripleBlock,
    nearest_exact_index,
    rope_table,
)
from foleyscope.model.step_cache import StepCache

# The official class builds no training-only (REPA / audio-SSL) modules, so a state dict saved from it has
# nothing to ignore. The released checkpoints may still carry such tensors; a key is treated as
# training-only when it starts with one of these prefixes or one of its dotted parts mentions a marker.
# None of our own keys matches, so ignoring never drops a weight the model needs.
IGNORED_KEY_PREFIXES: tuple[str, ...] = ()
IGNORED_KEY_MARKERS: tuple[str, ...] = ("repa", "ssl")


def is_ignored_key(key: str) -> bool:
    """True for checkpoint keys of training-only parts (REPA/SSL projectors) that inference never uses."""
    if key.startswith(IGNORED_KEY_PREFIXES):
        return True
    return any(m in part.lower() for part in key.split(".") for m in IGNORED_KEY_MARKERS)


@dataclass(frozen=True)
class FoleyConfig:
    """Architecture hyper-parameters. Fixed by the official design (not configurable here): patch size 1,
    gelu-tanh MLPs, biased q/k/v, RMS q/k norm, interleaved audio-visual RoPE, sync features added to
    the audio tokens (not sync modulation), no text attention mask."""

    name: str
    depth_triple: int  # dual-stream ("triple") blocks
    depth_single: int  # audio-only blocks
    hidden: int
    heads: int
    mlp_ratio: float = 4.0
    latent_channels: int = 128  # DAC-VAE latent channels
    clip_dim: int = 768  # SigLIP2 image feature width
    sync_dim: int = 768  # Synchformer token width
    text_dim: int = 768  # CLAP last_hidden_state width
    sync_tokens_per_segment: int = 8
    sync_in_kernel: int = 1
    time_freq_dim: int = 256
    rope_theta: float = 10000.0
    # nominal sequence lengths of a 15 s window (informative; the model accepts any lengths)
    text_length: int = 77
    clip_length: int = 64
    sync_length: int = 192

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @classmethod
    def preset(cls, name: str) -> FoleyConfig:
        try:
            return FOLEY_PRESETS[name]
        except KeyError:
            choices = ", ".join(FOLEY_PRESETS)
            raise FoleyscopeError(f"unknown denoiser preset {name!r} (choose from {choices})") from None


FOLEY_PRESETS: dict[str, FoleyConfig] = {
    "xxl": FoleyConfig("xxl", depth_triple=18, depth_single=36, hidden=1536, heads=12),
    "xl": FoleyConfig("xl", depth_triple=12, depth_single=24, hidden=1408, heads=11),
    "tiny": FoleyConfig("tiny", depth_triple=1, depth_single=1, hidden=128, heads=2),
}


@dataclass
class Conditioning:
    """Everything step-invariant for one batch of videos, produced by FoleyDenoiser.prepare()."""

    visual: Tensor  # [B, Nc, hidden] projected clip features (visual stream input)
    sync: Tensor  # [B, L, hidden] sync features stretched to the latent length
    text_kv: list[tuple[Tensor, Tensor]]  # per triple block: text keys, values [B, heads, T, head_dim]
    rope: RopeTables
    cache: StepCache | None = None  # First-Block-Cache state of this video (None: every step runs in full)

    @property
    def batch(self) -> int:
        return self.sync.shape[0]

    @property
    def latent_len(self) -> int:
        return self.sync.shape[1]


class FoleyDenoiser(nn.Module):
    def __init__(self, cfg: FoleyConfig):
        super().__init__()
        if cfg.hidden % cfg.heads or cfg.head_dim % 2:
            raise FoleyscopeError(f"hidden {cfg.hidden} must split into {cfg.heads} heads of even width")
        if cfg.depth_triple < 1:
            raise FoleyscopeError("the denoiser needs at least one dual-stream block (sync enters there)")
        self.cfg = cfg
        h = cfg.hidden
        self.audio_embedder = AudioEmbed(cfg.latent_channels, h)
        self.visual_proj = SwiGLU(cfg.clip_dim, h, h)
        self.cond_in = SiLUProjection(cfg.text_dim, h)
        self.time_in = TimestepEmbed(h, cfg.time_freq_dim)
        self.sync_in = nn.Sequential(nn.Linear(cfg.sync_dim, h), nn.SiLU(),
                                     ConvSwiGLU(h, 4 * h, kernel=cfg.sync_in_kernel))
        self.sync_pos_emb = nn.Parameter(torch.zeros(1, 1, cfg.sync_tokens_per_segment, cfg.sync_dim))
        self.triple_blocks = nn.ModuleList(TripleBlock(h, cfg.heads, cfg.mlp_ratio)
                                           for _ in range(cfg.depth_triple))
        self.single_blocks = nn.ModuleList(SingleBlock(h, cfg.heads, cfg.mlp_ratio)
                                           for _ in range(cfg.depth_single))
        self.final_layer = FinalLayer(h, cfg.latent_channels)
        self.empty_clip_feat = nn.Parameter(torch.zeros(1, cfg.clip_dim))
        self.empty_sync_feat = nn.Parameter(torch.zeros(1, cfg.sync_dim))
        self.step_cache: float | None = None  # First-Block-Cache threshold (the `cache` mode); None: off

    @property
    def dtype(self) -> torch.dtype:
        return self.audio_embedder.proj.weight.dtype

    def uncond_features(self, batch: int, n_clip: int, n_sync: int) -> tuple[Tensor, Tensor]:
        """Learnable "no video" clip and sync features for the unconditional CFG branch."""
        return self.empty_clip_feat.expand(batch, n_clip, -1), self.empty_sync_feat.expand(batch, n_sync, -1)

    def rope_tables(self, latent_len: int, n_clip: int, device: torch.device) -> RopeTables:
        d, theta = self.cfg.head_dim, self.cfg.rope_theta
        ar = lambda n: torch.arange(n, device=device)
        # Joint attention interleaves audio (even slots) with the clip sequence stretched to the audio
        # length (odd slots), then squeezes the visual part back: clip token j ends up at slot
        # 2 * down[j] + 1 carrying the features of clip token up[down[j]].
        up = nearest_exact_index(n_clip, latent_len, device)
        down = nearest_exact_index(latent_len, n_clip, device)
        gather = up[down]
        return RopeTables(
            audio_joint=rope_table(2 * ar(latent_len), d, theta),
            visual_joint=rope_table(2 * down + 1, d, theta),
            visual_gather=None if torch.equal(gather, ar(n_clip)) else gather,
            audio_seq=rope_table(ar(latent_len), d, theta),
            visual_seq=rope_table(ar(n_clip), d, theta),
        )

    def prepare(self, clip_feat: Tensor, sync_feat: Tensor, text_feat: Tensor,
                latent_len: int) -> Conditioning:
        """Step-invariant work for a batch: computed once per video, reused by every sampler step."""
        cfg = self.cfg
        b = clip_feat.shape[0]
        seg = cfg.sync_tokens_per_segment
        if sync_feat.shape[0] != b or text_feat.shape[0] != b:
            raise FoleyscopeError("clip, sync and text features must have the same batch size")
        got = (clip_feat.shape[-1], sync_feat.shape[-1], text_feat.shape[-1])
        want = (cfg.clip_dim, cfg.sync_dim, cfg.text_dim)
        if got != want:
            raise FoleyscopeError(f"feature widths clip/sync/text {got} do not match the model's {want}")
        if sync_feat.shape[1] % seg or sync_feat.shape[1] == 0:
            raise FoleyscopeError(
                f"sync features need a positive multiple of {seg} tokens, got {sync_feat.shape[1]}")
        dt = self.dtype
        visual = self.visual_proj(clip_feat.to(dt))
        text = self.cond_in(text_feat.to(dt))
        sync = sync_feat.to(dt).unflatten(1, (-1, seg)) + self.sync_pos_emb
        sync = self.sync_in(sync.flatten(1, 2))
        sync = sync[:, nearest_exact_index(sync.shape[1], latent_len, sync.device)]
        rope = self.rope_tables(latent_len, clip_feat.shape[1], clip_feat.device)
        text_rope = rope_table(torch.arange(text.shape[1], device=text.device), cfg.head_dim, cfg.rope_theta)
        text_kv = [blk.text_kv(text, text_rope) for blk in self.triple_blocks]
        cache = None if self.step_cache is None else StepCache(self.step_cache)
        return Conditioning(visual=visual, sync=sync, text_kv=text_kv, rope=rope, cache=cache)

    def forward(self, x: Tensor, t: Tensor, cond: Conditioning) -> Tensor:
        """Velocity [B, C, L] for latents x [B, C, L] at times t ([B] or scalar, in 0..1000).

        Keep t in float32: bf16 cannot represent most timesteps (near 1000 its spacing is 4).
        Split in three (head, body, final) so the step cache can skip the body.
        """
        b, _, length = x.shape
        if length != cond.latent_len or b != cond.batch:
            raise FoleyscopeError(f"latent batch/length {b}/{length} do not match the prepared conditioning "
                                  f"({cond.batch}/{cond.latent_len})")
        audio_in, audio, visual, vec = self.head(x, t, cond)
        if cond.cache is None:
            return self.final(self.body(audio, visual, vec, cond))
        if cond.cache.can_skip(audio - audio_in):
            return self.final(audio + cond.cache.rest_residual)
        out = self.body(audio, visual, vec, cond)
        cond.cache.store(out - audio)
        return self.final(out)

    def head(self, x: Tensor, t: Tensor, cond: Conditioning) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Embeddings and the first block: (audio tokens before it, audio and visual after it, t vector)."""
        vec = self.time_in(t.reshape(-1).expand(x.shape[0]))
        audio_in = self.audio_embedder(x.to(self.dtype)) + cond.sync
        text_k, text_v = cond.text_kv[0]
        audio, visual = self.triple_blocks[0](audio_in, cond.visual, vec, text_k, text_v, cond.rope)
        return audio_in, audio, visual, vec

    def body(self, audio: Tensor, visual: Tensor, vec: Tensor, cond: Conditioning) -> Tensor:
        """Every block after the first: audio tokens out."""
        for blk, (text_k, text_v) in zip(self.triple_blocks[1:], cond.text_kv[1:], strict=True):
            audio, visual = blk(audio, visual, vec, text_k, text_v, cond.rope)
        vec_tokens = cond.sync + vec.unsqueeze(1)  # per-token adaLN input of the single blocks
        for blk in self.single_blocks:
            audio = blk(audio, vec_tokens, cond.rope.audio_seq)
        return audio

    def final(self, audio: Tensor) -> Tensor:
        return self.final_layer(audio).transpose(1, 2)
