"""Named model variants in one table, and building their components (random or from weights).

A preset fixes every architecture choice of the five networks plus the clocks that tie them
together (8 fps SigLIP2 frames, 25 fps Synchformer frames, 50 Hz latents, 48 kHz audio). `xl` and
`xxl` are the official configurations; `tiny` keeps the same structure at toy widths so the demo
and the tests run in seconds on a CPU; `mid` (random weights only: no checkpoint of that size exists) is
the XL structure at 768 wide with 4 dual + 8 single blocks, a denoiser whose step costs a CPU seconds,
for measuring the modes where xl would take hours."""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass

import torch
from torch import nn

from foleyscope.errors import FoleyscopeError
from foleyscope.model import dac_vae, synchformer
from foleyscope.model.dac_vae import DAC_PRESETS, DacConfig, DacVAE
from foleyscope.model.encoders import (
    TextEncoder,
    VisualEncoder,
    load_text_encoder,
    load_visual_encoder,
    tiny_text_encoder,
    tiny_visual_encoder,
)
from foleyscope.model.foley import FOLEY_PRESETS, FoleyConfig, FoleyDenoiser, is_ignored_key
from foleyscope.model.synchformer import SYNC_PRESETS, SyncEncoder, SynchformerConfig
from foleyscope.trace import ModelLoad, emit


@dataclass(frozen=True)
class Preset:
    name: str
    denoiser: FoleyConfig
    vae: DacConfig
    sync: SynchformerConfig
    clip_fps: float = 8.0  # SigLIP2 frames per second (its frame size is the encoder config's image_size)
    window_s: float = 15.0  # the model's context; longer clips are windowed
    overlap_s: float = 2.0
    window_batch: int = 4  # windows denoised together; more is faster on a big GPU, fewer needs less memory
    visual_batch: int = 32  # SigLIP2 frames per forward

    @property
    def sample_rate(self) -> int:
        """The audio rate (the VAE config is the one source of it)."""
        return self.vae.sample_rate

    @property
    def latent_rate(self) -> int:
        """Latent frames per second: the VAE's hop (960 at 48 kHz: 50 Hz, the grid windows start on)."""
        rate = self.vae.sample_rate / self.vae.hop_length
        if rate != int(rate):
            raise ValueError(f"{self.name}: the VAE hop {self.vae.hop_length} does not divide {self.vae.sample_rate}")
        return int(rate)

    @property
    def sync_fps(self) -> float:
        """Synchformer's frame rate (its config is the one source of it, and of its 224 px size)."""
        return float(self.sync.fps)


_TINY_WIDTH = 32  # the tiny encoders' feature width
PRESETS: dict[str, Preset] = {
    "xxl": Preset("xxl", FOLEY_PRESETS["xxl"], DAC_PRESETS["official"], SYNC_PRESETS["official"]),
    "xl": Preset("xl", FOLEY_PRESETS["xl"], DAC_PRESETS["official"], SYNC_PRESETS["official"]),
    "tiny": Preset(
        "tiny",
        dataclasses.replace(FOLEY_PRESETS["tiny"], clip_dim=_TINY_WIDTH, text_dim=_TINY_WIDTH,
                            sync_dim=SYNC_PRESETS["tiny"].embed_dim),
        DAC_PRESETS["tiny"],
        SYNC_PRESETS["tiny"],
    ),
}
PRESETS["mid"] = Preset(
    "mid",
    dataclasses.replace(FOLEY_PRESETS["xl"], name="mid", depth_triple=4, depth_single=8, hidden=768, heads=6,
                        clip_dim=256, text_dim=256, sync_dim=SYNC_PRESETS["tiny"].embed_dim),
    dataclasses.replace(DAC_PRESETS["official"], decoder_dim=512),
    SYNC_PRESETS["tiny"],
)


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise FoleyscopeError(f"unknown preset {name!r} (choose from {', '.join(PRESETS)})")
    return PRESETS[name]


