"""DAC-VAE: the continuous-latent audio autoencoder behind the `vae_decode` stage.

The denoiser produces 128-channel latents at 50 Hz; this decoder turns them into 48 kHz mono audio
(hop 960 = 2*3*4*5*8). The module tree mirrors the official release file `vae_128d_48k.pth`
({"state_dict": ..., "metadata": {"kwargs": ...}}) key for key, so that file loads strictly:
convolutions keep the old weight-norm parameter names `weight_g` / `weight_v`, the decoder lives
under `decoder.model.N`, the encoder under `encoder.block.N`. The encoder is built too (the release
contains it, and tests use it), but the pipeline only decodes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from foleyscope.errors import FoleyscopeError

# Every key of the release file belongs to a module we build.
IGNORED_KEY_PREFIXES: tuple[str, ...] = ()
# The encoder half (about 296 M of the release's 372 M parameters); a decoder-only DacVAE
# (encoder=False) leaves these keys out, and a loader should report them as ignored.
ENCODER_KEY_PREFIXES: tuple[str, ...] = ("encoder.", "quant_conv.")

_DILATIONS = (1, 3, 9)  # the three residual units of every encoder/decoder block


@dataclass(frozen=True)
class DacConfig:
    """Shape of a continuous DAC; names follow the official metadata kwargs."""

    encoder_dim: int = 128
    encoder_rates: tuple[int, ...] = (2, 3, 4, 5, 8)
    latent_dim: int = 128
    decoder_dim: int = 2048
    decoder_rates: tuple[int, ...] = (8, 5, 4, 3, 2)
    sample_rate: int = 48000

    def __post_init__(self) -> None:
        if math.prod(self.encoder_rates) != math.prod(self.decoder_rates):
            raise FoleyscopeError(
                f"DAC config: encoder rates {self.encoder_rates} and decoder rates {self.decoder_rates} "
                "give different hop lengths"
            )
        if self.decoder_dim % (2 ** len(self.decoder_rates)):
            raise FoleyscopeError(
                f"DAC config: decoder_dim {self.decoder_dim} must be divisible by "
                f"2**{len(self.decoder_rates)}"
            )

    @property
    def hop_length(self) -> int:
        return math.prod(self.encoder_rates)

    @classmethod
    def from_metadata(cls, kwargs: dict) -> DacConfig:
        """Build from the checkpoint's metadata["kwargs"]; missing keys take the official class defaults."""
        if kwargs.get("continuous", True) is False:
            raise FoleyscopeError(
                "DAC checkpoint is the quantised (codebook) variant; only the continuous VAE is supported"
            )
        encoder_dim = int(kwargs.get("encoder_dim", 64))
        encoder_rates = tuple(int(r) for r in kwargs.get("encoder_rates", (2, 4, 8, 8)))
        latent_dim = kwargs.get("latent_dim")
        if latent_dim is None:  # the official rule when the metadata leaves it out
            latent_dim = encoder_dim * 2 ** len(encoder_rates)
        return cls(
            encoder_dim=encoder_dim,
            encoder_rates=encoder_rates,
            latent_dim=int(latent_dim),
            decoder_dim=int(kwargs.get("decoder_dim", 1536)),
            decoder_rates=tuple(int(r) for r in kwargs.get("decoder_rates", (8, 8, 4, 2))),
            sample_rate=int(kwargs.get("sample_rate", 44100)),
        )

    def to_metadata(self) -> dict:
        """The metadata["kwargs"] an official-layout file carries for this config."""
        meta = asdict(self)
        meta["encoder_rates"] = list(self.encoder_rates)
        meta["decoder_rates"] = list(self.decoder_rates)
        meta["continuous"] = True
        return meta


DAC_PRESETS: dict[str, DacConfig] = {
    "official": DacConfig(),
    # Same rates (hop 960: 50 Hz latents -> 48 kHz) and latent width, tiny channel counts.
    "tiny": DacConfig(encoder_dim=4, latent_dim=128, decoder_dim=64),
}


