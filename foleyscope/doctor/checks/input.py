"""Step 4 of the diagnosis: is the input file heavier than the model needs?

The model looks at frames sampled at 8 fps (squashed to 512x512) and 25 fps (224x224) and works in
15 s windows. Pixels above 720p, frames above 25 fps, a costly codec or deep pixels are decoded and
thrown away: they cost decode time and buy nothing. So every cost rule here is priced in one unit,
decode work = width x height x fps x duration x codec factor x bit-depth factor, and one `foleyscope
prep` run removes all of it. That is why the decode-cost rules (and the correctness rules fixed by
the same prep run: variable frame rate, rotation) are reported as ONE finding,
`input_needs_normalising`, with each rule's reason in its evidence: separate findings would share
one fix and double count one saving. Length is a separate root cause (trimming changes what you get
back, and every stage scales with it), priced *after* normalisation so the two savings add up.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from foleyscope.doctor.decode_timing import sampled_decode
from foleyscope.doctor.finding import Finding, Severity
from foleyscope.doctor.registry import Found, check
from foleyscope.doctor.run import RunData
from foleyscope.stages import STAGES, Stage

if TYPE_CHECKING:
    from foleyscope.media.probe import MediaInfo

# Software decode cost per pixel relative to H.264 8-bit (FFmpeg decoders, typical camera footage).
# Rough on purpose: for the inputs that matter (4K, 60 fps) the pixel rate dominates the estimate.
CODEC_COST: dict[str, float] = {
    "h264": 1.0, "hevc": 1.5, "vp9": 1.3, "av1": 1.5, "mpeg4": 0.9, "mpeg2video": 0.8,
}
DEEP_PIXEL_COST = 1.25  # 10/12-bit samples: wider arithmetic and a costlier colour conversion
DEEP_TAGS = ("p10", "p12", "p14", "p16", "10le", "10be", "12le", "12be", "p010", "p016")
MP4_FAMILY = ("mp4", "mov", "m4v", "m4a", "3gp", "3g2", "mj2")


@dataclass(frozen=True)
class InputLimits:
    """What the model needs; anything above is decoded for nothing. Preset: ARTICLE (five-steps.md step 4)."""

    short_side: int = 720
    target_fps: float = 25.0
    max_fps: float = 30.5  # 24, 25 and 30 fps sources are fine; 50/60 fps are decoded twice over
    window_s: float = 15.0  # the model's window; longer clips are windowed
    long_s: float = 30.0  # above this the article calls the input discouraged
    max_bits_per_pixel: float = 0.3  # x264 crf 23 lands near 0.05-0.15 bits per pixel per frame
    max_bit_rate: float = 50e6
    codec: str = "h264"


ARTICLE = InputLimits()


@dataclass(frozen=True)
class _Audit:
    """What both step 4 checks read about one input: the rules it breaks and the decode they cost."""

    info: MediaInfo
    video_path: str
    stage_seconds: dict[str, float]
    limits: InputLimits
    reasons: list[dict[str, Any]]
    long_clip: bool
    decode_s: float
    decode_source: str
    flags: list[str]  # the prep flags that normalise it
    ratio: float  # decode work after prep / before
    after: tuple[int, int, float]  # width, height, fps after prep


def _audit(info: MediaInfo, video_path: str, stage_seconds: dict[str, float], limits: InputLimits,
           sample_seconds: float) -> _Audit | None:
    """None when the input is fine; `stage_seconds` may be empty: decode is then measured on a sample."""
    reasons = _reasons(info, video_path, limits)
    long_clip = info.duration_s is not None and info.duration_s > limits.window_s
    if not reasons and not long_clip:
        return None
    decode_s, decode_source = _decode_seconds(info, video_path, stage_seconds, sample_seconds)
    before = decode_work(info.width, info.height, _fps(info), info.video_codec, info.pix_fmt)
    # prep always writes H.264 8-bit at the target rate, short side at most 720 (see media/prep.py)
    after_w, after_h = target_size(info, limits)
    after = decode_work(after_w, after_h, limits.target_fps, limits.codec, "yuv420p") if reasons else before
    ratio = min(1.0, after / before) if before > 0 else 1.0
    return _Audit(info, video_path, stage_seconds, limits, reasons, long_clip, decode_s, decode_source,
                  _prep_flags(info, reasons, limits), ratio, (after_w, after_h, limits.target_fps))


def _run_audit(run: RunData) -> _Audit | None:
    """The audit of the diagnosed run's input (`context.input_info`), priced with its stage table."""
    info = getattr(run.context, "input_info", None)
    if info is None:
        return None
    seconds = {name: row["seconds"] for name, row in run.tables.stages.items()}
    return _audit(info, run.context.video_path or "", seconds, ARTICLE, 1.0)


