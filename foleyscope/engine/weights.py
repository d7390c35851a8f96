"""Checkpoint loading for every component: read a .pth or .safetensors file memory-mapped, build the
module without allocating random weights, adopt the file's tensors, and only then move/cast them to the
target device and dtype, so no second full copy of the weights ever sits in RAM.

Rules (the same for every component):
- Parameters are created on the meta device while the module is built (`build()` runs under
  `parameters_on_meta()`); buffers are created for real by the module's own constructor. So a
  non-persistent buffer (a value the module derives itself: RoPE tables, position ids) always holds
  exactly what the constructor computed; no hook is needed.
- Every parameter and persistent buffer must come from the file; a missing one is an error, except
  buffers the caller lists in `derived_buffers` (their constructor value stands, listed as `defaulted`).
- A file key naming a non-persistent buffer, or starting with one of `ignored_prefixes`, is dropped and
  listed as ignored; any other key the module does not have is an error. Shape mismatches are errors.
- Parameters and floating-point buffers read from the file are cast to `dtype`; buffers the module
  computed itself only move to `device` and keep the dtype their module chose.
Memory: with the file's dtype on CPU the parameters ARE the mapped file (zero copy; replace the file
atomically, never edit it in place, while it is in use). Otherwise each tensor is cast/copied on its
own, so peak RSS is the mapped file (page cache, reclaimable) plus the result, never two full copies.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from foleyscope.engine.weight_paths import (  # noqa: F401  (re-exported: one import for every loader)
    CLAP_DIRS,
    DENOISER_STEMS,
    SIGLIP_DIRS,
    SYNC_STEM,
    VAE_STEM,
    WeightPaths,
    locate_weights,
)
from foleyscope.errors import FoleyscopeError
from foleyscope.media.atomic import atomic_output

Progress = Callable[[int, int], None]  # (done, total)

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
METADATA_KEY = "foleyscope.metadata"  # safetensors header key holding the original metadata as JSON
SOURCE_KEY = "foleyscope.source"


# --------------------------------------------------------------------------------------------- reading


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict | None]:
    """Return (state_dict, metadata). Tensors are memory-mapped from the file, not read into RAM.

    `.pth`-style files load with `weights_only=True`; a `{"state_dict": ..., "metadata": ...}` wrapper
    (the official VAE) is unwrapped and its metadata returned. For `.safetensors` the metadata is the
    JSON that `convert_to_safetensors` stored, or None."""
    path = Path(path)
    if not path.is_file():
        raise FoleyscopeError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    if path.suffix not in TORCH_SUFFIXES:
        raise FoleyscopeError(f"{path}: unknown checkpoint type (expected .safetensors or .pth)")
    obj = _torch_load(path)
    metadata = None
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        metadata = {k: v for k, v in obj.items() if k != "state_dict"} or None
        if metadata is not None and set(metadata) == {"metadata"} and isinstance(metadata["metadata"], dict):
            metadata = metadata["metadata"]
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise FoleyscopeError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    bad = [k for k, v in obj.items() if not isinstance(v, Tensor)]
    if bad:
        raise FoleyscopeError(f"{path}: state dict has non-tensor entries: {_few(bad)}")
    return dict(obj), metadata


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """The state dict alone (see read_checkpoint)."""
    return read_checkpoint(path)[0]


def _torch_load(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc):  # only the legacy (pre-zip) format cannot be mapped
            raise _unreadable(path, exc) from exc
    except Exception as exc:  # pickle refusing a global, truncated zip, not a torch file...
        raise _unreadable(path, exc) from exc
    try:  # legacy format: this path costs one full copy in RAM
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise _unreadable(path, exc) from exc


def _unreadable(path: Path, exc: Exception) -> FoleyscopeError:
    """Turn torch.load's multi-paragraph errors into one line that says what is wrong with the file."""
    text = str(exc)
    unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if unsafe:
        why = (f"it holds a pickled {unsafe.group(1)}, and only tensors and plain data are loaded "
               "(weights_only)")
    elif "Unsupported operand" in text or "invalid load key" in text:
        why = "not a torch checkpoint, or damaged"
    elif "central directory" in text or "zip archive" in text or _cut_short(exc):
        why = "damaged or truncated (download it again)"
    else:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        why = (lines[0] if lines else type(exc).__name__)[:200]
    return FoleyscopeError(f"{path}: cannot read this checkpoint: {why}")


def _cut_short(exc: Exception) -> bool:
    """EOF, or EINVAL: torch's zip reader seeks past the end of a file cut inside its tensor data."""
    return isinstance(exc, EOFError) or (isinstance(exc, OSError) and exc.errno == errno.EINVAL)


