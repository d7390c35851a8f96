"""Long-video windows: the plan covers the clip, and the cross-fade leaves no gap, dip or click."""

import numpy as np
import pytest

from foleyscope.windows import crossfade, plan_windows


@pytest.mark.parametrize("duration", [0.5, 3.3, 15.0, 15.2, 25.0, 30.0, 61.7, 127.4])
def test_plan_covers_clip_with_equal_windows_on_whole_seconds(duration):
    windows = plan_windows(duration, window_s=15.0, overlap_s=2.0)
    assert windows[0].start_s == 0
    assert windows[-1].end_s >= duration - 1e-9
    assert len({w.length_s for w in windows}) == 1, "windows must batch together"
    if len(windows) == 1:
        assert windows[0].length_s == pytest.approx(np.ceil(duration * 25 - 1e-6) / 25)
    for a, b in zip(windows, windows[1:], strict=False):
        assert b.start_s == int(b.start_s), "starts lie on the 1 s grid shared by 8/25/50 Hz clocks"
        assert a.end_s - b.start_s >= 2.0, "neighbours overlap by at least overlap_s"
        assert b.start_s > a.start_s


def _rms_blocks(x: np.ndarray, n: int) -> np.ndarray:
    return np.sqrt((x[: len(x) // n * n].reshape(-1, n) ** 2).mean(axis=1))


def test_crossfade_keeps_loudness_of_uncorrelated_windows_constant():
    sr, duration = 8000, 40.0
    windows = plan_windows(duration)
    rng = np.random.default_rng(0)
    clips = [rng.normal(0, 0.1, int(w.length_s * sr)).astype(np.float32) for w in windows]
    track = crossfade(windows, clips, sr, duration)
    assert track.shape == (int(duration * sr),)
    rms = _rms_blocks(track, sr // 4)  # 250 ms blocks
    assert rms.min() > 0.1 * 10 ** (-1.5 / 20), "a dip (silence or gap) at a seam"
    assert rms.max() < 0.1 * 10 ** (1.5 / 20), "a bump at a seam"


def test_crossfade_of_a_continuous_signal_has_no_click():
    sr, duration = 8000, 25.0
    windows = plan_windows(duration)
    t_all = np.arange(int(windows[-1].end_s * sr)) / sr
    sine = 0.3 * np.sin(2 * np.pi * 110 * t_all)
    clips = [sine[int(w.start_s * sr) : int(w.end_s * sr)] for w in windows]
    track = crossfade(windows, clips, sr, duration)
    jumps = np.abs(np.diff(track))
    assert jumps.max() <= 1.5 * np.abs(np.diff(sine)).max()
    assert np.abs(track[:sr]).max() > 0.29


def test_single_window_is_trimmed_or_padded_to_the_exact_duration():
    w = plan_windows(3.3)
    track = crossfade(w, [np.ones(int(w[0].length_s * 48000), np.float32)], 48000, 3.3)
    assert track.shape == (round(3.3 * 48000),)