class Snake(nn.Module):
    """x + sin^2(alpha x) / alpha, one learnable alpha per channel (key: `alpha`, shape [1, C, 1])."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        alpha = self.alpha
        if torch.is_grad_enabled():  # training or gradient checks: out-of-place
            return x + torch.sin(alpha * x).pow(2) * (alpha + 1e-9).reciprocal()
        # Inference: one buffer instead of five. The decoder is memory-bound on long audio (up to
        # 128 channels x 48k samples per second), so this halves the activation time; same result
        # to the bit (the same operations in the same order).
        y = alpha * x
        return y.sin_().square_().mul_((alpha + 1e-9).reciprocal()).add_(x)


class WNConv(nn.Module):
    """Conv1d / ConvTranspose1d whose weight is g * v / ||v|| (norm over all but dim 0).

    Stores `weight_g`, `weight_v`, `bias` like torch's legacy weight_norm, so official keys load
    as they are. `fold()` caches the effective weight for inference; loading clears the cache.
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int,
        *,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        transposed: bool = False,
        output_padding: int = 0,
    ) -> None:
        super().__init__()
        shape = (c_in, c_out, kernel) if transposed else (c_out, c_in, kernel)
        v = torch.empty(shape)
        nn.init.kaiming_uniform_(v, a=math.sqrt(5))  # torch's default conv init
        self.weight_g = nn.Parameter(torch.linalg.vector_norm(v, dim=(1, 2), keepdim=True))
        self.weight_v = nn.Parameter(v)
        bound = 1.0 / math.sqrt(shape[1] * kernel)
        self.bias = nn.Parameter(torch.empty(c_out).uniform_(-bound, bound))
        self.register_buffer("folded", None, persistent=False)
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.transposed, self.output_padding = transposed, output_padding

    def effective_weight(self) -> Tensor:
        if self.folded is not None:
            return self.folded
        # torch's own weight-norm kernel: bit-identical to the official (legacy weight_norm) weights
        return torch._weight_norm(self.weight_v, self.weight_g, 0)

    @torch.no_grad()
    def fold(self) -> None:
        self.folded = None
        self.folded = self.effective_weight().detach()

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # new weights invalidate the cache
        self.folded = None
        super()._load_from_state_dict(*args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        w = self.effective_weight()
        if self.transposed:
            return F.conv_transpose1d(
                x, w, self.bias, self.stride, self.padding, self.output_padding, 1, self.dilation
            )
        return F.conv1d(x, w, self.bias, self.stride, self.padding, self.dilation)

    def extra_repr(self) -> str:
        kind = "transposed" if self.transposed else "conv"
        return f"{kind}, v={tuple(self.weight_v.shape)}, stride={self.stride}, dilation={self.dilation}"


class ResidualUnit(nn.Module):
    """Snake -> dilated k7 conv -> Snake -> k1 conv, plus the input (lengths are preserved)."""

    def __init__(self, dim: int, dilation: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            Snake(dim),
            WNConv(dim, dim, 7, dilation=dilation, padding=3 * dilation),
            Snake(dim),
            WNConv(dim, dim, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        y = self.block(x)
        return x + y if torch.is_grad_enabled() else y.add_(x)  # in place: y is this unit's own buffer


def _down(c_in: int, c_out: int, stride: int) -> WNConv:
    return WNConv(c_in, c_out, 2 * stride, stride=stride, padding=math.ceil(stride / 2))


def _up(c_in: int, c_out: int, stride: int) -> WNConv:
    return WNConv(
        c_in, c_out, 2 * stride, stride=stride, padding=math.ceil(stride / 2),
        transposed=True, output_padding=stride % 2,
    )


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, stride: int) -> None:
        super().__init__()
        half = dim // 2
        units = [ResidualUnit(half, d) for d in _DILATIONS]
        self.block = nn.Sequential(*units, Snake(half), _down(half, dim, stride))

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class DecoderBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        units = [ResidualUnit(c_out, d) for d in _DILATIONS]
        self.block = nn.Sequential(Snake(c_in), _up(c_in, c_out, stride), *units)

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class Encoder(nn.Module):
    def __init__(self, cfg: DacConfig) -> None:
        super().__init__()
        dim = cfg.encoder_dim
        layers: list[nn.Module] = [WNConv(1, dim, 7, padding=3)]
        for stride in cfg.encoder_rates:
            dim *= 2
            layers.append(EncoderBlock(dim, stride))
        layers += [Snake(dim), WNConv(dim, cfg.latent_dim, 3, padding=1)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


def _decoder_widths(cfg: DacConfig) -> list[int]:
    """Channel count entering each decoder block, then the final width."""
    return [cfg.decoder_dim // 2**i for i in range(len(cfg.decoder_rates) + 1)]


class Decoder(nn.Module):
    def __init__(self, cfg: DacConfig) -> None:
        super().__init__()
        widths = _decoder_widths(cfg)
        layers: list[nn.Module] = [WNConv(cfg.latent_dim, widths[0], 7, padding=3)]
        for i, stride in enumerate(cfg.decoder_rates):
            layers.append(DecoderBlock(widths[i], widths[i + 1], stride))
        layers += [Snake(widths[-1]), WNConv(widths[-1], 1, 7, padding=3), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class DacVAE(nn.Module):
    """Continuous DAC: `decode` maps [B, latent, L] latents to [B, 1, L * hop] audio in [-1, 1].

    `encoder=False` builds the decoder only (what inference needs): the state dict then lacks
    ENCODER_KEY_PREFIXES, and `encode` is unavailable.
    """

    def __init__(self, cfg: DacConfig | None = None, encoder: bool = True) -> None:
        super().__init__()
        self.cfg = cfg = cfg or DacConfig()
        self.has_encoder = encoder
        if encoder:
            self.encoder = Encoder(cfg)
            self.quant_conv = nn.Conv1d(cfg.latent_dim, 2 * cfg.latent_dim, 1)
        self.post_quant_conv = nn.Conv1d(cfg.latent_dim, cfg.latent_dim, 1)
        self.decoder = Decoder(cfg)

    @property
    def hop_length(self) -> int:
        return self.cfg.hop_length

    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    @property
    def latent_rate(self) -> float:
        return self.cfg.sample_rate / self.cfg.hop_length

    def fold_weight_norm(self) -> DacVAE:
        """Cache every conv's effective weight (inference); state-dict keys stay official."""
        for m in self.modules():
            if isinstance(m, WNConv):
                m.fold()
        return self

    def decode(self, z: Tensor) -> Tensor:
        if z.ndim != 3 or z.shape[1] != self.cfg.latent_dim:
            raise FoleyscopeError(
                f"VAE decode expects latents [B, {self.cfg.latent_dim}, L], got {tuple(z.shape)}"
            )
        z = z.to(self.post_quant_conv.weight.dtype)
        return self.decoder(self.post_quant_conv(z))

    def encode(self, audio: Tensor) -> Tensor:
        """[B, 1, T] or [B, T] audio at `sample_rate` -> posterior mean [B, latent, ceil(T / hop)]."""
        if not self.has_encoder:
            raise FoleyscopeError("this DacVAE was built decoder-only (encoder=False)")
        if audio.ndim == 2:
            audio = audio.unsqueeze(1)
        if audio.ndim != 3 or audio.shape[1] != 1:
            raise FoleyscopeError(f"VAE encode expects mono audio [B, 1, T], got {tuple(audio.shape)}")
        pad = -audio.shape[-1] % self.hop_length
        audio = F.pad(audio.to(self.quant_conv.weight.dtype), (0, pad))
        moments = self.quant_conv(self.encoder(audio))
        return moments[:, : self.cfg.latent_dim]

    def forward(self, z: Tensor) -> Tensor:
        return self.decode(z)


def vae_decode_flops(cfg: DacConfig, latent_len: int, batch: int = 1) -> int:
    """Multiply-add FLOPs (2 per MAC) of `decode` for `latent_len` latent frames; convs only
    (Snake and tanh are elementwise and left out), exactly what FlopCounterMode counts."""
    length = latent_len
    widths = _decoder_widths(cfg)
    flops = 2 * length * cfg.latent_dim * cfg.latent_dim  # post_quant_conv
    flops += 2 * length * cfg.latent_dim * widths[0] * 7
    for i, stride in enumerate(cfg.decoder_rates):
        c_in, c_out = widths[i], widths[i + 1]
        flops += 2 * length * c_in * c_out * 2 * stride  # transposed conv: every input tap
        length *= stride
        flops += len(_DILATIONS) * 2 * length * c_out * c_out * (7 + 1)
    flops += 2 * length * widths[-1] * 7
    return batch * flops
