"""Peak memory of a run, estimated before anything loads: `foleyscope plan` (and for the doctor's step 0).

Weights are parameter counts of the preset's networks built on the `meta` device (no memory), priced
at the dtype each runs in: the VAE in fp32, SigLIP2/CLAP in fp32 unless `encoders=dtype`, the
denoiser's linear weights at 1 byte (+ a scale per row) when quantised. Activations come from the
clip's shapes (frames, tokens, widths, CFG batch 2, windows) times the number of full-size buffers
each stage's code keeps alive at its peak, counted from that code (the factors below say where).
The peak is the largest stage: its resident weights + its activations + what outlives stages.

What the numbers mean: on CUDA, `torch.cuda.max_memory_allocated` (no CUDA context, no allocator
slack: `fits` adds those); on a CPU, the growth of the process's RSS from before the load to the
run's peak, which also holds the decoded frames (on CUDA those are host RAM, reported apart)."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from foleyscope.engine.modes import Mode
from foleyscope.engine.offload import parse_offload
from foleyscope.engine.presets import Preset
from foleyscope.engine.windows import official_latent_count, plan_windows

GIB = 2**30
CARD_SIZES_GB = (8, 12, 16, 24, 48, 80, 141)  # cards as sold; nvidia-smi shows about as many GiB
CUDA_CONTEXT_BYTES = int(0.6 * GIB)  # context, kernels and cuBLAS handles: outside max_memory_allocated
ALLOCATOR_HEADROOM = 0.92  # keep 8% of the rest for the caching allocator's fragmentation
SEGMENT_BATCH = 16  # SyncEncoder.forward's segments per chunk
NETWORK_OF_STAGE = {"visual_encode": "visual", "text_encode": "text", "sync_encode": "sync",
                    "denoise": "denoiser", "vae_decode": "vae"}
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}

# Full-size buffers alive at each stage's peak, from its code:
NORMALISE_LIVE = 3  # `(x / 255 - 0.5) / 0.5`: the float copy, one temporary and the result, fp32
VIT_LIVE = 5  # per token, in widths: residual, norm, attention output, q/k/v (3) -> about 5 at once
VIT_MLP_LIVE = 2  # per token, in MLP widths: fc1's output and its GELU
SINGLE_BLOCK_LIVE = 10  # per audio token, in widths: x, vec_tokens, 6-way modulation, norm, output
SWIGLU_LIVE = 3  # per audio token, in SwiGLU widths: w1, w3 and their product
VAE_LIVE = 3  # residual unit: its input, the snake/conv buffer, the conv output (snake runs in place)
CPU_CONV_SCRATCH = 7  # on a CPU, oneDNN unfolds a kernel-7 conv's input (7 copies of it)
CPU_DECODER_STATE = 14 * 2**20  # PyAV's frame pools and scaler, held through prepare (measured, 640x360 H.264)


@dataclass(frozen=True)
class Network:
    """One network's parameter bytes at a given dtype, and what quantisation or offload may act on."""

    params: int
    linear_weights: int = 0  # params in the linear weights torchao quantises (engine.quant.quantisable)
    linear_rows: int = 0  # their output rows (one scale each)
    block_params: tuple[int, ...] = ()  # per transformer block, in run order (what offload=blocks streams)


@dataclass(frozen=True)
class Estimate:
    """Bytes resident per network and per stage; `peak` is the largest stage."""

    preset: str
    mode: str
    seconds: float
    device: str
    weights: dict[str, int]  # resident on the device for the whole run (all of them without offload)
    stage_weights: dict[str, int]  # resident while each stage runs (differs with offload=model)
    activations: dict[str, int]  # beyond the weights, at each stage's peak
    host: int  # host RAM the estimate leaves out on CUDA: decoded frames and pinned offloaded weights
    shapes: dict[str, int] = field(default_factory=dict)

    @property
    def peak(self) -> int:
        return max(self.stage_weights[s] + a for s, a in self.activations.items())

    @property
    def peak_stage(self) -> str:
        return max(self.activations, key=lambda s: self.stage_weights[s] + self.activations[s])

    def fits(self, card_gb: float) -> bool:
        """Whether the peak fits a card of `card_gb` GiB with the CUDA context and allocator headroom."""
        return self.peak <= (card_gb * GIB - CUDA_CONTEXT_BYTES) * ALLOCATOR_HEADROOM


