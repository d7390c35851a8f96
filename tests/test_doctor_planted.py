"""The planted suite (tests/planted/): for every planted cause the doctor names it first with a positive
estimate, the clean twin raises no warning, and the estimates hold when the fix is applied: within 30%
of the measured saving in all but one case. Each twin runs once, clean first (three times when the first
pair misses: see planted.measure); the suite runs once per
session (a module fixture) and every test reads its outcomes."""

from __future__ import annotations

import pytest
from planted import ENVIRONMENTAL, TOLERANCE, Outcome, all_cases, measure

CASES = all_cases()


@pytest.fixture(scope="module")
def outcomes() -> dict[str, Outcome]:
    return {name: measure(c) for name, c in CASES.items() if not c.skip()}


def _outcome(outcomes: dict[str, Outcome], name: str) -> Outcome:
    if name not in outcomes:
        pytest.skip(CASES[name].skip() or "")
    return outcomes[name]


def test_the_suite_plants_at_least_15_distinct_causes() -> None:
    assert len(CASES) >= 15
    assert len({c.check for c in CASES.values()}) >= 13  # a cause may be one check's second variant


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_planted_cause_is_ranked_first_with_a_positive_estimate(outcomes, name: str) -> None:
    o = _outcome(outcomes, name)
    if o.case.needs_free_cores and o.contended:
        pytest.skip("other processes held the cores: this cause's A/B (threads, cores, dtype) or idle reading is not "
                    "measurable on a shared machine, and the doctor says its numbers are uncertain")
    got = [(f.id, round(f.est_saving_s, 3)) for f in o.planted.findings]
    assert o.ranked_first, f"{name}: expected {o.case.check} first, got {got}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_fix_removes_the_finding_and_the_clean_twin_raises_no_warning(outcomes, name: str) -> None:
    o = _outcome(outcomes, name)
    assert o.clean_warnings == [], f"{name}: the clean twin raised {o.clean_warnings}"
    if o.case.check in ENVIRONMENTAL and o.contended:
        pytest.skip("other processes held the cores during the clean twin too: its contention finding is right "
                    "(the twin raised no other warning)")
    assert o.case.check not in [f.id for f in o.clean.findings], f"{name}: the fix left its finding"


def test_estimates_hold_when_the_fix_is_applied(outcomes) -> None:
    """Within 30% of the measured saving (planted minus clean) in all but one case, among the cases
    measured while no other process held the cores (the doctor says when one did: then a twin's time
    measures the machine's load, not the cause). At least 12 such cases are needed to judge."""
    quiet = {n: o for n, o in outcomes.items() if not o.contended}
    if len(quiet) < 12:
        pytest.skip(f"the machine was shared: only {len(quiet)} of {len(outcomes)} cases ran on free cores")
    rows = {n: (round(o.estimate_s, 3), round(o.measured_saving_s, 3)) for n, o in quiet.items()}
    off = [n for n, o in quiet.items() if not o.calibrated]
    assert len(off) <= 1, f"off by more than {TOLERANCE:.0%} or not first: {off}; (estimate, measured): {rows}"
