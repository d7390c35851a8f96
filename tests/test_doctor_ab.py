"""The doctor's A/B probes stand on repeated, alternated timings: a pair of settings the first runs do not
separate is timed again, so one burst of other load neither hides a real gain nor invents one; and a run
whose cores were taken from it (other processes, or the hypervisor's steal) says its numbers are uncertain."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from foleyscope.doctor import ab
from foleyscope.doctor.api import diagnose
from foleyscope.stages import Stage
from foleyscope.trace import stage
from foleyscope.trace import tracer as trace


def _timings(values: list[float]) -> tuple[Callable[[], float], list[float]]:
    """A timed callable that returns the given seconds in turn, and the list of what it returned."""
    it: Iterator[float] = iter(values)
    seen: list[float] = []

    def timed() -> float:
        seen.append(next(it))
        return seen[-1]

    return timed, seen


def test_a_burst_during_the_first_pairs_is_outvoted_by_more_pairs() -> None:
    # warm-up, then B is disturbed once (3.0 s) while its real time is 0.5 s; A runs 1.0 s throughout
    a, a_seen = _timings([1.0] * 10)
    b, b_seen = _timings([0.5, 0.5, 3.0, 0.5] + [0.5] * 6)
    result = ab._alternate(a, b, repeats=3, scale=1.0, coverage=1.0)
    assert len(a_seen) == len(b_seen) == 1 + 3 + 6, "the unclear first pairs were followed by twice as many"
    assert result.saving_s == pytest.approx(0.5)
    assert result.spread_s == pytest.approx(0.0), "the one disturbed run is dropped from the spread"


def test_pairs_that_separate_are_not_timed_again() -> None:
    a, a_seen = _timings([1.0, 1.0, 1.02, 0.99])
    b, b_seen = _timings([0.5, 0.51, 0.5, 0.49])
    result = ab._alternate(a, b, repeats=3, scale=2.0, coverage=0.5)
    assert len(a_seen) == len(b_seen) == 4
    assert result.a_s == pytest.approx(2.0) and result.b_s == pytest.approx(1.0), "scaled by the uncovered FLOPs"
    assert result.spread_s == pytest.approx(2 * 0.03)


def test_settings_that_do_not_differ_are_reported_within_the_spread() -> None:
    a, _ = _timings([1.0, 1.0, 1.01, 0.99, 1.0, 1.02, 0.98, 1.0, 1.01, 0.99])
    b, _ = _timings([1.0, 1.01, 0.99, 1.0, 1.0, 0.98, 1.02, 1.0, 1.0, 1.01])
    result = ab._alternate(a, b, repeats=3, scale=1.0, coverage=1.0)
    assert abs(result.saving_s) <= result.spread_s


def _work() -> None:
    with stage(Stage.DENOISE):
        end = time.perf_counter() + 0.3
        while time.perf_counter() < end:
            pass


def _stolen(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """The kernel's steal counter (seconds since boot) advancing by `seconds` between the run's start
    and stop, as it does when the hypervisor runs other machines on these cores."""
    readings = iter([500.0, 500.0 + seconds])
    monkeypatch.setattr(trace, "steal_seconds", lambda: next(readings, 500.0 + seconds))


def test_a_run_whose_cores_the_hypervisor_took_says_its_numbers_are_uncertain(monkeypatch) -> None:
    _stolen(monkeypatch, 0.2)
    report = diagnose(_work, sample_hz=0)
    assert "steal" in (report.meta["uncertain"] or "")


def test_a_run_with_a_moment_of_steal_is_not_called_uncertain(monkeypatch) -> None:
    _stolen(monkeypatch, 0.01)
    report = diagnose(_work, sample_hz=0)
    assert not report.meta["uncertain"] or "steal" not in report.meta["uncertain"]


def test_the_steal_counter_reads_the_kernel_where_there_is_one() -> None:
    from foleyscope.trace.procstat import steal_seconds

    first = steal_seconds()
    if first is None:
        pytest.skip("no /proc/stat here")
    assert 0.0 <= first <= steal_seconds()
