"""Step 4 of the diagnosis: is the input file heavier than the model needs?

The model looks at frames sampled at 8 fps (squashed to 512x512) and 25 fps (224x224) and works in
15 s windows. Pixels above 720p, frames above 25 fps, a costly codec, deep pixels or a mezzanine bit
rate are decoded and thrown away. One `foleyscope prep` run removes all of them, so those rules (and
the correctness rules fixed by the same run: variable frame rate, rotation) are ONE finding,
`input_needs_normalising`, with each rule's reason in its evidence: separate findings would share one
fix and double count one saving. Length is a separate root cause (trimming changes what you get back,
and the model stages scale with it), priced *after* normalisation so the two savings add up.

Nothing here is a guessed cost factor: the saving is measured in this run. prep runs on a sample of
the file, the sample and its prep'd copy are decoded the way the engine decodes (decode_timing.py),
and their ratio prices the decode the run actually did. A rule whose fix measures no faster (a high
bit rate that prep keeps, say, on the file prep itself wrote) is dropped instead of reported.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from foleyscope.doctor import decode_timing as dt
from foleyscope.doctor.checks.decode import decode_budget
from foleyscope.doctor.finding import Finding, Severity
from foleyscope.doctor.registry import Found, check
from foleyscope.doctor.run import RunData
from foleyscope.stages import Stage

if TYPE_CHECKING:
    from foleyscope.media.probe import MediaInfo

DEEP_TAGS = ("p10", "p12", "p14", "p16", "10le", "10be", "12le", "12be", "p010", "p016")
MP4_FAMILY = ("mp4", "mov", "m4v", "m4a", "3gp", "3g2", "mj2")
BIT_RATE_MIN_GAIN = 0.8  # the bit-rate rule stands only if prep's copy decodes in <= 80% of the time
CRITICAL_RATIO = 0.25  # prep's copy decodes in a quarter of the time or less
PER_SECOND = (Stage.VISUAL_ENCODE, Stage.POSTPROCESS)  # work per second of video (8 fps frames, the mux)
PER_WINDOW = (Stage.SYNC_ENCODE, Stage.DENOISE, Stage.VAE_DECODE)  # the engine's work per 15 s window


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
    """What both step 4 checks read about one input: the rules it breaks, what prep would do about them
    and the measured decode before and after."""

    info: MediaInfo
    video_path: str
    stage_seconds: dict[str, float]
    limits: InputLimits
    reasons: list[dict[str, Any]]
    long_clip: bool
    decode_s: float  # the decode this file needs in this run (the stage less any wasted work)
    decode_source: str
    reference: dt.DecodeTiming
    prepped: dt.PreppedDecode
    ratio: float  # measured decode time per second of video, prep'd copy / input
    flags: list[str]  # the one prep command's flags, for every input finding at once
    out: str  # its output file
    windowed: bool  # the model stages run per 15 s window (the engine), not per second

    @property
    def keep(self) -> float:
        return min(1.0, self.limits.window_s / float(self.info.duration_s))


def _audit(info: MediaInfo, video_path: str, stage_seconds: dict[str, float], limits: InputLimits,
           sample_s: float, windowed: bool, out_dir: str | None, decode_cpu_s: float | None = None) -> _Audit | None:
    """None when the input is fine; `stage_seconds` may be empty: decode is then measured on a sample."""
    reasons = _reasons(info, video_path, limits)
    long_clip = bool(info.duration_s) and info.duration_s > limits.window_s
    if not video_path or not info.duration_s or (not reasons and not long_clip):
        return None  # nothing to fix, or nothing to measure it on
    d = float(info.duration_s)
    decode_s, source, ref = _decode_seconds(video_path, d, stage_seconds.get(Stage.DECODE), decode_cpu_s, sample_s)
    flags = _prep_flags(info, reasons, limits) + (["--max-seconds", f"{limits.window_s:g}"] if long_clip else [])
    prepped = dt.prepped_decode(video_path, ref.media_s, prep_kwargs(flags))
    ratio = _rate(prepped.timing) / _rate(ref) if _rate(ref) > 0 else 1.0
    reasons = [r for r in reasons if r["rule"] != "bit_rate" or ratio <= BIT_RATE_MIN_GAIN]
    if not reasons and not long_clip:
        return None
    what = ("prepped" if reasons and long_clip else "normalised" if reasons else f"first{limits.window_s:g}s")
    return _Audit(info, video_path, stage_seconds, limits, reasons, long_clip, decode_s, source, ref, prepped,
                  ratio, flags, _prep_output(video_path, what, out_dir), windowed)


def _run_audit(run: RunData) -> _Audit | None:
    """The audit of the diagnosed run's input (`context.input_info`), priced with its stage table."""
    info = getattr(run.context, "input_info", None)
    if info is None:
        return None
    seconds = {name: row["seconds"] for name, row in run.tables.stages.items()}
    decode = run.stages.get(Stage.DECODE)
    return _audit(info, run.context.video_path or "", seconds, ARTICLE, dt.FALLBACK_SAMPLE_S,
                  windowed=bool(run.mode()), out_dir=getattr(run.context, "out_dir", None),
                  decode_cpu_s=decode.cpu_s if decode is not None else None)