def _read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict | None]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        header = read_safetensors_header(path)
        state = load_file(path)  # memory-mapped: pages are read only when a tensor is touched
    except (SafetensorError, OSError, ValueError) as exc:
        raise FoleyscopeError(f"{path}: not a readable safetensors file ({exc})") from exc
    meta = header.get("__metadata__") or {}
    metadata = None
    if METADATA_KEY in meta:
        try:
            metadata = json.loads(meta[METADATA_KEY])
        except json.JSONDecodeError as exc:
            raise FoleyscopeError(f"{path}: corrupt {METADATA_KEY} metadata ({exc})") from exc
    return state, metadata


def read_safetensors_header(path: str | os.PathLike[str]) -> dict:
    """The JSON header of a safetensors file (tensor entries and `__metadata__`), without the data."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError("file too short")
        (n,) = struct.unpack("<Q", raw)
        if n > 100_000_000:
            raise ValueError("header length is implausible")
        return json.loads(f.read(n))


# --------------------------------------------------------------------------------------------- loading


@dataclass
class LoadReport:
    """What happened to each key when a checkpoint was loaded into a component."""

    component: str
    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    defaulted: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def raise_if_bad(self) -> None:
        problems = []
        if self.missing:
            problems.append(f"{len(self.missing)} missing key(s): {_few(self.missing)}")
        if self.unexpected:
            problems.append(f"{len(self.unexpected)} unexpected key(s): {_few(self.unexpected)}")
        if self.mismatched:
            problems.append(f"{len(self.mismatched)} shape mismatch(es): {_few(self.mismatched)}")
        if problems:
            name = self.component or "model"
            raise FoleyscopeError(f"{name} checkpoint does not fit the model: " + "; ".join(problems))

    def summary(self) -> str:
        text = f"{self.component or 'model'}: {self.loaded} tensors loaded"
        if self.ignored:
            groups = sorted({k.split(".")[0] + (".*" if "." in k else "") for k in self.ignored})
            text += f", {len(self.ignored)} ignored ({_few(groups, 4)})"
        if self.defaulted:
            text += f", {len(self.defaulted)} derived buffer(s) computed"
        return text


def _few(names: list[str], n: int = 5) -> str:
    shown = ", ".join(names[:n])
    return shown + (f" (+{len(names) - n} more)" if len(names) > n else "")


_META_LOCK = threading.Lock()
_META_STATE = {"installs": 0, "original": nn.Module.register_parameter}
_META_LOCAL = threading.local()


def _register_parameter(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
    if param is not None and getattr(_META_LOCAL, "depth", 0) > 0 and param.device.type != "meta":
        extra = dict(param.__dict__)
        param = type(param)(param.to("meta"), requires_grad=param.requires_grad)
        param.__dict__.update(extra)
    _META_STATE["original"](module, name, param)


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """While active in this thread, every parameter registered on any module goes to the meta device
    (no memory, no random init); buffers stay real. Works by wrapping nn.Module.register_parameter
    while any thread is inside; other threads see the original behaviour."""
    with _META_LOCK:
        if _META_STATE["installs"] == 0:
            _META_STATE["original"] = nn.Module.register_parameter
            nn.Module.register_parameter = _register_parameter  # type: ignore[method-assign]
        _META_STATE["installs"] += 1
    _META_LOCAL.depth = getattr(_META_LOCAL, "depth", 0) + 1
    try:
        yield
    finally:
        _META_LOCAL.depth -= 1
        with _META_LOCK:
            _META_STATE["installs"] -= 1
            if _META_STATE["installs"] == 0:
                nn.Module.register_parameter = _META_STATE["original"]  # type: ignore[method-assign]


def load_module(
    build: Callable[[], nn.Module],
    state_dict: Mapping[str, Tensor],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    ignored_prefixes: Iterable[str] = (),
    derived_buffers: Iterable[str] = (),
    component: str = "",
    progress: Progress | None = None,
) -> tuple[nn.Module, LoadReport]:
    """Build a module and fill it from `state_dict` without a second copy of the weights (module doc
    lists the rules). Raises FoleyscopeError naming bad keys. `dtype=None` keeps the file's dtypes.
    `progress(done_bytes, total_bytes)` follows the move to the device (the slow part on a GPU)."""
    with parameters_on_meta():
        module = build()
    ignored_prefixes = tuple(ignored_prefixes)
    derived = set(derived_buffers)
    expected = module.state_dict(keep_vars=True)
    all_buffers = {n for n, _ in module.named_buffers()}
    non_persistent = all_buffers - set(expected)

    report = LoadReport(component=component)
    chosen: dict[str, Tensor] = {}
    wrong_shape: set[str] = set()
    for key, value in state_dict.items():
        if key.startswith(ignored_prefixes) or key in non_persistent:
            report.ignored.append(key)
        elif key not in expected:
            report.unexpected.append(key)
        elif tuple(value.shape) != tuple(expected[key].shape):
            wrong_shape.add(key)
            report.mismatched.append(f"{key} {list(value.shape)} vs model {list(expected[key].shape)}")
        else:
            chosen[key] = value
    for key in expected:
        if key not in chosen and key not in wrong_shape:
            if key in derived and key in all_buffers:
                report.defaulted.append(key)
            else:
                report.missing.append(key)
    report.raise_if_bad()

    from_file = set(chosen)
    module.load_state_dict(chosen, strict=False, assign=True)
    report.loaded = len(chosen)
    _place(module, device, dtype, from_file, progress)
    module.eval()
    return module, report


def _place(
    module: nn.Module,
    device: torch.device | str,
    dtype: torch.dtype | None,
    from_file: set[str],
    progress: Progress | None = None,
) -> None:
    """Move every tensor to `device`, one at a time; cast file tensors that are floating to `dtype`."""
    done: dict[int, tuple[Tensor, Tensor]] = {}  # id(old) -> (old, new): keeps tied tensors tied
    tensors = {id(t): t for t in [*module.parameters(), *module.buffers()]}
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    moved = 0
    for prefix, sub in module.named_modules():
        for store, is_param in ((sub._parameters, True), (sub._buffers, False)):
            for name, t in list(store.items()):
                if t is None:
                    continue
                full = f"{prefix}.{name}" if prefix else name
                if t.device.type == "meta":
                    raise FoleyscopeError(f"internal: {full} was never loaded")
                if id(t) in done:
                    store[name] = done[id(t)][1]
                    continue
                cast = dtype if (dtype is not None and t.is_floating_point() and full in from_file) else None
                new = t.to(device=device, dtype=cast or t.dtype)
                if is_param:
                    new = nn.Parameter(new, requires_grad=False)
                store[name] = new
                done[id(t)] = (t, new)  # holding `t` keeps its id from being reused meanwhile
                moved += t.numel() * t.element_size()
                if progress is not None:
                    progress(moved, total)


# -------------------------------------------------------------------------------------------- writing


_ST_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
}


def write_safetensors(
    tensors: Mapping[str, Tensor],
    path: str | os.PathLike[str],
    metadata: Mapping[str, str] | None = None,
    progress: Progress | None = None,
) -> None:
    """Stream tensors into a safetensors file one at a time (safetensors' own writer builds the whole
    file in memory first, which for a 10 GB checkpoint is 10 GB of RAM). Atomic. Progress is in bytes."""
    names = sorted(tensors)
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name in names:
        t = tensors[name]
        if t.dtype not in _ST_DTYPES:
            raise FoleyscopeError(f"{name}: dtype {t.dtype} cannot be stored in safetensors")
        nbytes = t.numel() * t.element_size()
        header[name] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    total = offset
    done = 0
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name in names:
            t = tensors[name].detach().to("cpu").contiguous()
            if t.numel():
                f.write(t.reshape(-1).view(torch.uint8).numpy().data)
            done += t.numel() * t.element_size()
            if progress is not None:
                progress(done, total)
        f.flush()
        os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # the temp file was created private; weights are ordinary readable files


def convert_to_safetensors(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], progress: Progress | None = None
) -> None:
    """Write `src` (.pth) as safetensors at `dst`, keeping dtypes; a wrapper's metadata (the VAE's
    constructor kwargs) goes into the header as JSON under `foleyscope.metadata`. Atomic."""
    src, dst = Path(src), Path(dst)
    state, metadata = read_checkpoint(src)
    if not state:
        raise FoleyscopeError(f"{src}: the state dict is empty")
    header = {"format": "pt", SOURCE_KEY: src.name}
    if metadata is not None:
        try:
            header[METADATA_KEY] = json.dumps(metadata)
        except TypeError as exc:
            raise FoleyscopeError(f"{src}: its metadata cannot be stored as JSON ({exc})") from exc
    write_safetensors(state, dst, header, progress)


# ------------------------------------------------------------------------- Hugging Face folders


HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def read_hf_weights(folder: str | os.PathLike[str]) -> dict[str, Tensor]:
    """All tensors of a Hugging Face model folder (single or sharded safetensors, or pytorch_model.bin),
    memory-mapped."""
    folder = Path(folder)
    for name in HF_WEIGHT_FILES:
        path = folder / name
        if not path.is_file():
            continue
        if name.endswith(".index.json"):
            try:
                shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
            except (ValueError, KeyError) as exc:
                raise FoleyscopeError(f"{path}: not a valid shard index ({exc})") from exc
            state: dict[str, Tensor] = {}
            for shard in shards:
                state.update(read_state_dict(folder / shard))
            return state
        return read_state_dict(path)
    raise FoleyscopeError(f"{folder}: no weights file (looked for {', '.join(HF_WEIGHT_FILES)})")