@dataclass
class Components:
    denoiser: FoleyDenoiser
    vae: DacVAE
    sync_encoder: SyncEncoder
    visual_encoder: VisualEncoder
    text_encoder: TextEncoder


def build_components(
    preset: Preset, weights: str | os.PathLike[str] | None, device: torch.device, dtype: torch.dtype, seed: int = 0,
    encoder_dtype: torch.dtype | None = None,
) -> Components:
    """Seeded random weights without `weights`; else the official files found in `weights`.
    The VAE stays fp32 (it is cheap next to the denoiser and audible when rounded); SigLIP2 and CLAP
    run in `encoder_dtype` (default: `dtype`)."""
    enc = encoder_dtype or dtype
    if weights is None:
        return random_components(preset, device, dtype, seed, encoder_dtype=enc)
    from foleyscope.engine.weights import load_module, locate_weights, read_checkpoint

    paths = locate_weights(weights, preset.name)

    def timed(component: str, load):
        start = time.perf_counter()
        module = load()
        report = getattr(module, "load_report", None)
        emit(ModelLoad(component, time.perf_counter() - start, report.summary() if report else ""))
        return module

    def denoiser() -> nn.Module:
        state, _ = read_checkpoint(paths.denoiser)
        ignored = [k for k in state if is_ignored_key(k)]
        kept = {k: v for k, v in state.items() if k not in ignored}
        module, report = load_module(lambda: FoleyDenoiser(preset.denoiser), kept, device=device, dtype=dtype,
                                     component="denoiser")
        report.ignored.extend(ignored)
        module.load_report = report
        return module

    def vae() -> nn.Module:
        state, meta = read_checkpoint(paths.vae)
        cfg = DacConfig.from_metadata((meta or {}).get("kwargs", {})) if meta else preset.vae
        module, report = load_module(lambda: DacVAE(cfg, encoder=False), state, device=device,
                                     dtype=torch.float32, ignored_prefixes=dac_vae.ENCODER_KEY_PREFIXES,
                                     component="audio VAE")
        module.load_report = report
        return module

    def sync() -> nn.Module:
        state, _ = read_checkpoint(paths.synchformer)
        module, report = load_module(lambda: SyncEncoder(preset.sync), state, device=device, dtype=dtype,
                                     ignored_prefixes=synchformer.IGNORED_KEY_PREFIXES, component="Synchformer")
        module.load_report = report
        return module

    return Components(
        denoiser=timed("denoiser", denoiser),
        vae=timed("vae", vae),
        sync_encoder=timed("synchformer", sync),
        visual_encoder=timed("siglip2", lambda: load_visual_encoder(paths.siglip, device, enc)),
        text_encoder=timed("clap", lambda: load_text_encoder(paths.clap, device, enc)),
    )


def random_components(preset: Preset, device: torch.device, dtype: torch.dtype, seed: int = 0,
                      encoder_dtype: torch.dtype | None = None) -> Components:
    """Seeded random networks: the demo, the tests and the benchmarks (any preset; tiny encoders
    stand in for SigLIP2 and CLAP, whose real sizes need real weights to be worth running)."""
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        den = FoleyDenoiser(preset.denoiser).eval()
        vae = DacVAE(preset.vae, encoder=False).eval()
        sync = SyncEncoder(preset.sync).eval()
    comps = Components(
        denoiser=den.to(device, dtype),
        vae=vae.to(device),
        sync_encoder=sync.to(device, dtype),
        visual_encoder=tiny_visual_encoder(seed, preset.denoiser.clip_dim).to(device, encoder_dtype or dtype),
        text_encoder=tiny_text_encoder(seed, preset.denoiser.text_dim).to(device, encoder_dtype or dtype),
    )
    emit(ModelLoad(f"all ({preset.name}, random)", time.perf_counter() - start, "seeded"))
    return comps
