"""From an uploaded form to a queued job: the settings checked (the CLI's limits), the video probed in a
thread (the event loop keeps answering), its length checked, the file moved under the job's random id,
and the record written. Idempotency-Key: the same key with the same body gives back the same job."""

from __future__ import annotations

import asyncio
import math
import secrets
import shutil
from pathlib import Path
from typing import Any

from foleyscope.commands.generate import MAX_SEED, MAX_STEPS
from foleyscope.engine.jobs import DEFAULT_NEGATIVE_PROMPT
from foleyscope.errors import FoleyscopeError, MediaError
from foleyscope.server.config import JobDefaults
from foleyscope.server.errors import ApiError
from foleyscope.server.store import DuplicateKey, JobStore
from foleyscope.server.upload import Upload

MUX_SUFFIXES = (".mp4", ".mkv", ".webm")  # the first whose container holds the input's video codec
MAX_CFG = 100.0
MAX_JS_INT = 2**53  # a chosen seed stays exact in JavaScript's numbers (the page shows it)
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def new_id() -> str:
    """128 random bits: ids cannot be guessed, and being hex they are safe as folder names."""
    return secrets.token_hex(16)


def parse_settings(fields: dict[str, str], defaults: JobDefaults) -> dict[str, Any]:
    if "prompt" not in fields:
        raise ApiError(422, "missing_prompt", "the form needs a `prompt` field (it may be empty: video-only sound)")
    steps = _number(fields, "steps", int, defaults.steps)
    if not 1 <= steps <= MAX_STEPS:
        raise ApiError(422, "invalid", f"steps must be 1 to {MAX_STEPS}, got {steps}")
    cfg = _number(fields, "cfg", float, defaults.cfg)
    if not math.isfinite(cfg) or not 1.0 <= cfg <= MAX_CFG:
        raise ApiError(422, "invalid", f"cfg must be 1.0 to {MAX_CFG:g} (1.0 turns guidance off), got {cfg}")
    seed = _number(fields, "seed", int, None)
    if seed is None:
        seed = secrets.randbelow(MAX_JS_INT)  # chosen now: a re-delivered job makes the same sound
    elif not 0 <= seed <= MAX_SEED:
        raise ApiError(422, "invalid", f"seed must be 0 to 2**63-1, got {seed}")
    solver = fields.get("solver") or defaults.solver
    if solver not in ("euler", "heun"):
        raise ApiError(422, "invalid", f"solver must be euler or heun, got {solver!r}")
    mux = (fields.get("mux") or "auto").strip().lower()
    if mux not in _TRUE | _FALSE | {"auto"}:
        raise ApiError(422, "invalid", f"mux must be true, false or auto, got {mux!r}")
    negative = fields.get("negative_prompt", defaults.negative_prompt)
    negative = DEFAULT_NEGATIVE_PROMPT if negative is None else negative
    return {"prompt": fields["prompt"], "negative_prompt": negative, "steps": steps, "cfg": cfg, "seed": seed,
            "solver": solver, "mux": "auto" if mux == "auto" else mux in _TRUE}


def _number(fields: dict[str, str], name: str, kind: type, default: Any) -> Any:
    text = fields.get(name, "").strip()
    if not text:
        return default
    try:
        return kind(text)
    except ValueError:
        raise ApiError(422, "invalid", f"{name} must be {'an integer' if kind is int else 'a number'}, "
                                       f"got {text[:40]!r}") from None


def label(upload: Upload) -> str:
    """The client's file name, printable, for messages only (never a path)."""
    name = "".join(c for c in Path(upload.filename.replace("\\", "/")).name if c.isprintable())[:80]
    return repr(name) if name else "the video"


async def probe_upload(upload: Upload, max_seconds: float) -> dict[str, Any]:
    from foleyscope.media.probe import probe

    assert upload.path is not None
    if upload.size == 0:
        raise ApiError(422, "bad_video", f"{label(upload)}: empty file")
    try:
        info = await asyncio.to_thread(probe, upload.path)
    except MediaError as exc:
        why = str(exc).replace(f"{upload.path}: ", "").replace(str(upload.path), "the file")
        raise ApiError(422, "bad_video", f"{label(upload)}: {why}") from None
    if info.duration_s > max_seconds:
        raise ApiError(422, "too_long", f"{label(upload)} is {info.duration_s:.1f} s long; this server takes "
                                        f"videos up to {max_seconds:g} s (prep or trim it first)")
    return {"name": upload.filename[-200:], "size": upload.size, "duration_s": round(info.duration_s, 3),
            "width": info.display_width, "height": info.display_height, "fps": round(info.fps, 3),
            "codec": info.video_codec}


async def mux_name(video: Path, wanted: bool | str) -> str | None:
    """The muxed video's file name: the first container that holds the input's codec."""
    from foleyscope.media.mux_target import check_mux_target

    if wanted is False:
        return None
    for suffix in MUX_SUFFIXES:
        try:
            await asyncio.to_thread(check_mux_target, video, video.with_name(f"video{suffix}"))
            return f"video{suffix}"
        except FoleyscopeError:
            continue
    if wanted is True:
        raise ApiError(422, "cannot_mux", "no container we write (mp4, mkv, webm) holds this video's codec; "
                                          "send mux=false for the audio alone")
    return None


def replay(store: JobStore, key: str, upload: Upload) -> dict[str, Any] | None:
    """The job this Idempotency-Key already made, if the body is the same; 409 if it is not."""
    job = store.by_idempotency_key(key)
    if job is None:
        return None
    if job["idem_hash"] != upload.sha256:
        raise ApiError(409, "idempotency_conflict",
                       "this Idempotency-Key was used with a different body; use a new key for a new job")
    return job


async def create_job(store: JobStore, data_dir: Path, upload: Upload, settings: dict[str, Any],
                     input_info: dict[str, Any], key: str | None) -> tuple[dict[str, Any], bool]:
    """Move the upload under a new job id and record it. Returns (job, created: False for a replay)."""
    assert upload.path is not None
    video = await mux_name(upload.path, settings.pop("mux"))
    job_id = new_id()
    folder = data_dir / "jobs" / job_id
    folder.mkdir(parents=True)
    upload.path.rename(folder / "input")
    base = f"jobs/{job_id}"
    spec = {"id": job_id, "input": f"{base}/input", "audio": f"{base}/audio.wav",
            "video": f"{base}/{video}" if video else None, **settings}
    try:
        return store.insert(job_id, spec, input_info, idem_key=key, idem_hash=upload.sha256 if key else None,
                            upload_s=round(upload.seconds, 4)), True
    except DuplicateKey:  # a concurrent request with the same key won the race
        shutil.rmtree(folder, ignore_errors=True)
        assert key is not None
        job = replay(store, key, upload)
        assert job is not None
        return job, False
