"""Planted serving problems (step 5), each against the clean server with the fix: the model loaded for
every request while processing takes longer than the load (the server reports no timing), requests
answered one at a time, and the model loaded lazily by the first request. The doctor's run itself is a
no-op here: the service measurements in the context are what the checks read; the time a fix acts on is
the request's (or the batch's) wait, measured against the clean server."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

from planted_server import CLEAN, PlantedConfig, running, write_weights

from foleyscope.doctor.api import DiagnoseContext
from foleyscope.doctor.checks.service import measure_service
from foleyscope.media.synth import SynthSpec, make_video
from planted import case

_DIR = Path(tempfile.mkdtemp(prefix="foleyscope-planted-service-"))
SLOW = replace(CLEAN, report=None, process_per_video_s=0.25, load_sleep_s=0.25)  # processing > load


def _files() -> tuple[Path, Path]:
    weights, clip = _DIR / "model.pt", _DIR / "clip.mp4"
    if not weights.exists():
        write_weights(weights)
        make_video(clip, SynthSpec(width=320, height=180, seconds=2.0))
    return weights, clip


def _measured(config: PlantedConfig, parallel: int = 2) -> DiagnoseContext:
    weights, clip = _files()
    with running(config, weights) as (url, _):
        m = measure_service(url, str(clip), "rain on a tin roof", n_parallel=parallel, timeout_s=30,
                            warm_requests=1)
    return DiagnoseContext(service=m, probe=False)


def _nothing() -> None:
    """The diagnosed run: the engine is not what these cases plant."""


@case("service_reloads_per_request", "service_reloads_model", seconds=lambda r: r.service["warm_wait_s"],
      context=lambda planted: _measured(replace(SLOW, reload_per_request=planted)))
def _reloads():
    """The model loaded inside the request handler, processing twice as long as the load, no timing."""
    return _nothing, _nothing


@case("service_one_at_a_time", "service_serialises_requests",
      seconds=lambda r: r.service["parallel"]["wall_s"],
      context=lambda planted: _measured(replace(CLEAN, serialise=planted, process_base_s=0.3), parallel=3))
def _serialised():
    """A global lock around the model: three concurrent requests answered one after another."""
    return _nothing, _nothing


@case("service_lazy_load", "service_cold_start", seconds=lambda r: r.service["cold_wait_s"],
      context=lambda planted: _measured(replace(CLEAN, lazy_load=planted, load_sleep_s=0.6)))
def _lazy():
    """The model loaded by the first request instead of at start-up."""
    return _nothing, _nothing