@check("input_needs_normalising", step=4,
       doc="input above 720p / 30 fps, not H.264 8-bit MP4, very high bit rate, variable frame rate or rotated: "
           "one `foleyscope prep` run fixes all of them (reasons listed in the evidence)")
def input_needs_normalising(run: RunData) -> Found | None:
    audit = _run_audit(run)
    return _normalising(audit) if audit is not None else None


@check("input_long_clip", step=4,
       doc="input longer than the model's 15 s window: decode and the model stages scale with length; "
           "`foleyscope prep --max-seconds 15` if the rest is not needed")
def input_long_clip(run: RunData) -> Found | None:
    audit = _run_audit(run)
    return _long_clip(audit) if audit is not None else None


def check_input(info: MediaInfo, video_path: str, stage_seconds: dict[str, float], *,
                limits: InputLimits = ARTICLE, sample_seconds: float = dt.FALLBACK_SAMPLE_S,
                windowed: bool = True, out_dir: str | None = None) -> list[Finding]:
    """Both step 4 checks on one file outside a diagnosis. `stage_seconds` holds measured stage times
    keyed by Stage names (may be empty: then decode is measured here on up to `sample_seconds` of video);
    `windowed`: the model stages run per 15 s window, as the engine's do; fix outputs go to `out_dir`
    (default: the current folder)."""
    audit = _audit(info, video_path, stage_seconds, limits, sample_seconds, windowed, out_dir)
    if audit is None:
        return []
    return input_needs_normalising.findings(_normalising(audit)) + input_long_clip.findings(_long_clip(audit))


def _normalising(a: _Audit) -> Found | None:
    if not a.reasons:
        return None
    saving = max(0.0, a.decode_s * (1 - a.ratio))
    evidence = {
        "reasons": a.reasons, "probed": _probed(a.info), "decode_s": round(a.decode_s, 4),
        "decode_source": a.decode_source, "decode_ratio_after_prep": round(a.ratio, 4),
        "measured": (f"input: {a.reference.describe()}; prep'd copy of the same "
                     f"{a.prepped.timing.media_s:.2f} s: {a.prepped.timing.describe()}"),
        "estimate": ("saving = decode_s x (1 - ratio); ratio = decode time per second of video of prep's copy "
                     "over the input's, both decoded as the engine decodes (8 fps 512x512 and 25 fps 224x224). "
                     "Model stages do not depend on input resolution or frame rate"),
        "prep_cost_s": round(_prep_cost(a), 2),
        "prep_cost": ("prep decodes the file once and encodes it at 720p (the time above, measured on the "
                      "sample): it pays back when the same clip is generated more than once or is uploaded"),
    }
    if a.long_clip:
        keep_all = [*a.flags[:-2], "--max-seconds", f"{math.ceil(a.info.duration_s)}"]
        evidence["shared_fix"] = "the same command also trims the clip (input_long_clip): one prep for both"
        normalised = _prep_output(a.video_path, "normalised", str(Path(a.out).parent))
        evidence["keep_whole_clip"] = prep_command(a.video_path, normalised, keep_all)
    return Found(
        severity=_normalising_severity(a.reasons, a.ratio, saving),
        title="Input is heavier than the model needs: " + ", ".join(r["value"] for r in a.reasons),
        evidence=evidence,
        fix=prep_command(a.video_path, a.out, a.flags),
        est_saving_s=round(saving, 4),
        fix_prep=prep_kwargs(a.flags),
        extra={"fix_group": "prep"} if a.long_clip else {},
    )


