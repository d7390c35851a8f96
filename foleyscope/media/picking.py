"""Which decoded frame each sample shows: the two sampling rules of `extract_frames`.

"exact": sample k of a spec is at t_k = start + k / fps, seconds from the video's first frame, and
shows the frame on screen at t_k (the latest frame with pts <= t_k). That is what a player shows.

"official": the rule of the HunyuanVideo-Foley release, which its checkpoints were trained and are
run with. Its clock starts at 0.0 on the stream's own timeline (absolute timestamps: a stream that
starts at 1.4 s, as MPEG-TS often does, gets its first frame repeated for every sample before 1.4 s)
and advances by adding 1/fps again and again in floating point, so t_k drifts from k / fps (on a
25 fps clock it runs just above k / 25 at sample 6 and for most samples from 18 on: 189 of the first
250, each of which then shows frame k + 1 of a 25 fps video). Each decoded frame, taken in decoding
order, with a timestamp >= 0, gives itself to every pending sample time at or before its own
timestamp: a sample shows the FIRST frame at or after it. No sample is emitted past the last frame.
The release stops at 15 s (frames later than that are dropped); `count_up_to` says how many samples
that cap leaves, which fixes the length of the audio it generates.
"""

from __future__ import annotations

import math
from typing import Literal

Rule = Literal["official", "exact"]
RULES: tuple[str, ...] = ("official", "exact")
OFFICIAL_MAX_S = 15.0  # the release's cap: frames later than this are dropped


class OfficialClock:
    """The release's accumulated sample clock for one rate, on the stream's absolute timeline."""

    def __init__(self, fps: float, first: float | None = None) -> None:
        """`first`: skip the samples before this absolute time (windows), still adding 1/fps one
        step at a time, so the times stay the release's own float values."""
        self.step = 1 / fps
        self.next = 0.0
        if first is not None:  # the float values come from the walk itself: walk (14 ms per hour at 60 fps)
            while self.next < first:
                self.next += self.step

    def take(self, frame_time: float, stop: float | None = None) -> list[float]:
        """Sample times the frame at `frame_time` (absolute s, >= 0) is the first to reach, below `stop`."""
        out: list[float] = []
        while frame_time >= self.next and (stop is None or self.next < stop):
            out.append(self.next)
            self.next += self.step
        return out


def count_up_to(fps: float, last: float) -> int:
    """Samples of the release's clock at or before `last` (absolute s): its count for a stream whose
    frames, in order, end at `last` (its latest frame within the cap)."""
    if not (last >= 0 and math.isfinite(last)):
        return 0
    clock = OfficialClock(fps)
    return len(clock.take(last))
