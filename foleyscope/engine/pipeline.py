"""The Foley pipeline: one object, one call, components passed in.

    pipe = FoleyPipeline.load("tiny")                     # or load("xxl", weights="ckpts/")
    result = pipe("clip.mp4", "footsteps on gravel")      # FoleyResult: 48 kHz mono, as long as the video

Each stage runs under `stage(Stage.X)` so the doctor can time it. The video is decoded once for
both frame rates; visual features are computed once per frame, text once per call; everything the
denoiser can precompute is prepared once per window batch, not per step; long clips are split into
equal overlapping windows that are denoised jointly (one noise timeline, overlapping latents averaged
after every step) and joined with a short fade."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from foleyscope.engine.presets import Components, Preset, build_components, get_preset
from foleyscope.engine.sampler import Solver, sample
from foleyscope.engine.windows import LatentLayout, Window, join, plan_windows
from foleyscope.media.frames import FrameSpec, extract_frames
from foleyscope.stages import Stage
from foleyscope.trace import note, stage

DEFAULT_NEGATIVE_PROMPT = "noisy, harsh"
# The stages whose networks run in the pipeline's dtype; the VAE decode stays fp32 whatever --dtype says.
DTYPE_STAGES = [s.value for s in (Stage.VISUAL_ENCODE, Stage.SYNC_ENCODE, Stage.TEXT_ENCODE, Stage.DENOISE)]
Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class FoleyResult:
    audio: np.ndarray  # float32 [T], mono
    sample_rate: int
    duration_s: float
    windows: list[Window] = field(default_factory=list)
    window_audio: list[np.ndarray] = field(default_factory=list)  # each window's decoded audio, before the join


class FoleyPipeline:
    def __init__(self, components: Components, preset: Preset, device: torch.device, dtype: torch.dtype):
        self.components, self.preset, self.device, self.dtype = components, preset, device, dtype

    @classmethod
    def load(
        cls,
        preset: str = "tiny",
        weights: str | os.PathLike[str] | None = None,
        device: str = "auto",
        dtype: str = "auto",
        seed: int = 0,
        compile: bool = False,
    ) -> FoleyPipeline:
        """Build the components for `preset`: from `weights` (official files) or seeded random weights."""
        from foleyscope.engine.device import resolve_device, resolve_dtype

        spec = get_preset(preset)
        with stage(Stage.LOAD):
            dev = resolve_device(device)
            dt = resolve_dtype(dtype, dev)  # `auto` on a CPU runs a short matmul probe
            components = build_components(spec, weights, dev, dt, seed=seed)
            if compile:
                from foleyscope.engine.modes import compile_denoiser

                compile_denoiser(components.denoiser)
        note("inference_mode", device=str(dev), dtype=str(dt).removeprefix("torch."), compile=compile,
             cuda_graphs=False, dtype_stages=DTYPE_STAGES)
        return cls(components, spec, dev, dt)

    @torch.inference_mode()
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
        progress: Progress | None = None,
    ) -> FoleyResult:
        p, c = self.preset, self.components
        clip_spec = FrameSpec(p.clip_fps, c.visual_encoder.image_size, "squash")
        sync_spec = FrameSpec(p.sync_fps, p.sync.image_size, "crop", interpolation="BICUBIC")
        with _stage(Stage.DECODE, progress):
            frames = extract_frames(video, [clip_spec, sync_spec])
        duration = frames.duration_s
        windows = plan_windows(duration, p.window_s, p.overlap_s, p.sync_fps)

        with _stage(Stage.VISUAL_ENCODE, progress):
            clip_all = self._batched(c.visual_encoder, frames.arrays[0], p.visual_batch)  # [N8, D]
        with _stage(Stage.TEXT_ENCODE, progress):
            # [2, T, D] padded together, no mask (as upstream); without guidance the negative is unused
            prompts = [prompt] if cfg == 1.0 else [negative_prompt, prompt]
            text = c.text_encoder(prompts)[0].to(self.dtype)
        with _stage(Stage.SYNC_ENCODE, progress):
            sync_s = max(windows[0].length_s, p.sync.segment_frames / p.sync_fps)  # a clip under 0.64 s
            sync_frames = [_take(frames.arrays[1], w.start_s, sync_s, p.sync_fps) for w in windows]
            sync = c.sync_encoder(torch.from_numpy(np.stack(sync_frames)).to(self.device))  # windows as a batch
        clip = torch.stack([_take(clip_all, w.start_s, w.length_s, p.clip_fps) for w in windows])

        latent_len = round(windows[0].length_s * p.latent_rate)  # length_s is on the 25 fps grid
        layout = LatentLayout(windows, latent_len, p.latent_rate)
        gen = torch.Generator("cpu").manual_seed(seed if seed is not None else int.from_bytes(os.urandom(8)) >> 1)
        noise = layout.noise(p.denoiser.latent_channels, gen).to(self.device)

        # windows run through the denoiser in chunks of `window_batch` so a long clip's memory stays bounded
        chunks = [slice(i, i + p.window_batch) for i in range(0, len(windows), p.window_batch)]
        with _stage(Stage.DENOISE, progress, steps):
            latents = self._denoise(noise, clip, sync.to(self.dtype), text, steps, cfg, solver, chunks, progress,
                                    layout.average if len(windows) > 1 else None)
        with _stage(Stage.VAE_DECODE, progress):
            vae_dtype = next(c.vae.parameters()).dtype
            audio = torch.cat([c.vae.decode(latents[s].to(vae_dtype)).float()[:, 0].cpu() for s in chunks]).numpy()
        for name, flops in self._flops(len(windows), latent_len, clip.shape[1], sync_frames[0].shape[0],
                                       len(frames.arrays[0]), text.shape, steps, solver, cfg).items():
            note("flops", stage=name, flops=flops)  # the doctor's compute floor
        per_window = [a[: round(w.length_s * p.sample_rate)] for a, w in zip(audio, windows, strict=True)]
        track = np.clip(join(windows, per_window, p.sample_rate, duration), -1.0, 1.0)
        return FoleyResult(track, p.sample_rate, duration, windows, per_window)

    def _batched(self, encoder: torch.nn.Module, frames: np.ndarray, batch: int) -> torch.Tensor:
        out = [encoder(torch.from_numpy(frames[i : i + batch]).to(self.device)) for i in range(0, len(frames), batch)]
        return torch.cat(out).to(self.dtype)

    def _flops(self, n_win: int, latent_len: int, n_clip: int, n_frames: int, n_visual: int, text_shape,
               steps: int, solver: str, cfg: float) -> dict[str, float]:
        """Analytic FLOPs of this call's five model stages (each checked against FlopCounterMode in tests)."""
        from foleyscope.model.dac_vae import vae_decode_flops
        from foleyscope.model.encoders import text_encode_flops, visual_encode_flops
        from foleyscope.model.flops import denoiser_flops_per_step, denoiser_prepare_flops
        from foleyscope.model.synchformer import sync_flops

        p, c = self.preset, self.components
        n_text = text_shape[1]
        n_sync = p.sync.n_tokens(n_frames)
        batch = n_win * (1 if cfg == 1.0 else 2)  # chunks of windows add up to the same work
        nfe = steps if solver == "euler" else 2 * steps - 1
        shape = (p.denoiser, latent_len, n_clip, n_sync, n_text, batch)
        return {
            Stage.DENOISE.value: nfe * denoiser_flops_per_step(*shape) + denoiser_prepare_flops(*shape),
            Stage.SYNC_ENCODE.value: float(sync_flops(p.sync, n_frames, batch=n_win)),
            Stage.VAE_DECODE.value: float(vae_decode_flops(p.vae, latent_len, batch=n_win)),
            Stage.VISUAL_ENCODE.value: float(visual_encode_flops(c.visual_encoder.config, n_visual)),
            Stage.TEXT_ENCODE.value: float(text_encode_flops(c.text_encoder.config, text_shape[0], n_text)),
        }

    def _condition(self, clip, sync, text, latent_len: int, cfg: float):
        """The denoiser's step-invariant inputs for one chunk of windows ([uncond, cond] with CFG)."""
        den = self.components.denoiser
        b = clip.shape[0]
        pos_text = text[-1:].expand(b, -1, -1)  # the prompt is the last row (the only one without CFG)
        if cfg == 1.0:
            return den.prepare(clip, sync, pos_text, latent_len)
        empty_clip, empty_sync = den.uncond_features(b, clip.shape[1], sync.shape[1])
        return den.prepare(
            torch.cat([empty_clip.to(clip), clip]),
            torch.cat([empty_sync.to(sync), sync]),
            torch.cat([text[:1].expand(b, -1, -1), pos_text]),
            latent_len,
        )

    def _denoise(self, noise, clip, sync, text, steps, cfg, solver, chunks, progress, consensus) -> torch.Tensor:
        """All windows through one sampler loop (so `consensus` sees them together); the denoiser runs
        them chunk by chunk, each chunk's conditioning prepared once."""
        den = self.components.denoiser
        conds = [self._condition(clip[s], sync[s], text, noise.shape[-1], cfg) for s in chunks]

        def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # t stays fp32, as upstream
            if len(chunks) == 1:
                return den(x.to(self.dtype), t, conds[0])
            halves = x.chunk(1 if cfg == 1.0 else 2)  # [cond] or [uncond, cond]
            outs = []
            for s, cond in zip(chunks, conds, strict=True):
                xs = torch.cat([h[s] for h in halves]).to(self.dtype)
                outs.append(den(xs, t[: len(xs)], cond).chunk(len(halves)))
            return torch.cat([part[k] for k in range(len(halves)) for part in outs])

        on_step = (lambda i, n: progress(Stage.DENOISE.value, i, n)) if progress else None
        return sample(velocity, noise, steps=steps, cfg=cfg, solver=solver, on_step=on_step, consensus=consensus)


@contextlib.contextmanager
def _stage(name: Stage, progress: Progress | None, total: int = 1) -> Iterator[None]:
    """A traced stage that also tells the caller's progress display when it starts and ends."""
    if progress:
        progress(name.value, 0, total)
    with stage(name):
        yield
    if progress:
        progress(name.value, total, total)


def _take(items: np.ndarray | torch.Tensor, start_s: float, length_s: float, rate: float):
    """Rows [start*rate, start*rate + length*rate) of a per-frame array; past the end, the last row
    repeats (the frame still shown), so every window has the same number of rows."""
    first, count = round(start_s * rate), math.ceil(length_s * rate - 1e-6)
    idx = np.minimum(np.arange(first, first + count), len(items) - 1)
    return items[idx] if isinstance(items, np.ndarray) else items[torch.from_numpy(idx).to(items.device)]