@dataclass(frozen=True)
class Shapes:
    """A clip's sizes as the pipeline sees them (pipeline._plan, one window unless longer than 15 s)."""

    windows: int
    latent: int  # latent frames per window (50 Hz)
    clip_tokens: int  # SigLIP2 frames per window (8 fps)
    clip_frames: int  # all SigLIP2 frames decoded
    sync_frames: int  # all 25 fps frames decoded
    sync_window_frames: int  # 25 fps frames per window
    segments: int  # Synchformer segments per window

    @classmethod
    def of(cls, preset: Preset, seconds: float) -> Shapes:
        wins = plan_windows(seconds, preset.window_s, preset.overlap_s, preset.sync_fps)
        n25 = _frames(seconds, preset.sync_fps)
        n25w = _frames(wins[0].length_s, preset.sync_fps)
        n25w = max(n25w, preset.sync.segment_frames)
        latent = (official_latent_count(n25, preset.sync_fps, preset.latent_rate) if len(wins) == 1
                  else round(wins[0].length_s * preset.latent_rate))
        return cls(len(wins), latent, _frames(wins[0].length_s, preset.clip_fps), _frames(seconds, preset.clip_fps),
                   n25, n25w, preset.sync.n_segments(n25w))


def _frames(seconds: float, fps: float) -> int:
    return math.ceil(seconds * fps - 1e-6)


# -- weights --------------------------------------------------------------------------------------


@functools.cache
def networks(preset: Preset, stand_in_encoders: bool) -> dict[str, Network]:
    """Parameter counts of the five networks, built on the meta device. `stand_in_encoders`: the tiny
    SigLIP2/CLAP of a run without weights (at the denoiser's feature widths) instead of the real ones."""
    from foleyscope.model.dac_vae import DacVAE
    from foleyscope.model.foley import FoleyDenoiser
    from foleyscope.model.synchformer import SyncEncoder

    with torch.device("meta"):
        den = FoleyDenoiser(preset.denoiser)
        nets = {"denoiser": _denoiser(den), "vae": _count(DacVAE(preset.vae, encoder=False)),
                "sync": _count(SyncEncoder(preset.sync))}
        visual, text = _encoders(preset, stand_in_encoders)
    return {**nets, "visual": _count(visual), "text": _count(text)}


def _count(module: nn.Module) -> Network:
    return Network(sum(p.numel() for p in module.parameters()) + sum(b.numel() for b in module.buffers()))


def _denoiser(den: nn.Module) -> Network:
    from foleyscope.engine.quant import quantisable

    linears = [m for m in den.modules() if quantisable(m)]
    blocks = [*den.triple_blocks, *den.single_blocks]
    return Network(_count(den).params, sum(m.weight.numel() for m in linears), sum(m.out_features for m in linears),
                   tuple(_count(b).params for b in blocks))


def _encoders(preset: Preset, stand_in: bool) -> tuple[nn.Module, nn.Module]:
    """SigLIP2 base-512 and CLAP's RoBERTa text tower as released, or the tiny stand-ins."""
    from transformers import ClapTextConfig, ClapTextModel, SiglipVisionConfig

    from foleyscope.model.encoders import VisualEncoder, tiny_text_config, tiny_visual_config

    den = preset.denoiser
    if stand_in:
        from foleyscope.tokenizer_data import tiny_tokenizer

        text_cfg = tiny_text_config(len(tiny_tokenizer()), den.text_dim)
        return VisualEncoder(tiny_visual_config(den.clip_dim)), ClapTextModel(text_cfg, add_pooling_layer=False)
    visual = VisualEncoder(SiglipVisionConfig(image_size=512, patch_size=16))
    return visual, ClapTextModel(ClapTextConfig(), add_pooling_layer=False)


ROW_BYTES = {"int8wo": 5, "int8dq": 5, "fp8": 4}  # per output row: an fp32 scale (+ an int8 zero point)


def _network_bytes(net: Network, dtype_bytes: int, quant: str) -> int:
    """Quantised linear weights take 1 byte each plus their per-row scales; the rest stays in the dtype."""
    if quant == "none":
        return net.params * dtype_bytes
    rest = net.params - net.linear_weights
    return rest * dtype_bytes + net.linear_weights + net.linear_rows * ROW_BYTES[quant]


