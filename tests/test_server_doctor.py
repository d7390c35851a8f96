"""The doctor's step 5 (the service audit) side by side: on our server (models loaded once per worker,
jobs on a queue, `?wait=` so the audit times whole jobs, stage times in Server-Timing) it finds nothing
to fix; on a deliberately naive server (a model loaded per request inside one global lock:
tests/planted_server.py) it finds both problems."""

from __future__ import annotations

from pathlib import Path

import pytest
from planted_server import BAD, running, write_weights

from foleyscope.doctor.checks.service import check_service
from foleyscope.doctor.http_timing import MultipartShape

pytest_plugins = ["test_server_support"]  # its session fixtures: one server for all these modules

PROMPT = "footsteps on gravel"


def test_the_doctor_finds_nothing_to_fix_on_our_server(server, clip):
    # jobs of about half a second, so two running side by side on two workers end together even when
    # other processes share the CPU (with the tests' 4 steps, start-up order would decide who ends first)
    shape = MultipartShape(extra_fields={"steps": "60"})
    m, findings = check_service(f"{server.url}/v1/jobs?wait=60", str(clip), PROMPT, n_parallel=2, timeout_s=60,
                                shape=shape)
    assert findings == [], [f.title for f in findings]
    assert m["reported_processing_s"] > 0 and "reported_load_s" not in m  # stage times, no per-request load
    assert m["warm_overhead_s"] < 0.15  # upload parse, probe, queue hand-off: no model work per request
    assert m["parallel"]["first_to_last_latency"] > 0.6  # two workers: both answered together


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_weights(tmp_path_factory.mktemp("naive") / "model.pt")


def test_the_doctor_finds_both_problems_on_a_naive_server(weights, clip):
    with running(BAD, weights) as (url, _):
        m, findings = check_service(url, str(clip), PROMPT, n_parallel=2, timeout_s=60)
    assert {f.id for f in findings} >= {"service_serialises_requests", "service_reloads_model"}
    assert m["parallel"]["first_to_last_latency"] < 0.6 and m["warm_overhead_s"] >= BAD.load_sleep_s
