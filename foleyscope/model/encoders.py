"""The two pretrained condition encoders, built with `transformers` from a config and loaded through
foleyscope.engine.weights (memory-mapped, straight to device and dtype, keys checked by name).

What the official pipeline does, and what we match for the same weights:
- visual_encode: SigLIP2 `google/siglip2-base-patch16-512` (config model_type "siglip": the
  fixed-resolution SigLIP2 checkpoints use the SigLIP architecture; NaFlex ones are "siglip2" and are not
  what HunyuanVideo-Foley uses). Frames squashed to 512x512 RGB, x/255 then mean/std 0.5, one pooled
  768-d vector per frame from the attention-pooling head (what `get_image_features` returned before
  transformers 5 wrapped it in an output object). We call the vision tower ourselves and take
  `pooler_output`, so we do not depend on that return type. Resizing is the frame extractor's job
  (the official code resizes the full-resolution frame with PIL bilinear, antialiased).
- text_encode: CLAP `laion/larger_clap_general` text tower (RoBERTa), `last_hidden_state`. The official
  code tokenizes the batch [negative, positive] with padding to the LONGEST prompt (not to 77), no
  truncation, then keeps the first 77 positions; the denoiser's text cross-attention uses no mask, so
  the padded positions count. Encode negative and positive prompts in ONE call to match it. We also
  truncate at the position-embedding limit (512 tokens), where the official code would crash.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from foleyscope.engine.weights import (
    METADATA_KEY,
    read_checkpoint,
    read_hf_weights,
    write_safetensors,
)
from foleyscope.errors import FoleyscopeError

TEXT_LENGTH = 77
# The other tower and the contrastive heads of the full checkpoints: present in the files, unused here.
SIGLIP_UNUSED = ("text_model.", "logit_scale", "logit_bias")
CLAP_UNUSED = ("text_model.pooler.", "text_projection.", "audio_model.", "audio_projection.", "logit_scale_")
# Saved as persistent buffers by some transformers versions, not by others; derivable either way.
CLAP_DERIVED = ("text_model.embeddings.position_ids", "text_model.embeddings.token_type_ids")


def _pick(output, name: str, index: int) -> Tensor:
    """A field of a transformers model output, whether it comes back as an object or a tuple."""
    value = getattr(output, name, None)
    return value if value is not None else output[index]


class VisualEncoder(nn.Module):
    """SigLIP(2) image tower + attention-pooling head: uint8 RGB frames -> one vector per frame."""

    def __init__(self, config) -> None:
        super().__init__()
        from transformers.models.siglip.modeling_siglip import SiglipVisionTransformer

        self.config = config
        self.vision_model = SiglipVisionTransformer(config)  # keys match SiglipModel's `vision_model.*`

    @property
    def image_size(self) -> int:
        return int(self.config.image_size)

    @property
    def width(self) -> int:
        return int(self.config.hidden_size)

    @torch.no_grad()
    def forward(self, frames: Tensor | np.ndarray, batch_size: int | None = None) -> Tensor:
        """frames: uint8 [N, S, S, 3] RGB, S = image_size (a tensor, or the frame extractor's array)
        -> [N, width]. `batch_size` bounds activation memory; None encodes all frames at once."""
        if isinstance(frames, np.ndarray):
            frames = torch.from_numpy(frames)
        s = self.image_size
        if frames.dtype != torch.uint8 or frames.ndim != 4 or tuple(frames.shape[1:]) != (s, s, 3):
            raise FoleyscopeError(
                f"visual encoder wants uint8 frames [N, {s}, {s}, 3], got {frames.dtype} {list(frames.shape)}"
            )
        param = next(self.parameters())
        outs = []
        for chunk in frames.split(batch_size or max(len(frames), 1)):
            # uint8 travels to the device (4x less than float); normalise there in fp32 exactly like
            # ToTensor + Normalize(0.5, 0.5): x/255, then (x - 0.5) / 0.5.
            x = chunk.to(param.device, non_blocking=True).permute(0, 3, 1, 2).float()
            x = (x / 255.0 - 0.5) / 0.5
            out = self.vision_model(pixel_values=x.to(param.dtype))
            outs.append(_pick(out, "pooler_output", 1))
        if not outs:
            return torch.empty(0, self.width, device=param.device, dtype=param.dtype)
        return torch.cat(outs)


class TextEncoder(nn.Module):
    """CLAP's RoBERTa text tower: prompts -> (last_hidden_state [B, L, D], attention mask [B, L]).

    L = min(longest prompt in tokens, text_length), as the official pipeline does; with
    `pad_to_length=True`, L = text_length exactly (a fixed shape, e.g. for compiled/captured graphs;
    the padded positions then differ from the official run unless the denoiser masks them)."""

    def __init__(
        self, config, tokenizer, text_length: int = TEXT_LENGTH, pad_to_length: bool = False
    ) -> None:
        super().__init__()
        from transformers.models.clap.modeling_clap import ClapTextModel

        self.config = config
        self.tokenizer = tokenizer
        self.text_length = text_length
        self.pad_to_length = pad_to_length
        self.text_model = ClapTextModel(config, add_pooling_layer=False)
        # RoBERTa positions start after the pad id, so this many tokens fit the position table.
        self.max_tokens = int(config.max_position_embeddings) - int(config.pad_token_id) - 1

    @property
    def width(self) -> int:
        return int(self.config.hidden_size)

    def tokenize(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        if isinstance(prompts, str) or not prompts:
            raise FoleyscopeError("text encoder wants a non-empty list of prompts")
        enc = self.tokenizer(
            list(prompts), padding="longest", truncation=True, max_length=self.max_tokens, return_tensors="pt"
        )
        ids, mask = enc["input_ids"], enc["attention_mask"]
        if self.pad_to_length and ids.shape[1] < self.text_length:
            extra = self.text_length - ids.shape[1]
            ids = torch.nn.functional.pad(ids, (0, extra), value=int(self.config.pad_token_id))
            mask = torch.nn.functional.pad(mask, (0, extra), value=0)
        return ids, mask

    @torch.no_grad()
    def forward(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        ids, mask = self.tokenize(prompts)
        _warn_if_cut(prompts, mask, self.text_length, self.max_tokens)
        device = next(self.parameters()).device
        out = self.text_model(input_ids=ids.to(device), attention_mask=mask.to(device))
        hidden = _pick(out, "last_hidden_state", 0)
        n = self.text_length
        return hidden[:, :n], mask[:, :n].to(device=device, dtype=torch.bool)


_WARNED: set[str] = set()


def _warn_if_cut(prompts: list[str], mask: Tensor, window: int, max_tokens: int) -> None:
    """Say once per prompt (one stderr line) that only its first `window` tokens condition the sound."""
    from foleyscope.progress import warn

    for prompt, n in zip(prompts, mask.sum(dim=1).tolist(), strict=True):
        if n > window and prompt not in _WARNED:
            _WARNED.add(prompt)
            head = " ".join(prompt.split())[:40]
            warn(f"a prompt of {n}{'+' if n >= max_tokens else ''} tokens (\"{head}...\") is longer than the "
                 f"text encoder's {window}-token window; everything after token {window} was ignored")


# ------------------------------------------------------------------------------------------- loading


def _hf_config(folder: Path):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise FoleyscopeError(f"{folder}: unreadable config.json ({str(exc).splitlines()[0]})") from exc


def siglip_vision_config(config):
    """The vision config inside a SigLIP(2) model config, refusing NaFlex and non-SigLIP models."""
    kind = getattr(config, "model_type", "")
    if kind == "siglip":
        return config.vision_config
    if kind == "siglip_vision_model":
        return config
    if kind.startswith("siglip2"):
        raise FoleyscopeError(
            "this is a NaFlex SigLIP2 checkpoint; HunyuanVideo-Foley uses the fixed-resolution "
            "google/siglip2-base-patch16-512"
        )
    raise FoleyscopeError(f"expected a SigLIP2 image model, found model_type {kind!r}")


def clap_text_config(config):
    kind = getattr(config, "model_type", "")
    if kind == "clap":
        return config.text_config
    if kind == "clap_text_model":
        return config
    raise FoleyscopeError(f"expected a CLAP model (laion/larger_clap_general), found model_type {kind!r}")


def load_visual_encoder(
    path: str | os.PathLike[str],
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = torch.float32,
) -> VisualEncoder:
    """From a local Hugging Face folder (config.json + weights of the full SigLIP2 model; the vision keys
    are taken) or a single .safetensors written by save_visual_encoder (or holding the vision keys of
    siglip2-base-patch16-512, whose config is then assumed)."""
    from transformers import SiglipVisionConfig

    from foleyscope.engine.weights import load_module

    path = Path(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FoleyscopeError(f"{path}: no config.json (expected a Hugging Face SigLIP2 folder)")
        config = siglip_vision_config(_hf_config(path))
        state = read_hf_weights(path)
    elif path.suffix == ".safetensors":
        state, meta = read_checkpoint(path)
        config = SiglipVisionConfig(**(meta or {}).get("config", {"image_size": 512}))
    else:
        raise FoleyscopeError(f"{path}: expected a SigLIP2 folder or a .safetensors file")
    module, report = load_module(
        lambda: VisualEncoder(config), state, device=device, dtype=dtype,
        ignored_prefixes=SIGLIP_UNUSED, component="SigLIP2 image encoder",
    )
    module.load_report = report  # what was loaded and ignored, for the load stage's log
    return module  # type: ignore[return-value]


def save_visual_encoder(encoder: VisualEncoder, path: str | os.PathLike[str]) -> None:
    """One safetensors file with the vision keys and the config (what load_visual_encoder reads back)."""
    config = {k: v for k, v in encoder.config.to_diff_dict().items() if not k.startswith("_")}
    meta = {"format": "pt", METADATA_KEY: json.dumps({"config": config})}
    write_safetensors(encoder.state_dict(), path, meta)


def load_text_encoder(
    path: str | os.PathLike[str],
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = torch.float32,
    *,
    pad_to_length: bool = False,
) -> TextEncoder:
    """From a local Hugging Face CLAP folder: tokenizer files + config.json + weights (text keys taken)."""
    from transformers import AutoTokenizer

    from foleyscope.engine.weights import load_module

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FoleyscopeError(f"{path}: no config.json (expected a Hugging Face CLAP folder)")
    config = clap_text_config(_hf_config(path))
    # Checked first: without its files, transformers 5 quietly builds an empty-vocabulary RoBERTa tokenizer.
    if not ((path / "tokenizer.json").is_file() or (path / "vocab.json").is_file()):
        raise FoleyscopeError(f"{path}: no CLAP tokenizer files (tokenizer.json, or vocab.json + merges.txt)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise FoleyscopeError(f"{path}: cannot load the CLAP tokenizer ({str(exc).splitlines()[0]})") from exc
    if len(tokenizer) > config.vocab_size:
        raise FoleyscopeError(
            f"{path}: tokenizer has {len(tokenizer)} tokens but the text model only {config.vocab_size}"
        )
    state = read_hf_weights(path)
    module, report = load_module(
        lambda: TextEncoder(config, tokenizer, pad_to_length=pad_to_length), state, device=device,
        dtype=dtype, ignored_prefixes=CLAP_UNUSED, derived_buffers=CLAP_DERIVED,
        component="CLAP text encoder",
    )
    module.load_report = report
    return module  # type: ignore[return-value]


# ------------------------------------------------------------------------------------- tiny (tests/demo)


def tiny_visual_config(width: int = 32, layers: int = 1):
    """512x512 input like the real model (so frames are prepared identically), 64 px patches (64
    tokens) so it costs almost nothing."""
    from transformers import SiglipVisionConfig

    return SiglipVisionConfig(
        hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers, num_attention_heads=2,
        image_size=512, patch_size=64,
    )


def tiny_text_config(vocab_size: int, width: int = 32, layers: int = 1):
    from transformers import ClapTextConfig

    return ClapTextConfig(
        vocab_size=vocab_size, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
        num_attention_heads=2, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
        bos_token_id=0, eos_token_id=2, projection_dim=width,
    )


def _seeded(seed: int, build):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build().eval()


def tiny_visual_encoder(seed: int = 0, width: int = 32) -> VisualEncoder:
    """Seeded random SigLIP-architecture encoder: uint8 [N, 512, 512, 3] -> [N, width]."""
    return _seeded(seed, lambda: VisualEncoder(tiny_visual_config(width)))


def tiny_text_encoder(seed: int = 0, width: int = 32) -> TextEncoder:
    """Seeded random CLAP-architecture text encoder with the built-in tiny tokenizer."""
    from foleyscope.tokenizer_data import tiny_tokenizer

    tok = tiny_tokenizer()
    return _seeded(seed, lambda: TextEncoder(tiny_text_config(len(tok), width), tok))


# ---------------------------------------------------------------------------------------------- FLOPs


def _encoder_layer_flops(tokens: int, width: int, inner: int, layers: int) -> int:
    """Matmul FLOPs of `layers` pre-norm transformer layers over `tokens` (QKV + out, MLP, attention)."""
    linear = 2 * tokens * (4 * width * width + 2 * width * inner)
    attention = 4 * tokens * tokens * width
    return layers * (linear + attention)


def visual_encode_flops(config, n_frames: int) -> int:
    """SigLIP image tower + attention-pooling head for `n_frames` frames (the doctor's compute floor)."""
    w, n = int(config.hidden_size), (int(config.image_size) // int(config.patch_size)) ** 2
    patch = 2 * n * w * 3 * int(config.patch_size) ** 2
    head = 2 * (w * w + 2 * n * w * w + 2 * w * int(config.intermediate_size)) + 4 * n * w  # probe-query attention
    body = _encoder_layer_flops(n, w, int(config.intermediate_size), int(config.num_hidden_layers))
    return n_frames * (patch + body + head)


def text_encode_flops(config, n_prompts: int, n_tokens: int) -> int:
    """CLAP's RoBERTa text tower for `n_prompts` prompts of `n_tokens` tokens."""
    w = int(config.hidden_size)
    return n_prompts * _encoder_layer_flops(n_tokens, w, int(config.intermediate_size),
                                            int(config.num_hidden_layers))