def weight_bytes(preset: Preset, mode: Mode, stand_in_encoders: bool) -> dict[str, int]:
    """Bytes of each network in the dtype it runs in (mode must be resolved)."""
    nets = networks(preset, stand_in_encoders)
    dt = DTYPE_BYTES[mode.dtype]
    enc = dt if mode.encoders == "dtype" else 4
    return {"denoiser": _network_bytes(nets["denoiser"], dt, mode.quant), "vae": nets["vae"].params * 4,
            "sync": nets["sync"].params * dt, "visual": nets["visual"].params * enc,
            "text": nets["text"].params * enc}


# -- activations ----------------------------------------------------------------------------------


def activation_bytes(preset: Preset, mode: Mode, shapes: Shapes, on_cpu: bool, stand_in: bool,
                     cfg: float = 4.5) -> dict[str, int]:
    """Bytes beyond the weights at each stage's peak (on a CPU the decoded frames are among them)."""
    dt = DTYPE_BYTES[mode.dtype]
    enc = dt if mode.encoders == "dtype" else 4
    frames = _decoded_frames(preset, shapes)
    held = frames + CPU_DECODER_STATE if on_cpu else 0  # on the host until prepare returns
    return {
        "decode": held,
        "visual_encode": held + _visual(preset, shapes, enc, on_cpu, stand_in),
        "text_encode": held + _text(enc, stand_in, preset),
        "sync_encode": held + _sync(preset, shapes, dt, on_cpu),
        "denoise": _denoise(preset, shapes, dt, cfg),
        "vae_decode": _vae(preset, shapes, on_cpu),
    }


def _decoded_frames(preset: Preset, s: Shapes) -> int:
    """uint8 RGB frames from the one decode: 8 fps at SigLIP2's 512 px, 25 fps at Synchformer's 224."""
    return s.clip_frames * 512 * 512 * 3 + s.sync_frames * preset.sync.image_size ** 2 * 3


def _vit(tokens: int, width: int, mlp: int, dtype_bytes: int) -> int:
    return tokens * (VIT_LIVE * width + VIT_MLP_LIVE * mlp) * dtype_bytes


