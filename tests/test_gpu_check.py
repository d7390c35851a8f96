"""scripts/gpu_check.sh must be ready before a GPU is lent: its CPU dry run diagnoses the engine on the
CPU for real, skips the CUDA scenarios with the reason, benches the CPU modes of the tiny preset and
sets plan's estimates beside their measured peaks, writes its JSON and logs under $OUT, and exits 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GPU_FINDINGS = {"gpu_visible_unused", "torch_cpu_build_with_gpu", "cuda_unavailable_with_gpu",
                "pageable_h2d_copies", "compile_off"}


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    tmp_path = tmp_path_factory.mktemp("gpu_check")
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=420)
    return done, tmp_path / "out"


def test_the_dry_run_diagnoses_the_engine_on_cpu_and_skips_the_cuda_parts_with_the_reason(dry_run):
    done, out = dry_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert {p.name for p in out.iterdir()} == {"gpu_check.log", "gpu_doctor.json", "gpu_doctor.log",
                                               "gpu_bench.json", "gpu_bench.log", "gpu_plan.json"}
    result = json.loads((out / "gpu_doctor.json").read_text())
    assert result["ok"] is True and result["skipped"] == "--dry-run" and result["environment"]["cuda"] is False
    cpu = result["scenarios"]["engine_on_cpu"]
    assert cpu["ok"] is True and isinstance(cpu["fired"], list)
    assert cpu["run"]["device"] == "cpu" and cpu["run"]["total_s"] > 0, "the engine ran under the doctor"
    assert {"decode", "denoise", "vae_decode"} <= set(cpu["run"]["stages"])
    assert not GPU_FINDINGS & {f["id"] for f in cpu["fired"]}, "no GPU finding without a GPU"
    for name in ("pageable_vs_pinned", "engine_on_cuda_uncompiled"):
        assert result["scenarios"][name] == {"ok": None, "skipped": "--dry-run"}
    log = (out / "gpu_check.log").read_text()
    assert "=== doctor: exit 0" in log and "all steps passed" in log
    assert "engine_on_cpu: ok" in (out / "gpu_doctor.log").read_text()


def test_the_dry_run_benches_the_cpu_modes_and_sets_plan_beside_the_measured_peaks(dry_run):
    done, out = dry_run
    bench = json.loads((out / "gpu_bench.json").read_text())
    assert bench["preset"] == "tiny" and bench["steps"] == 2 and bench["device"] == "cpu"
    assert [row["requested"] for row in bench["modes"].values()] == ["fp32", "bf16", "bf16+cache", "int8wo"]
    for spec, row in bench["modes"].items():
        assert row["error"] is None and row["total"]["median"] > 0 and row["peak_bytes"] > 0, spec
        assert set(row["drift"]) == {"latents_rel_l2", "audio_rel_l2", "log_mel_db"}, spec
    plan = json.loads((out / "gpu_plan.json").read_text())
    assert set(plan["modes"]) == set(bench["modes"])
    assert all(row["estimate_bytes"] > 0 and row["ratio"] > 0 for row in plan["modes"].values())
    log = (out / "gpu_check.log").read_text()
    assert "=== bench: exit 0" in log and "plan vs measured" in log