def _long_clip(a: _Audit) -> Found | None:
    if not a.long_clip:
        return None
    d, limits = float(a.info.duration_s), a.limits
    # decode after normalising when that finding takes the rest; else all of prep's effect is this fix's
    ratio = min(a.ratio, 1.0)
    # an input that needs no normalising is re-encoded to much the same thing: trimming is the whole effect
    decode = a.decode_s * ratio * (1 - a.keep) if a.reasons else a.decode_s * (1 - a.keep)
    stages = _scaled_stages(a)
    saving = decode + sum(stages.values())
    how = ("decode (after normalising) and the stages that scale with length: visual encode and "
           f"post-processing x (1 - {limits.window_s:g} / {d:.3g})")
    how += (f"; sync encode, denoise and VAE decode run per window: x (1 - 1 / {_window_count(d, limits)} windows)"
            if a.windowed else "; the other model stages x the same share")
    evidence = {
        "duration_s": round(d, 3), "window_s": limits.window_s, "probed": _probed(a.info),
        "decode_saved_s": round(decode, 4), "stages_saved_s": {k: round(v, 4) for k, v in stages.items()},
        "decode_s": round(a.decode_s, 4), "decode_source": a.decode_source,
        "decode_ratio_after_prep": round(a.ratio, 4),
        "estimate": how + " (counted after the normalising saving, so the two add up); load and text encode "
                          "do not depend on length",
        "note": "trimming drops the rest of the clip; keep it if you need sound for all of it "
                "(the engine windows long clips)",
    }
    if not stages:
        evidence["lower_bound"] = "only decode was measured (no model stage ran): the model stages scale too"
    if a.reasons:
        evidence["shared_fix"] = "the same command also normalises the input (input_needs_normalising)"
    return Found(
        severity="warning" if d > limits.long_s else "info",
        title=f"Input is {d:.1f} s, longer than the model's {limits.window_s:g} s window",
        evidence=evidence,
        fix=prep_command(a.video_path, a.out, a.flags),
        est_saving_s=round(saving, 4),
        fix_prep=prep_kwargs(a.flags),
        extra={"fix_group": "prep"} if a.reasons else {},
    )


def _scaled_stages(a: _Audit) -> dict[str, float]:
    """Seconds each model / post stage would save on the trimmed clip (pipeline stages only: a stage
    table may also hold nested, user or "other" rows)."""
    d = float(a.info.duration_s)
    out: dict[str, float] = {}
    for name, seconds in a.stage_seconds.items():
        if name in PER_WINDOW and a.windowed:
            out[str(name)] = seconds * (1 - 1 / _window_count(d, a.limits))
        elif name in PER_SECOND or name in PER_WINDOW:
            out[str(name)] = seconds * (1 - a.keep)
    return out


def _window_count(duration_s: float, limits: InputLimits) -> int:
    from foleyscope.engine.windows import plan_windows  # imports torch: only when the engine ran

    return len(plan_windows(duration_s, limits.window_s))


def _decode_seconds(video_path: str, d: float, stage_s: float | None, stage_cpu_s: float | None,
                    sample_s: float) -> tuple[float, str, dt.DecodeTiming]:
    """(decode seconds to price, where they come from, the reference timing of the input)."""
    if stage_s:
        budget = decode_budget(video_path, d, stage_s, stage_cpu_s or None)
        source = "measured: the run's decode stage"
        if budget.wasted_s:
            source += f", less {budget.wasted_s:.2f} s of wasted decode work (decode_wasted_work)"
        return budget.needed_s, source, budget.reference
    ref = dt.reference_decode(video_path, dt.sample_seconds(d, None, sample_s), d)
    return ref.full_s, f"measured: one pass at the model's frame sizes, {ref.describe()}", ref


def _rate(t: dt.DecodeTiming) -> float:
    return t.best_s / t.media_s if t.media_s > 0 else 0.0


def _prep_cost(a: _Audit) -> float:
    """prep's time on the sample, scaled to the part of the file the fix writes."""
    written = min(float(a.info.duration_s), a.limits.window_s if a.long_clip else math.inf)
    return a.prepped.prep_s * written / max(a.reference.media_s, 1e-3)


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
        add("codec", codec.upper(), "H.264", None, "costlier to decode than H.264; prep re-encodes to H.264")
    if is_deep(info.pix_fmt):
        add("bit_depth", f"{info.pix_fmt}", "8-bit yuv420p", None,
            "deep samples cost more to decode and convert; the model uses 8-bit RGB")
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
                "entropy decoding scales with bits; kept only when prep's copy measured faster to decode")
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


def _normalising_severity(reasons: list[dict[str, Any]], ratio: float, saving: float) -> Severity:
    if ratio <= CRITICAL_RATIO and saving > 0:
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


def _prep_output(video_path: str, what: str, out_dir: str | None = None) -> str:
    """The fix's own output, in `out_dir` or the current folder (the input's may be read-only or far
    away), named for what it holds so two different fixes never write the same file, and never the input."""
    name = str(Path(out_dir or "") / f"{Path(video_path).stem}_{what}.mp4")
    if Path(name).resolve() == Path(video_path).resolve():
        name = str(Path(out_dir or "") / f"{Path(video_path).stem}_{what}_prep.mp4")
    return name


def _probed(info: MediaInfo) -> dict[str, Any]:
    keys = ("container", "video_codec", "width", "height", "display_width", "display_height", "fps",
            "fps_is_variable", "duration_s", "bit_rate", "pix_fmt", "rotation", "size_bytes")
    return {k: getattr(info, k, None) for k in keys}
