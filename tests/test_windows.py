"""Long-video windows: the plan covers the clip, overlapping latents are shared, and the join keeps
the level of what the windows agree on."""

import numpy as np
import pytest
import torch

from foleyscope.engine.windows import LatentLayout, fit, join, plan_windows


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


def test_a_25_s_clip_takes_two_15_s_windows_overlapping_by_5_s():
    assert [(w.start_s, w.length_s) for w in plan_windows(25.0)] == [(0.0, 15.0), (10.0, 15.0)]


def test_join_of_windows_carrying_the_same_signal_reproduces_it_with_no_click_or_bump():
    sr, duration = 8000, 25.0
    windows = plan_windows(duration)
    t_all = np.arange(int(windows[-1].end_s * sr)) / sr
    sine = (0.3 * np.sin(2 * np.pi * 110 * t_all)).astype(np.float32)
    clips = [sine[int(w.start_s * sr) : int(w.end_s * sr)] for w in windows]
    track = join(windows, clips, sr, duration)
    assert track.shape == (int(duration * sr),)
    np.testing.assert_allclose(track, sine[: len(track)], atol=1e-6)


def test_join_fades_linearly_in_the_middle_of_each_overlap():
    sr = 1000
    windows = plan_windows(7.0, window_s=3.0, overlap_s=1.0)
    clips = [np.full(3 * sr, float(i + 1), np.float32) for i in range(len(windows))]  # window i is i+1
    track = join(windows, clips, sr, 7.0, fade_s=0.2)
    for i, nxt in enumerate(windows[1:]):
        mid = round((nxt.start_s + 0.5) * sr)  # the middle of a 1 s overlap
        assert track[mid - 101] == i + 1 and track[mid + 100] == i + 2, "outside the fade: one window only"
        fade = track[mid - 100 : mid + 100]
        assert np.all(np.diff(fade) > 0) and abs(fade.mean() - (i + 1.5)) < 1e-4  # a straight ramp
    assert np.abs(track).max() <= len(windows), "weights sum to one: no sample louder than its sources"


def test_single_window_is_trimmed_or_padded_to_the_exact_duration():
    w = plan_windows(3.3)
    track = join(w, [np.ones(int(w[0].length_s * 48000), np.float32)], 48000, 3.3)
    assert track.shape == (round(3.3 * 48000),)


def test_latent_layout_shares_noise_and_averages_overlapping_frames():
    windows = plan_windows(7.0, window_s=3.0, overlap_s=1.0)  # starts 0, 2, 4: 1 s overlaps
    layout = LatentLayout(windows, latent_len=150, rate=50)
    assert layout.total == 350
    noise = layout.noise(4, torch.Generator().manual_seed(0))
    assert noise.shape == (3, 4, 150)
    assert torch.equal(noise[0, :, 100:], noise[1, :, :50]), "overlapping frames start from the same noise"
    x = torch.randn(3, 4, 150)
    y = layout.average(x)
    assert torch.allclose(y[1, :, :50], (x[0, :, 100:] + x[1, :, :50]) / 2)
    assert torch.equal(y[0, :, 100:], y[1, :, :50]) and torch.equal(y[1, :, 100:], y[2, :, :50])
    assert torch.equal(y[0, :, :100], x[0, :, :100]), "frames in one window only are untouched"


def test_a_single_window_draws_the_noise_torch_randn_would():
    layout = LatentLayout(plan_windows(2.0), latent_len=100, rate=50)
    expected = torch.randn(1, 8, 100, generator=torch.Generator().manual_seed(5))
    assert torch.equal(layout.noise(8, torch.Generator().manual_seed(5)), expected)


def test_fit_trims_or_pads_after_a_short_fade():
    sr = 48000
    tone = np.full(1000, 0.5, np.float32)
    assert np.array_equal(fit(tone, 600, sr), tone[:600])
    padded = fit(tone, 1500, sr)
    assert padded.shape == (1500,) and not padded[1000:].any()
    fade = padded[1000 - 240 : 1000]  # 5 ms at 48 kHz
    assert np.all(np.diff(fade) < 0) and fade[-1] < 0.01 and padded[759] == 0.5