def _visual(preset: Preset, s: Shapes, enc: int, on_cpu: bool, stand_in: bool) -> int:
    """One chunk of `visual_batch` frames: uint8 on the device, normalised in fp32, then the ViT."""
    n = min(preset.visual_batch, s.clip_frames)
    pixels = n * 3 * 512 * 512
    patch, width, mlp = (64, preset.denoiser.clip_dim, 2 * preset.denoiser.clip_dim) if stand_in else (16, 768, 3072)
    uint8 = 0 if on_cpu else pixels
    vit = 4 * pixels + _vit(n * (512 // patch) ** 2, width, mlp, enc)  # the normalised input stays alive
    return uint8 + max(NORMALISE_LIVE * 4 * pixels, vit)


def _text(enc: int, stand_in: bool, preset: Preset) -> int:
    width = preset.denoiser.text_dim if stand_in else 768
    return _vit(2 * preset.denoiser.text_length, width, 4 * width, enc)


def _sync(preset: Preset, s: Shapes, dt: int, on_cpu: bool) -> int:
    """Every window's 25 fps frames stacked (on a CPU also the per-window copies they were stacked
    from), then chunks of 16-frame segments, each normalised in fp32 while the previous chunk's input
    is still held, then tokenised (a permuted copy) and run through the ViT."""
    cfg = preset.sync
    stacked = s.windows * s.sync_window_frames * cfg.image_size ** 2 * 3
    per_segment = cfg.segment_frames * cfg.image_size ** 2 * 3
    chunks = [min(SEGMENT_BATCH, s.segments - i) for i in range(0, s.segments, SEGMENT_BATCH)] * s.windows
    normalise = max(NORMALISE_LIVE * 4 * c * per_segment + dt * p * per_segment
                    for p, c in zip([0, *chunks], chunks, strict=False))
    first = chunks[0]
    tokens = first * (1 + cfg.tokens_per_segment * cfg.patches_per_frame)
    vit = dt * first * per_segment + max(dt * first * per_segment,
                                         _vit(tokens, cfg.embed_dim, cfg.embed_dim * cfg.mlp_ratio, dt))
    return (2 if on_cpu else 1) * stacked + max(normalise, vit)


def _denoise(preset: Preset, s: Shapes, dt: int, cfg: float) -> int:
    """The step-invariant conditioning (per-block text K/V, visual and sync streams) plus one single
    block's buffers for the CFG batch; the sampler's fp32 latents are small next to them."""
    from foleyscope.model.foley_blocks import conv_swiglu_width

    den = preset.denoiser
    batch = min(s.windows, preset.window_batch) * (1 if cfg == 1.0 else 2)
    h = den.hidden
    cond = batch * (s.clip_tokens * h + s.latent * h + 2 * den.depth_triple * den.text_length * h) * dt
    block = batch * s.latent * (SINGLE_BLOCK_LIVE * h + SWIGLU_LIVE * conv_swiglu_width(int(h * den.mlp_ratio))) * dt
    latents = 6 * s.windows * (2 if cfg != 1.0 else 1) * den.latent_channels * s.latent * 4
    return cond + block + latents


def _vae(preset: Preset, s: Shapes, on_cpu: bool) -> int:
    """The largest decoder block output (channels x samples) for one chunk of windows, fp32."""
    vae = preset.vae
    n = min(s.windows, preset.window_batch)
    length, width, largest = s.latent, vae.decoder_dim, 0
    for rate in vae.decoder_rates:
        length, width = length * rate, width // 2
        largest = max(largest, width * length)
    live = VAE_LIVE + (CPU_CONV_SCRATCH if on_cpu else 0)
    return live * n * largest * 4 + s.windows * s.latent * vae.hop_length * 4 * 2  # + the audio, twice


# -- the estimate -----------------------------------------------------------------------------------


def estimate(preset: Preset, mode: Mode, seconds: float = 10.0, device: str = "cuda",
             stand_in_encoders: bool | None = None, cfg: float = 4.5) -> Estimate:
    """Peak memory of one run of `preset` in `mode` (resolved) on a clip of `seconds`. Stand-in
    encoders by default where the preset's widths are not the real encoders' (tiny, mid)."""
    if stand_in_encoders is None:
        stand_in_encoders = (preset.denoiser.clip_dim, preset.denoiser.text_dim) != (768, 768)
    shapes = Shapes.of(preset, seconds)
    weights = weight_bytes(preset, mode, stand_in_encoders)
    acts = activation_bytes(preset, mode, shapes, device == "cpu", stand_in_encoders, cfg)
    host = 0 if device == "cpu" else _decoded_frames(preset, shapes)
    stage_weights = {s: sum(weights.values()) for s in acts}
    offload, resident = parse_offload(mode.offload)
    if offload == "model":  # one network on the device at a time, all of them parked in pinned host RAM
        host += sum(weights.values())
        stage_weights = {s: weights[NETWORK_OF_STAGE[s]] if s in NETWORK_OF_STAGE else 0 for s in acts}
    elif offload == "blocks":
        on_device, parked = _streamed_denoiser(preset, mode, stand_in_encoders, resident)
        host += parked
        stage_weights = {s: w - weights["denoiser"] + on_device for s, w in stage_weights.items()}
    return Estimate(preset.name, mode.spec, seconds, device, weights, stage_weights, acts, host,
                    {"windows": shapes.windows, "latent": shapes.latent, "clip_tokens": shapes.clip_tokens,
                     "segments": shapes.segments})


def _streamed_denoiser(preset: Preset, mode: Mode, stand_in: bool, resident: int) -> tuple[int, int]:
    """The denoiser's bytes on the device and parked in host RAM with `offload=blocks:N`
    (engine.offload.BlockStream): its small layers and first N blocks resident, two streamed blocks
    (the running one and the next) in flight, the others parked."""
    net = networks(preset, stand_in)["denoiser"]
    per_param = _network_bytes(net, DTYPE_BYTES[mode.dtype], mode.quant) / net.params
    blocks = net.block_params
    in_flight = sum(sorted(blocks[resident:], reverse=True)[:2])
    on_device = net.params - sum(blocks) + sum(blocks[:resident]) + in_flight
    return round(on_device * per_param), round(sum(blocks[resident:]) * per_param)


def fastest_fitting(estimates: list[Estimate], card_gb: float) -> Estimate | None:
    """The first estimate (they are listed fastest first) that fits the card."""
    return next((e for e in estimates if e.fits(card_gb)), None)

