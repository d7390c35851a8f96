"""The Foley pipeline: one object, one call, components passed in, public phases.

    pipe = FoleyPipeline.load("tiny")                     # or load("xxl", weights="ckpts/", mode=Mode(...))
    result = pipe("clip.mp4", "footsteps on gravel")      # FoleyResult: 48 kHz mono, as long as the video

    cond = pipe.prepare("clip.mp4", "footsteps")          # decode + the three encoders, once
    latents = pipe.denoise(cond, steps=50, seed=0)        # [windows, 128, L]: bench drift, tests
    result = pipe.decode(cond, latents)

Each phase runs under `stage(Stage.X)` (the doctor times them, listeners see start/end and every
step; a listener that raises, e.g. Cancelled, stops the run at the next step or stage boundary). The
video is decoded once for both frame rates; visual features are computed once per frame, text once
per call; everything the denoiser can precompute is prepared once per window chunk, not per step;
long clips are split into equal overlapping windows that are denoised jointly (one noise timeline,
overlapping latents averaged after every step) and joined with a short fade."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from foleyscope.engine.jobs import DEFAULT_NEGATIVE_PROMPT
from foleyscope.engine.modes import Mode, apply, resolve
from foleyscope.engine.presets import Components, Preset, build_components, get_preset
from foleyscope.engine.sampler import Solver, Velocity, sample
from foleyscope.engine.windows import LatentLayout, Window, join, official_latent_count, plan_windows
from foleyscope.media.frames import FrameSpec, extract_frames
from foleyscope.media.picking import Rule as FrameRule
from foleyscope.model.foley import Conditioning
from foleyscope.stages import Stage
from foleyscope.trace import ModeReport, Progress, StageFlops, emit, listening, stage
from foleyscope.trace.events import Listener, publish

FP32 = Mode("fp32")
log = logging.getLogger(__name__)


def dtype_stages(mode: Mode) -> tuple[str, ...]:
    """The stages whose networks run in the mode's dtype: the VAE decode stays fp32 whatever --dtype
    says, and SigLIP2/CLAP too unless `--encoders dtype`."""
    encoders = (Stage.VISUAL_ENCODE, Stage.TEXT_ENCODE) if mode.encoders == "dtype" else ()
    return tuple(s.value for s in (*encoders, Stage.SYNC_ENCODE, Stage.DENOISE))


@dataclass
class FoleyResult:
    audio: np.ndarray  # float32 [T], mono
    sample_rate: int
    duration_s: float
    windows: list[Window] = field(default_factory=list)
    window_audio: list[np.ndarray] = field(default_factory=list)  # each window's decoded audio, before the join


@dataclass
class Conditions:
    """Everything the denoiser needs for one video and prompt, computed once by `prepare`."""

    duration_s: float
    windows: list[Window]
    layout: LatentLayout
    clip: torch.Tensor  # [W, N8, D] SigLIP2 features per window
    sync: torch.Tensor  # [W, Ns, D] Synchformer features per window
    text: torch.Tensor  # [2, T, D]: (negative, prompt), padded together as the official encodes them

    @property
    def latent_len(self) -> int:
        return self.layout.shape[1]


class FoleyPipeline:
    def __init__(self, components: Components, preset: Preset, device: torch.device, mode: Mode = FP32,
                 frames: FrameRule = "official"):
        """`mode` must be resolved (no `auto` dtype); `load` resolves it and applies its switches.
        `frames`: which frames the models see (docs/frames.md): the official pipeline's picks (what the
        released checkpoints were made with) or the exact ones at each sample time."""
        self.components, self.preset, self.device, self.mode = components, preset, device, mode
        self.dtype = mode.torch_dtype
        self.frames = frames

    @classmethod
    def load(
        cls,
        preset: str | Preset = "tiny",
        weights: str | os.PathLike[str] | None = None,
        device: str = "auto",
        mode: Mode | None = None,
        seed: int = 0,
        frames: FrameRule = "official",
    ) -> FoleyPipeline:
        """Build the components for `preset` (a name, or a Preset such as a benchmark's own) from
        `weights` (official files) or seeded random weights, in `mode` (default: Mode(), all automatic)."""
        from foleyscope.engine.device import resolve_device

        spec = get_preset(preset) if isinstance(preset, str) else preset
        with stage(Stage.LOAD):
            dev = resolve_device(device)
            mode = resolve(mode or Mode(), dev)  # `auto` dtype on a CPU runs a short matmul measurement
            home = torch.device("cpu") if mode.offload != "none" else dev  # offload places them itself
            components = build_components(spec, weights, home, mode.torch_dtype, seed=seed,
                                          encoder_dtype=mode.encoder_dtype)
            apply(components, mode, dev)
        return cls(components, spec, dev, mode, frames)

    def report_mode(self, cache_steps: tuple[int, int] | None = None) -> None:
        """Tell an active tracer how this call runs (every call: a pipeline loaded before the doctor
        started is described too); `cache_steps`: the step cache's (computed, skipped) once known."""
        m, cuda = self.mode, self.device.type == "cuda"
        computed, skipped = cache_steps or (None, None)
        emit(ModeReport(str(self.device), m.dtype, m.attention, m.compile, cuda_graphs=m.cudagraphs,
                        tf32=torch.backends.cuda.matmul.allow_tf32 if cuda else None,
                        dtype_stages=dtype_stages(m), quant=m.quant, cache=m.cache,
                        cache_steps_computed=computed, cache_steps_skipped=skipped, offload=m.offload))

    def __call__(
        self,
        video: str | os.PathLike[str],
        prompt: str,
        *,
        negative_prompt: str = DEFAULT_NEGATIVE_PROMPT,
        steps: int = 50,
        cfg: float = 4.5,
        solver: Solver = "euler",
        seed: int | None = None,
        progress: Listener | None = None,
    ) -> FoleyResult:
        """prepare -> denoise -> decode; `progress` gets every stage and step event of this call."""
        with listening(progress):
            cond = self.prepare(video, prompt, negative_prompt=negative_prompt)
            latents = self.denoise(cond, steps=steps, cfg=cfg, solver=solver, seed=seed)
            return self.decode(cond, latents)

    @torch.inference_mode()
    def prepare(self, video: str | os.PathLike[str], prompt: str, *,
                negative_prompt: str = DEFAULT_NEGATIVE_PROMPT) -> Conditions:
        """Decode the video once and run the three encoders: the step-invariant inputs of the denoiser."""
        self.report_mode()
        p, c = self.preset, self.components
        clip_spec = FrameSpec(p.clip_fps, c.visual_encoder.image_size, "squash")
        sync_spec = FrameSpec(p.sync_fps, p.sync.image_size, "crop", interpolation="BICUBIC")
        with stage(Stage.DECODE):
            frames = extract_frames(video, [clip_spec, sync_spec], frames=self.frames, progress=_decode_progress)
        duration = frames.duration_s
        n8, n25 = frames.official_counts or [len(a) for a in frames.arrays]  # what the release keeps (15 s cap)
        windows, latent_len = self._plan(duration, n25)
        arrays = [a[:n] for a, n in zip(frames.arrays, (n8, n25), strict=True)] if len(windows) == 1 else frames.arrays
        with stage(Stage.VISUAL_ENCODE):
            clip_all = self._batched(c.visual_encoder, arrays[0], p.visual_batch)  # [N8, D]
        with stage(Stage.TEXT_ENCODE):
            # [negative, prompt] padded together, no mask, whatever the guidance (as the official: with
            # cfg 1 the prompt row still carries the padding a longer negative prompt gave it)
            text = c.text_encoder([negative_prompt, prompt])[0].to(self.dtype)
        with stage(Stage.SYNC_ENCODE):
            sync_s = max(windows[0].length_s, p.sync.segment_frames / p.sync_fps)  # a clip under 0.64 s
            sync_frames = [_take(arrays[1], w.start_s, sync_s, p.sync_fps) for w in windows]
            sync = c.sync_encoder(torch.from_numpy(np.stack(sync_frames)).to(self.device))  # windows as a batch
        if len(windows) == 1:  # every frame the reader took, as the official pipeline feeds them
            clip = clip_all[None]
        else:
            clip = torch.stack([_take(clip_all, w.start_s, w.length_s, p.clip_fps) for w in windows])
        self._emit_encoder_flops(len(windows), len(arrays[0]), sync_frames[0].shape[0], text.shape)
        return Conditions(duration, windows, LatentLayout(windows, latent_len, p.latent_rate), clip,
                          sync.to(self.dtype), text)

    @torch.inference_mode()
    def denoise(self, cond: Conditions, *, steps: int = 50, cfg: float = 4.5, solver: Solver = "euler",
                seed: int | None = None) -> torch.Tensor:
        """Noise (seeded, one timeline for all windows) -> fp32 latents [W, C, L]."""
        p = self.preset
        gen = torch.Generator("cpu").manual_seed(seed if seed is not None else int.from_bytes(os.urandom(8)) >> 1)
        noise = cond.layout.noise(p.denoiser.latent_channels, gen).to(self.device)
        # windows run through the denoiser in chunks of `window_batch` so a long clip's memory stays bounded
        chunks = [slice(i, i + p.window_batch) for i in range(0, len(cond.windows), p.window_batch)]
        with stage(Stage.DENOISE, total=steps):
            conds = [self._condition(cond.clip[s], cond.sync[s], cond.text, cond.latent_len, cfg) for s in chunks]
            velocity = self.velocity(conds, chunks, cfg)
            consensus = cond.layout.average if len(cond.windows) > 1 else None
            latents = sample(velocity, noise, steps=steps, cfg=cfg, solver=solver, consensus=consensus)
        self._emit_denoise_flops(cond, steps, solver, cfg)
        self._report_step_cache(conds)
        return latents

    def _report_step_cache(self, conds: list[Conditioning]) -> None:
        """The step cache's counts of this video (denoiser evaluations, summed over window chunks)."""
        caches = [c.cache for c in conds if c.cache is not None]
        if not caches:
            return
        computed, skipped = sum(c.computed for c in caches), sum(c.skipped for c in caches)
        log.info("step cache (threshold %g): %d denoiser steps computed, %d skipped", self.mode.cache,
                 computed, skipped)
        self.report_mode(cache_steps=(computed, skipped))

    @torch.inference_mode()
    def decode(self, cond: Conditions, latents: torch.Tensor) -> FoleyResult:
        """Latents -> the 48 kHz track, exactly as long as the video (windows joined)."""
        p, vae = self.preset, self.components.vae
        chunks = [slice(i, i + p.window_batch) for i in range(0, len(cond.windows), p.window_batch)]
        with stage(Stage.VAE_DECODE):
            vae_dtype = next(vae.parameters()).dtype
            audio = torch.cat([vae.decode(latents[s].to(vae_dtype)).float()[:, 0].cpu() for s in chunks]).numpy()
        from foleyscope.model.dac_vae import vae_decode_flops

        flops = vae_decode_flops(p.vae, cond.latent_len, batch=len(cond.windows))
        emit(StageFlops(Stage.VAE_DECODE.value, float(flops)))
        per_window = [a[: round(w.length_s * p.sample_rate)] for a, w in zip(audio, cond.windows, strict=True)]
        track = np.clip(join(cond.windows, per_window, p.sample_rate, cond.duration_s), -1.0, 1.0)
        return FoleyResult(track, p.sample_rate, cond.duration_s, cond.windows, per_window)

    def _plan(self, duration: float, sync_frames: int) -> tuple[list[Window], int]:
        """Windows and their latent length. A clip that fits the model is one window as long as the
        25 fps frames the reader took, with the official latent count (its float truncation kept, so the
        same noise gives the same latents); the audio is fitted to the video's duration afterwards.
        Longer clips: equal windows on the whole-second grid."""
        p = self.preset
        windows = plan_windows(duration, p.window_s, p.overlap_s, p.sync_fps)
        if len(windows) > 1:
            return windows, round(windows[0].length_s * p.latent_rate)
        return [Window(0.0, sync_frames / p.sync_fps)], official_latent_count(sync_frames, p.sync_fps, p.latent_rate)

    def velocity(self, conds: list[Conditioning], chunks: list[slice], cfg: float) -> Velocity:
        """The denoiser as the sampler sees it, built in this one place (a mode may wrap it): all
        windows in one batch, run chunk by chunk, each chunk's conditioning prepared once (`conds`)."""
        den = self.components.denoiser

        def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # t stays fp32, as upstream
            if len(chunks) == 1:
                return den(x.to(self.dtype), t, conds[0])
            halves = x.chunk(1 if cfg == 1.0 else 2)  # [cond] or [uncond, cond]
            outs = []
            for s, c in zip(chunks, conds, strict=True):
                xs = torch.cat([h[s] for h in halves]).to(self.dtype)
                outs.append(den(xs, t[: len(xs)], c).chunk(len(halves)))
            return torch.cat([part[k] for k in range(len(halves)) for part in outs])

        return velocity

    def _condition(self, clip, sync, text, latent_len: int, cfg: float) -> Conditioning:
        """The denoiser's step-invariant inputs for one chunk of windows ([uncond, cond] with CFG)."""
        den = self.components.denoiser
        b = clip.shape[0]
        pos_text = text[1:].expand(b, -1, -1)  # the prompt row; the negative one is row 0
        if cfg == 1.0:
            return den.prepare(clip, sync, pos_text, latent_len)
        empty_clip, empty_sync = den.uncond_features(b, clip.shape[1], sync.shape[1])
        return den.prepare(
            torch.cat([empty_clip.to(clip), clip]),
            torch.cat([empty_sync.to(sync), sync]),
            torch.cat([text[:1].expand(b, -1, -1), pos_text]),
            latent_len,
        )

    def _batched(self, encoder: torch.nn.Module, frames: np.ndarray, batch: int) -> torch.Tensor:
        out = [encoder(torch.from_numpy(frames[i : i + batch]).to(self.device)) for i in range(0, len(frames), batch)]
        return torch.cat(out).to(self.dtype)

    def _emit_encoder_flops(self, n_win: int, n_visual: int, n_sync_frames: int, text_shape) -> None:
        """Analytic FLOPs of the encoder stages (each checked against FlopCounterMode in tests): the
        doctor's compute floor."""
        from foleyscope.model.encoders import text_encode_flops, visual_encode_flops
        from foleyscope.model.synchformer import sync_flops

        p, c = self.preset, self.components
        emit(StageFlops(Stage.SYNC_ENCODE.value, float(sync_flops(p.sync, n_sync_frames, batch=n_win))))
        emit(StageFlops(Stage.VISUAL_ENCODE.value, float(visual_encode_flops(c.visual_encoder.config, n_visual))))
        emit(StageFlops(Stage.TEXT_ENCODE.value,
                        float(text_encode_flops(c.text_encoder.config, text_shape[0], text_shape[1]))))

    def _emit_denoise_flops(self, cond: Conditions, steps: int, solver: str, cfg: float) -> None:
        from foleyscope.model.flops import denoiser_flops_per_step, denoiser_prepare_flops

        p = self.preset
        n_sync = p.sync.n_tokens(_sync_frames(cond, p))
        batch = len(cond.windows) * (1 if cfg == 1.0 else 2)  # chunks of windows add up to the same work
        nfe = steps if solver == "euler" else 2 * steps - 1
        shape = (p.denoiser, cond.latent_len, cond.clip.shape[1], n_sync, cond.text.shape[1], batch)
        emit(StageFlops(Stage.DENOISE.value,
                        nfe * denoiser_flops_per_step(*shape) + denoiser_prepare_flops(*shape)))


def _sync_frames(cond: Conditions, p: Preset) -> int:
    """Frames of one window's Synchformer segment (what the sync features were computed from)."""
    sync_s = max(cond.windows[0].length_s, p.sync.segment_frames / p.sync_fps)
    return math.ceil(sync_s * p.sync_fps - 1e-6)


def _decode_progress(done_s: float, total_s: float) -> None:
    publish(Progress("step", Stage.DECODE.value, done_s, total_s, unit="s"))


def _take(items: np.ndarray | torch.Tensor, start_s: float, length_s: float, rate: float):
    """Rows [start*rate, start*rate + length*rate) of a per-frame array; past the end, the last row
    repeats (the frame still shown), so every window has the same number of rows."""
    first, count = round(start_s * rate), math.ceil(length_s * rate - 1e-6)
    idx = np.minimum(np.arange(first, first + count), len(items) - 1)
    return items[idx] if isinstance(items, np.ndarray) else items[torch.from_numpy(idx).to(items.device)]