@check("input_needs_normalising", step=4,
       doc="input above 720p / 30 fps, not H.264 8-bit MP4, very high bit rate, variable frame rate or rotated: "
           "one `foleyscope prep` run fixes all of them (reasons listed in the evidence)")
def input_needs_normalising(run: RunData) -> Found | None:
    audit = _run_audit(run)
    return _normalising(audit) if audit is not None else None


@check("input_long_clip", step=4,
       doc="input longer than the model's 15 s window: every stage scales with length; "
           "`foleyscope prep --max-seconds 15` if the rest is not needed")
def input_long_clip(run: RunData) -> Found | None:
    audit = _run_audit(run)
    return _long_clip(audit) if audit is not None else None


def check_input(info: MediaInfo, video_path: str, stage_seconds: dict[str, float], *,
                limits: InputLimits = ARTICLE, sample_seconds: float = 1.0) -> list[Finding]:
    """Both step 4 checks on one file outside a diagnosis. `stage_seconds` holds measured stage times
    keyed by Stage names (may be empty: then decode is measured here on a short sample)."""
    audit = _audit(info, video_path, stage_seconds, limits, sample_seconds)
    if audit is None:
        return []
    return input_needs_normalising.findings(_normalising(audit)) + input_long_clip.findings(_long_clip(audit))


def _normalising(a: _Audit) -> Found | None:
    if not a.reasons:
        return None
    after_w, after_h, after_fps = a.after
    # prep trims to the window by default: the normalising command keeps the whole clip
    keep_all = a.flags + (["--max-seconds", f"{math.ceil(a.info.duration_s)}"] if a.long_clip else [])
    return Found(
        severity=_normalising_severity(a.reasons, a.ratio),
        title="Input is heavier than the model needs: " + ", ".join(r["value"] for r in a.reasons),
        evidence={
            "reasons": a.reasons, "probed": _probed(a.info), "decode_s": round(a.decode_s, 4),
            "decode_source": a.decode_source, "decode_work_ratio_after_prep": round(a.ratio, 4),
            "estimate": (
                "saving = decode_s x (1 - work_after / work_before); decode work = width x height x fps "
                f"x codec factor ({_factors_text()}) x {DEEP_PIXEL_COST} for >8-bit; after prep: "
                f"{after_w}x{after_h} {after_fps:g} fps {a.limits.codec} 8-bit. Model stages do not "
                "depend on input resolution or frame rate (frames are resampled to fixed sizes and "
                "rates)"),
            "prep_cost": ("prep itself decodes the file once and encodes it at 720p: it pays back when the "
                          "same clip is generated more than once (prompts, seeds, retries) or is uploaded; "
                          "--try-fixes reports its time"),
        },
        fix=prep_command(a.video_path, _prep_output(a.video_path, "normalised"), keep_all),
        est_saving_s=round(a.decode_s * (1 - a.ratio), 4),
        fix_prep=prep_kwargs(keep_all),
    )


def decode_work(width: int, height: int, fps: float, codec: str | None, pix_fmt: str | None) -> float:
    """Decoded pixels per second of video, weighted by codec and bit depth (duration cancels out)."""
    cost = CODEC_COST.get((codec or "").lower(), 1.0)
    if is_deep(pix_fmt):
        cost *= DEEP_PIXEL_COST
    return float(width) * float(height) * float(fps) * cost


def is_deep(pix_fmt: str | None) -> bool:
    """True for more than 8 bits per sample (yuv420p10le, p010le, yuv444p12le, ...)."""
    p = (pix_fmt or "").lower()
    return any(tag in p for tag in DEEP_TAGS)


_PREP_OPTIONS = {"--height": ("height", int), "--fps": ("fps", float), "--max-seconds": ("max_seconds", float)}


