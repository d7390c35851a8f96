"""Finding the official release files inside a `--weights` folder (names below; the loaders are in
foleyscope.engine.weights, which re-exports this)."""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from foleyscope.errors import FoleyscopeError

# "tiny" is ours: the same layout at the tiny preset's sizes, so the whole loading path is testable here.
DENOISER_STEMS = {"xxl": "hunyuanvideo_foley", "xl": "hunyuanvideo_foley_xl", "tiny": "foleyscope_tiny"}
VAE_STEM = "vae_128d_48k"
SYNC_STEM = "synchformer_state_dict"
# Folder names accepted for the two Hugging Face models, in order of preference. The `models--*` form is
# a Hugging Face hub cache entry copied or linked in as is (the snapshot refs/main names is used).
SIGLIP_DIRS = ("siglip2-base-patch16-512", "siglip2", "google/siglip2-base-patch16-512",
               "models--google--siglip2-base-patch16-512")
CLAP_DIRS = ("larger_clap_general", "clap", "laion/larger_clap_general", "models--laion--larger_clap_general")


@dataclass(frozen=True)
class WeightPaths:
    """Where each component's weights live inside a --weights folder."""

    denoiser: Path
    vae: Path
    synchformer: Path
    siglip: Path  # Hugging Face folder (config.json + weights)
    clap: Path  # Hugging Face folder (config.json + weights + tokenizer files)


def locate_weights(directory: str | os.PathLike[str], preset: str) -> WeightPaths:
    """Find the official release files (or their safetensors conversions, preferred) in `directory`.
    Raises FoleyscopeError listing everything missing and the names that were looked for."""
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise FoleyscopeError(f"--weights {root}: not a folder")
    if preset not in DENOISER_STEMS:
        raise FoleyscopeError(
            f"preset {preset!r} has no official weights (--weights applies to {', '.join(DENOISER_STEMS)})"
        )
    found: dict[str, Path | None] = {
        "denoiser": _checkpoint_file(root, DENOISER_STEMS[preset]),
        "vae": _checkpoint_file(root, VAE_STEM),
        "synchformer": _checkpoint_file(root, SYNC_STEM),
        "siglip": _hf_folder(root, SIGLIP_DIRS),
        "clap": _hf_folder(root, CLAP_DIRS),
    }
    wanted = {
        "denoiser": f"denoiser ({DENOISER_STEMS[preset]}.safetensors or .pth)",
        "vae": f"audio VAE ({VAE_STEM}.safetensors or .pth)",
        "synchformer": f"Synchformer ({SYNC_STEM}.safetensors or .pth)",
        "siglip": "SigLIP2 folder with config.json (" + " | ".join(SIGLIP_DIRS[:3]) + ")",
        "clap": "CLAP folder with config.json (" + " | ".join(CLAP_DIRS[:3]) + ")",
    }
    missing = [wanted[k] for k, v in found.items() if v is None]
    if missing:
        raise FoleyscopeError(
            f"--weights {root} is incomplete for preset {preset}: missing " + "; ".join(missing)
        )
    return WeightPaths(**found)  # type: ignore[arg-type]


def _checkpoint_file(root: Path, stem: str) -> Path | None:
    for suffix in (".safetensors", ".pth"):
        candidate = root / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _hf_folder(root: Path, names: Iterable[str]) -> Path | None:
    for name in names:
        folder = root / name
        if name.startswith("models--"):
            folder = _hub_snapshot(folder)
        if folder is not None and (folder / "config.json").is_file():
            return folder
    return None


def _hub_snapshot(entry: Path) -> Path | None:
    """The snapshot folder a hub cache entry's refs/main points at, else its newest snapshot."""
    ref = entry / "refs" / "main"
    if ref.is_file():
        snap = entry / "snapshots" / ref.read_text().strip()
        if snap.is_dir():
            return snap
    snaps = sorted((entry / "snapshots").glob("*/config.json"), key=lambda p: p.stat().st_mtime)
    return snaps[-1].parent if snaps else None


# ------------------------------------------------------------------------------ completeness checks


def check_weight_files(directory: str | os.PathLike[str], preset: str) -> WeightPaths:
    """locate_weights, then a header-only completeness check of every checkpoint (milliseconds, no torch),
    so a truncated download is named before minutes of model loading start."""
    paths = locate_weights(directory, preset)
    for path in (paths.denoiser, paths.vae, paths.synchformer, paths.siglip / "model.safetensors",
                 paths.clap / "model.safetensors"):
        if path.is_file():
            check_checkpoint_file(path)
    return paths


def check_checkpoint_file(path: Path) -> None:
    """Raise if `path` is visibly cut short: a zip-format .pth whose central directory (written last) is
    missing, or a safetensors file shorter than its header says. Legacy pickled .pth files are not checked."""
    size = path.stat().st_size
    if size == 0:
        raise FoleyscopeError(f"{path}: empty file (download it again)")
    with path.open("rb") as f:
        head = f.read(8)
        if path.suffix == ".safetensors":
            complete = _safetensors_complete(f, head, size)
        elif head[:4] == b"PK\x03\x04":
            complete = _zip_complete(path, size)
        else:
            complete = True
    if not complete:
        raise FoleyscopeError(f"{path}: truncated or corrupt checkpoint ({size:,} bytes); download it again")


def _safetensors_complete(f, head: bytes, size: int) -> bool:
    if len(head) < 8:
        return False
    n = int.from_bytes(head, "little")
    if n > size - 8:
        return False
    try:
        header = json.loads(f.read(n))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (ValueError, KeyError, TypeError, IndexError):
        return False
    return 8 + n + max(ends, default=0) <= size


def _zip_complete(path: Path, size: int) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return all(info.header_offset + info.compress_size <= size for info in z.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return False
