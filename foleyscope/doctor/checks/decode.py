"""Step 2, time each stage: is the decode stage doing more work than the model needs?

A user's pipeline often decodes the file once per frame rate, converts every frame to full-resolution
RGB and resizes it in Python (as the released pipeline does). None of that shows as a utilisation
problem: the cores are busy. The only way to see it is to compare the stage with what the decode
must cost, so the doctor measures that: one pass of `extract_frames` over the same file at the
model's two frame specs (decode_timing.py). The comparison is in CPU seconds where the run recorded
them: on a shared machine another process can slow the stage's wall time 2x, but not add to the work
it did. The share of the stage's work above the one pass, applied to the stage's wall time, is the
saving. Making the input itself lighter is step 4's (`input_needs_normalising`), priced from the
decode this leaves, so that the two savings add up.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from foleyscope.doctor.decode_timing import DecodeTiming, reference_decode, sample_seconds
from foleyscope.doctor.registry import Found, check
from foleyscope.doctor.run import RunData
from foleyscope.stages import Stage

MIN_RATIO = 1.5  # the stage must take this many times the one-pass reference (noise stays below it)
MIN_WASTE_S = 0.1
WARNING_SHARE = 0.1  # of the run: a warning above it, else info

FIX = ("Decode the file once, scaled to what the model needs inside the decoder's scaler: "
       "`from foleyscope.media.frames import extract_frames, SIGLIP2, SYNCHFORMER; "
       "frames = extract_frames(path, [SIGLIP2, SYNCHFORMER])` (one pass feeds both frame rates; no "
       "full-resolution RGB, no resizing in Python), or let the engine decode (`foleyscope generate`).")


@dataclass(frozen=True)
class DecodeBudget:
    """The run's decode stage against the one-pass reference decode of the same file."""

    video_path: str
    stage_s: float
    stage_cpu_s: float | None  # the stage's process CPU seconds, when the run recorded them
    count: int  # times the decode stage ran
    reference: DecodeTiming

    @property
    def by_cpu(self) -> bool:
        return bool(self.stage_cpu_s) and bool(self.reference.full_cpu_s)

    @property
    def ratio(self) -> float:
        """The stage's work over one pass: CPU seconds when both are known, else wall seconds."""
        stage, one = ((self.stage_cpu_s, self.reference.full_cpu_s) if self.by_cpu
                      else (self.stage_s, self.reference.full_s))
        return stage / one if one else 0.0

    @property
    def wasted_s(self) -> float:
        """Wall seconds of the stage above one pass (its share of the work above, of the stage's time),
        when clearly above (MIN_RATIO, MIN_WASTE_S); else 0."""
        extra = self.stage_s * (1 - 1 / self.ratio) if self.ratio > 0 else 0.0
        return extra if self.ratio >= MIN_RATIO and extra >= MIN_WASTE_S else 0.0

    @property
    def needed_s(self) -> float:
        """The decode this file needs in this run: the stage with its waste taken out."""
        return self.stage_s - self.wasted_s


def decode_budget(video_path: str, duration_s: float, stage_s: float, stage_cpu_s: float | None = None,
                  count: int = 1) -> DecodeBudget:
    """Measure the reference on a sample sized from the stage's own rate (decode_timing.sample_seconds)."""
    timing = reference_decode(video_path, sample_seconds(duration_s, stage_s), duration_s)
    return DecodeBudget(video_path, stage_s, stage_cpu_s, count, timing)


def run_budget(run: RunData) -> DecodeBudget | None:
    """The budget of the diagnosed run: needs a decode stage and the input's path (`run.context`)."""
    st = run.stages.get(Stage.DECODE)
    path = getattr(run.context, "video_path", None)
    if st is None or st.seconds <= 0 or not path or not Path(path).is_file():
        return None
    info = getattr(run.context, "input_info", None)
    if info is None:
        from foleyscope.media.probe import probe

        info = probe(path)
    return decode_budget(str(path), float(info.duration_s), st.seconds, st.cpu_s or None, st.count)


@check("decode_wasted_work", step=2,
       doc="the decode stage takes well over one measured pass of the same file at the model's frame "
           "sizes (decoded twice, full-resolution RGB, resized in Python): decode once with extract_frames")
def decode_wasted_work(run: RunData) -> Found | None:
    budget = run_budget(run)
    if budget is None or budget.wasted_s <= 0:
        return None
    ref, total = budget.reference, run.total_s
    share = budget.wasted_s / total if total > 0 else 1.0
    unit = "CPU" if budget.by_cpu else "wall"
    return Found(
        severity="warning" if share >= WARNING_SHARE else "info",
        title=(f"Decoding does {budget.ratio:.1f}x the work of one pass of the same file at the model's frame "
               f"sizes ({budget.stage_s:.2f} s, of which {budget.wasted_s:.2f} s above one pass)"),
        evidence={
            "decode_stage_s": round(budget.stage_s, 4), "decode_stage_cpu_s": _round(budget.stage_cpu_s),
            "decode_stage_count": budget.count, "one_pass_s": round(ref.full_s, 4),
            "one_pass_cpu_s": _round(ref.full_cpu_s), "ratio": round(budget.ratio, 2), "compared": unit,
            "reference": ("foleyscope.media.frames.extract_frames at 8 fps 512x512 (squash) and 25 fps "
                          f"224x224 (crop): {ref.describe()}"),
            "one_pass_timing": ref.to_dict(),
            "estimate": (f"saving = decode stage x (1 - one pass / decode stage), in {unit} seconds "
                         "(CPU: other processes on the machine slow the wall time, not the work)"),
        },
        fix=FIX,
        est_saving_s=round(budget.wasted_s, 4),
    )


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)