def prep_kwargs(flags: list[str]) -> dict[str, Any]:
    """The same prep as `flags`, as media.prep.prep keyword arguments (what --try-fixes calls)."""
    out = {}
    for flag, value in zip(flags[::2], flags[1::2], strict=True):
        name, cast = _PREP_OPTIONS[flag]
        out[name] = cast(value)
    return out


def prep_command(video_path: str, out_path: str, flags: list[str]) -> str:
    """The exact shell command, paths quoted."""
    return shlex.join(["foleyscope", "prep", str(video_path), "-o", str(out_path), *flags])


# --- rules -------------------------------------------------------------------------------------------

def _reasons(info: MediaInfo, video_path: str, limits: InputLimits) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(rule: str, value: str, recommended: str, flag: str | None, why: str) -> None:
        out.append({"rule": rule, "value": value, "recommended": recommended, "flag": flag, "why": why})

    dw, dh = _display(info)
    if min(dw, dh) > limits.short_side:
        add("resolution", f"{dw}x{dh}", f"short side <= {limits.short_side} (720p)", "--height",
            "the model sees 512x512 and 224x224 frames; every pixel above 720p is decoded for nothing")
    fps = _fps(info)
    if fps > limits.max_fps:
        add("frame_rate", f"{fps:.3g} fps", f"<= {limits.target_fps:g} fps", "--fps",
            "the model samples 8 and 25 fps; higher rates are decoded and dropped")
    if info.fps_is_variable:
        add("variable_frame_rate", "variable frame rate", "constant frame rate", "--fps",
            "frames are picked by time; a variable rate repeats and skips frames, and can drift from "
            "the audio")
    codec = (info.video_codec or "unknown").lower()
    if codec != limits.codec:
        factor = CODEC_COST.get(codec)
        cost = f"about {factor:g}x the decode cost of H.264" if factor else "decode cost unknown"
        add("codec", codec.upper(), "H.264", None, f"{cost}; prep re-encodes to H.264")
    if is_deep(info.pix_fmt):
        add("bit_depth", f"{info.pix_fmt}", "8-bit yuv420p", None,
            f"deep samples cost about {DEEP_PIXEL_COST}x to decode and convert; the model uses 8-bit RGB")
    if not _is_mp4(info.container, video_path):
        add("container", _container_name(info.container, video_path), "MP4", None,
            "MP4 seeks and timestamps most reliably; prep writes MP4")
    if info.rotation:
        add("rotation", f"rotated {info.rotation} degrees", "no rotation metadata", None,
            "the decoder returns stored (unrotated) frames; prep writes them upright")
    if info.bit_rate and info.width and info.height and fps > 0:
        bpp = info.bit_rate / (info.width * info.height * fps)
        if bpp > limits.max_bits_per_pixel or info.bit_rate > limits.max_bit_rate:
            add("bit_rate", f"{info.bit_rate / 1e6:.1f} Mb/s ({bpp:.2f} bits/pixel)",
                f"<= {limits.max_bits_per_pixel} bits/pixel", None,
                "entropy decoding scales with bits; a mezzanine-rate file decodes slowly "
                "(not in the estimate)")
    return out


def _prep_flags(info: MediaInfo, reasons: list[dict[str, Any]], limits: InputLimits) -> list[str]:
    """Only the flags that change what prep would do by default (height 720, 25 fps); --height also
    for portrait clips taller than 720, which the default would shrink below a 720 short side."""
    needed = {r["flag"] for r in reasons if r["flag"]}
    flags: list[str] = []
    if "--height" in needed or _display(info)[1] > limits.short_side:
        flags += ["--height", str(target_size(info, limits)[1])]
    if "--fps" in needed:
        flags += ["--fps", f"{limits.target_fps:g}"]
    return flags


