"""Shared test set-up: no network for Hugging Face, few torch threads, and synthetic clips made once.

`make_clip(**fields)` returns a clip written by synth.make_video for SynthSpec(**fields) (plus
`ext`, the container's suffix, default ".mp4"). Clips are cached for the whole session, so tests
that ask for the same clip share one file: treat it as read-only (copy it before damaging it).
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

from foleyscope.media.synth import SynthSpec, make_video  # noqa: E402

# The planted 4K input of the doctor tests (generating it costs seconds: one shared copy per session)
UHD_HEVC = dict(ext=".mkv", width=3840, height=2160, fps=60, seconds=0.5, codec="libx265")


def pytest_collection_finish(session: pytest.Session) -> None:
    """Keep torch to 2 threads if some test module imported it (importing it here costs seconds)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(2)


@pytest.fixture(scope="module", autouse=True)
def _settled_heap() -> None:
    """Collect, then freeze what survives, at the start of every test module. After a few hundred tests
    this process holds torch, dynamo, transformers and the server stack: one full collection then
    takes about 0.25 s, and one landing inside a timed section (a planted twin, four concurrent
    requests to an in-process server) was measured as the doctor's finding. A real run's process is
    small; frozen objects are skipped by collections, so the tests time what they mean to."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


@pytest.fixture(scope="session")
def make_clip(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    root = tmp_path_factory.mktemp("clips")
    cache: dict[tuple, Path] = {}

    def make(ext: str = ".mp4", **fields) -> Path:
        spec = SynthSpec(**fields)
        key = (ext, spec)
        if key not in cache:
            cache[key] = make_video(root / f"clip{len(cache):03d}{ext}", spec)
        return cache[key]

    return make
