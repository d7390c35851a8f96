"""`foleyscope plan` and engine/memory.py: the estimate against a real run's measured peak, quantised
weights priced at what torchao stores, and the card table.

The measured number is what the estimate means: the growth of the process's RSS from before the load
to the run's peak, with the code pages and imports paid by a warm-up run beforehand, in a fresh
process whose allocator returns freed blocks at once (MALLOC_MMAP_THRESHOLD_: glibc would otherwise
keep some freed memory, which counts in RSS but is not the run's need)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from foleyscope.cli import main
from foleyscope.engine.memory import _network_bytes, estimate, networks
from foleyscope.engine.modes import Mode
from foleyscope.engine.offload import _inner
from foleyscope.engine.presets import get_preset
from foleyscope.engine.quant import quantise
from foleyscope.model.foley import FoleyDenoiser

ROOT = Path(__file__).resolve().parents[1]
MEASURE = r"""
import gc, json, sys, ctypes
from pathlib import Path
import torch
torch.set_num_threads(2)
from foleyscope.engine.memory import estimate
from foleyscope.engine.modes import Mode
from foleyscope.engine.pipeline import FoleyPipeline
from foleyscope.engine.presets import get_preset
from foleyscope.trace.procstat import PeakRss
preset_name, clip, warm, seconds, steps = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
preset = get_preset(preset_name)
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
warmup = FoleyPipeline.load("tiny", device="cpu", mode=Mode("fp32"))
warmup(warm, "warm-up", steps=1, seed=0)  # imports and code pages: not what the estimate counts
del warmup
gc.collect(); ctypes.CDLL("libc.so.6").malloc_trim(0)
before = rss()
pipe = FoleyPipeline.load(preset, device="cpu", mode=Mode("fp32"))
peak = PeakRss(); peak.reset()  # the run's peak, not the load's (random weights are drawn in fp32 first)
pipe(clip, "footsteps on gravel", steps=steps, seed=0)
est = estimate(preset, Mode("fp32"), seconds, device="cpu")
print(json.dumps({"measured": peak.peak() - before, "estimate": est.peak, "stage": est.peak_stage}))
"""


@pytest.mark.parametrize(("preset", "seconds", "steps"), [("tiny", 10.0, 2), ("mid", 4.0, 1)])
def test_the_estimate_is_within_15_percent_of_the_measured_peak_rss_growth(make_clip, preset, seconds, steps):
    clip = make_clip(width=640, height=360, seconds=seconds)
    warm = make_clip(width=640, height=360, seconds=1.0)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", MEASURE, preset, str(clip), str(warm), str(seconds), str(steps)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    ratio = got["estimate"] / got["measured"]
    assert 0.85 <= ratio <= 1.15, f"{preset}: estimate {got['estimate'] / 2**20:.0f} MiB at {got['stage']}, " \
                                  f"measured {got['measured'] / 2**20:.0f} MiB ({ratio:.3f})"


@pytest.mark.parametrize("quant", ["int8wo", "int8dq"])
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_quantised_weights_are_priced_at_what_torchao_stores(quant, dtype):
    preset = get_preset("tiny")
    den = FoleyDenoiser(preset.denoiser).to(dtype=getattr(torch, {"fp32": "float32", "bf16": "bfloat16"}[dtype]))
    quantise(den, quant)
    stored = sum(i.numel() * i.element_size() for t in [*den.parameters(), *den.buffers()] for i in _inner(t.data))
    assert _network_bytes(networks(preset, True)["denoiser"], {"fp32": 4, "bf16": 2}[dtype], quant) == stored


def test_offloading_more_needs_less_gpu_memory_and_more_host_ram():
    xxl = get_preset("xxl")
    e = {o: estimate(xxl, Mode("bf16", quant="fp8", offload=o), 10.0) for o in
         ("none", "model", "blocks:8", "blocks:2", "blocks:0")}
    assert e["none"].peak > e["model"].peak > e["blocks:8"].peak > e["blocks:2"].peak > e["blocks:0"].peak
    assert e["none"].host < e["blocks:8"].host < e["blocks:2"].host < e["blocks:0"].host < e["model"].host
    assert e["model"].peak_stage == "denoise", "model offload: the denoiser alone is the largest resident network"


def test_plan_names_the_fastest_mode_that_fits_each_card(tmp_path, capsys):
    out = tmp_path / "plan.json"
    assert main(["plan", "--preset", "xxl", "--seconds", "10", "--gpu", "24GB", "--json", str(out)]) == 0
    plan = json.loads(out.read_text())
    first = next(iter(plan["modes"]))
    assert first == "bf16+compile" and plan["cards"]["141"]["mode"] == first
    gib = 2**30
    for card, choice in plan["cards"].items():
        assert choice is not None and choice["peak_bytes"] < float(card) * gib, card
    assert "offload" in plan["cards"]["8"]["mode"], "XXL fits an 8 GB card only by offloading"
    assert plan["minimum"]["card_gb"] == 8
    smallest_for_first = min(float(c) for c, ch in plan["cards"].items() if ch["mode"] == first)
    assert plan["recommended"] == {"card_gb": smallest_for_first, "mode": first,
                                   "peak_bytes": plan["modes"][first]["peak_bytes"]}
    assert plan["gpu"]["gb"] == 24 and plan["gpu"]["mode"] == first
    text = capsys.readouterr().out
    assert "recommended: " in text and "your 24 GB card: 24 GB with bf16+compile" in text


@pytest.mark.parametrize(("extra", "message"), [
    (["--gpu", "lots"], "--gpu lots: expected a memory size"),
    (["--seconds", "0"], "--seconds must be more than 0"),
    (["--modes", "bf16,fp9"], "unknown part 'fp9'"),
    (["--modes", "fp8", "--device", "cpu"], "--quant fp8: CUDA only"),
    (["--modes", "bf16+offload=disk"], "--offload disk: expected none, model or blocks"),
    (["--modes", "bf16+attention=bogus"], "--attention bogus: expected"),  # planning for a GPU checks modes too
    (["--modes", "bf16+cache=-1"], "--cache -1"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, extra, message):
    assert main(["plan", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("foleyscope: error: ") and message in err[0], err


def test_a_cpu_plan_without_modes_plans_modes_a_cpu_runs(tmp_path):
    out = tmp_path / "cpu.json"
    assert main(["plan", "--device", "cpu", "--preset", "mid", "--seconds", "4", "--json", str(out)]) == 0
    modes = list(json.loads(out.read_text())["modes"])
    assert len(modes) == 3 and not any(m.startswith("auto") or "fp8" in m or "offload" in m for m in modes), modes