def _long_clip(a: _Audit) -> Found | None:
    if not a.long_clip:
        return None
    d, limits = float(a.info.duration_s), a.limits
    keep = limits.window_s / d
    # only the pipeline's own stages (a stage table may also hold nested, user or "other" rows)
    others = {k: v for k, v in a.stage_seconds.items() if k in STAGES and k not in (Stage.LOAD, Stage.DECODE)}
    base = sum(others.values()) + a.decode_s * a.ratio
    saving = base * (1 - keep)
    if others:
        how = ("all stages but load scale with length: saving = (other stages + decode after normalising) "
               f"x (1 - {limits.window_s:g} / {d:.3g})")
    else:
        how = ("only decode was measured (the model stages were not run): saving = decode after normalising "
               f"x (1 - {limits.window_s:g} / {d:.3g}); a lower bound, the model stages scale the same way")
    all_flags = [*a.flags, "--max-seconds", f"{limits.window_s:g}"]
    return Found(
        severity="warning" if d > limits.long_s else "info",
        title=f"Input is {d:.1f} s, longer than the model's {limits.window_s:g} s window",
        evidence={
            "duration_s": round(d, 3), "window_s": limits.window_s, "probed": _probed(a.info),
            "scaling_stages_s": {str(k): round(v, 4) for k, v in others.items()},
            "decode_s": round(a.decode_s, 4), "decode_source": a.decode_source,
            "estimate": how + " (counted after the normalising saving, so the two add up)",
            "note": "trimming drops the rest of the clip; keep it if you need sound for all of it "
                    "(the engine windows long clips)",
        },
        fix=prep_command(a.video_path, _prep_output(a.video_path, f"first{a.limits.window_s:g}s"), all_flags),
        est_saving_s=round(saving, 4),
        fix_prep=prep_kwargs(all_flags),
    )


def _decode_seconds(info: MediaInfo, video_path: str, stage_seconds: dict[str, float],
                    sample_seconds: float) -> tuple[float, str]:
    if Stage.DECODE in stage_seconds:
        return float(stage_seconds[Stage.DECODE]), "measured: the pipeline's decode stage"
    total = info.frame_count or round((info.duration_s or 0) * _fps(info)) or 1
    s = sampled_decode(video_path, int(total), sample_seconds)
    return s.est_full_s, (f"sample decode: {s.frames} frames ({s.media_s:.2f} s of video) in "
                          f"{s.wall_s:.3f} s, extrapolated to {int(total)} frames")


def _normalising_severity(reasons: list[dict[str, Any]], ratio: float) -> Severity:
    if ratio <= 0.25:
        return "critical"
    if any(r["rule"] != "container" for r in reasons):
        return "warning"
    return "info"


def _fps(info: MediaInfo) -> float:
    return float(info.fps or 0.0)


def _display(info: MediaInfo) -> tuple[int, int]:
    w = info.display_width or info.width
    h = info.display_height or info.height
    return int(w), int(h)


def target_size(info: MediaInfo, limits: InputLimits = ARTICLE) -> tuple[int, int]:
    """Upright size after `prep --height`: the short display side down to limits.short_side (never up),
    even dimensions."""
    dw, dh = _display(info)
    scale = limits.short_side / min(dw, dh)
    if scale >= 1.0:
        return dw, dh
    return _even(dw * scale), _even(dh * scale)


def _even(x: float) -> int:
    return max(2, int(round(x / 2)) * 2)


def _is_mp4(container: str | None, video_path: str) -> bool:
    if container:
        names = [n.strip().lower() for n in container.split(",")]
        return any(n in MP4_FAMILY for n in names)
    return Path(video_path).suffix.lower().lstrip(".") in MP4_FAMILY


def _container_name(container: str | None, video_path: str) -> str:
    c = (container or "").lower()
    if "matroska" in c or "webm" in c:
        return "WebM" if Path(video_path).suffix.lower() == ".webm" else "MKV"
    if c == "avi":
        return "AVI"
    return (container or Path(video_path).suffix.lstrip(".") or "unknown").upper()


def _prep_output(video_path: str, what: str) -> str:
    """The fix's own output, in the current folder (the input's may be read-only or far away), named
    for what it holds so two fixes never write the same file, and never the input itself."""
    name = f"{Path(video_path).stem}_{what}.mp4"
    if Path(name).resolve() == Path(video_path).resolve():
        name = f"{Path(video_path).stem}_{what}_prep.mp4"
    return name


def _probed(info: MediaInfo) -> dict[str, Any]:
    keys = ("container", "video_codec", "width", "height", "display_width", "display_height", "fps",
            "fps_is_variable", "duration_s", "bit_rate", "pix_fmt", "rotation", "size_bytes")
    return {k: getattr(info, k, None) for k in keys}


def _factors_text() -> str:
    return ", ".join(f"{k} {v:g}" for k, v in CODEC_COST.items())
