"""Step 2, time each stage: two findings about the shape of the run rather than one stage's behaviour.
The stage table itself is report data, built once per report by doctor/tables.py."""

from __future__ import annotations

from collections.abc import Iterator

from foleyscope.doctor.registry import Found, check
from foleyscope.doctor.run import HOST_STAGES, MODEL_STAGES, OTHER, RunData

DOMINANT_SHARE = 0.4
UNTRACED_SHARE = 0.25
HOST_FIXES = {
    "decode": "See decode_wasted_work and the step 4 input findings for what decoding costs and why: decode once, "
              "at the model's frame sizes (extract_frames), and normalise an input above 720p / 25 fps.",
    "postprocess": "Write the WAV and mux without re-encoding the video (stream copy), and skip the mux when "
                   "only audio is needed.",
}


@check("stage_dominates", step=2, doc="Decoding or post-processing takes over 40% of a run that also runs models")
def stage_dominates(run: RunData) -> Iterator[Found]:
    total = run.total_s
    if total <= 0:
        return
    has_models = bool(run.model_stages()) or any(s.name in MODEL_STAGES for s in run.traced())
    # Loading is left out: one load per run is expected, loads per video are model_reloaded's case.
    for name in (n for n in HOST_STAGES if has_models and n != "load"):
        st = run.stages.get(name)
        if st is None or st.seconds / total < DOMINANT_SHARE:
            continue
        yield Found(
            severity="info",
            title=f"{name} takes {st.seconds / total:.0%} of the run ({st.seconds:.2f} s of {total:.2f} s)",
            evidence={"stage": str(name), "seconds": round(st.seconds, 3), "share": round(st.seconds / total, 3),
                      "count": st.count},
            fix=HOST_FIXES[str(name)],
            est_saving_s=0.0,  # where to look, not a saving by itself: the step 1/3/4 findings estimate it
        )


@check("untraced_time", step=2,
       doc="Over 25% of the run is outside every marked stage: mark more stages to see where it goes")
def untraced_time(run: RunData) -> Found | None:
    total, other = run.total_s, run.stages.get(OTHER)
    if total <= 0 or other is None or other.seconds < 0.5 or other.seconds / total < UNTRACED_SHARE:
        return None
    return Found(
        severity="info",
        title=f"{other.seconds:.2f} s ({other.seconds / total:.0%}) of the run is outside every stage",
        evidence={"untraced_s": round(other.seconds, 3), "share": round(other.seconds / total, 3),
                  "stages_marked": len(run.traced())},
        fix="Wrap the remaining work in `with foleyscope.trace.stage('name'):` (or decorate the function with "
            "@stage('name')) so the doctor can time and judge it.",
        est_saving_s=0.0,
    )
