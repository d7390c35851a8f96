"""`foleyscope plan`: how much GPU memory a run needs in each mode, and which mode to use on a card.

Nothing is loaded: the networks are built on the meta device to count their parameters, and the
activations follow from the clip's shapes (engine/memory.py). For each common card size the fastest
mode that fits is named; "minimum" is the smallest card anything fits on, "recommended" the smallest
one the fastest mode fits on. Modes are ranked as listed (default: by published results, see
docs/bench.md) or, with --bench, by the times a `foleyscope bench` JSON measured."""

from __future__ import annotations

import argparse
import json
import math
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from foleyscope.engine.modes import Mode, parse_mode
from foleyscope.errors import FoleyscopeError
from foleyscope.media.atomic import atomic_output, check_output_path
from foleyscope.progress import notice, stdout_console

# Fastest first, from published results (anchors: compile about 30% faster; fp8/int8 weights "less
# VRAM, not more speed"; offloading slower the more it streams). Cache and CUDA graphs are left out
# until measured on this model: pass them in --modes, or rank by a bench JSON with --bench.
DEFAULT_MODES = ("bf16+compile,bf16,fp8+compile,int8wo+compile,bf16+offload=model,fp8+offload=model,"
                 "fp8+offload=blocks:8,fp8+offload=blocks:2,fp8+offload=blocks:0")
# On a CPU (measured here, RESULTS.md): compile a little faster, int8 weights for memory; `auto` is the
# dtype this CPU's probe finds faster. No CUDA-only mode.
CPU_DEFAULT_MODES = "auto+compile,auto,auto+int8wo"
MAX_SECONDS = 3600.0


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("plan", help="estimate peak memory per mode and pick the fastest mode for a GPU",
                       description=__doc__)
    p.add_argument("--preset", default="xxl", help="model size: tiny, mid, xl, xxl (default xxl)")
    p.add_argument("--modes", default=None,
                   help="comma-separated mode specs, fastest first (default: a list for the --device)")
    p.add_argument("--seconds", type=float, default=10.0, help="clip length (default 10)")
    p.add_argument("--gpu", default=None, metavar="SIZE", help="your card's memory, e.g. 24GB: its verdict")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="plan GPU memory (default), or the RSS growth of a CPU run")
    p.add_argument("--cfg", type=float, default=4.5, help="guidance scale (1.0 halves the denoiser batch)")
    p.add_argument("--random-weights", action="store_true",
                   help="as `bench --random-weights` runs: tiny stand-ins for SigLIP2 and CLAP")
    p.add_argument("--bench", type=Path, default=None, help="rank the modes by the times of a bench JSON")
    p.add_argument("--json", type=Path, default=None, help="write the plan as JSON")
    return p


def run(args: argparse.Namespace) -> int:
    gpu = parse_size(args.gpu) if args.gpu else None
    if not (0 < args.seconds <= MAX_SECONDS) or not math.isfinite(args.seconds):
        raise FoleyscopeError(f"--seconds must be more than 0 and at most {MAX_SECONDS:g}, got {args.seconds:g}")
    if args.json is not None:
        check_output_path(args.json)
    defaults = CPU_DEFAULT_MODES if args.device == "cpu" else DEFAULT_MODES
    specs = _ranked_from_bench(args.bench, args.device) if args.bench else _split(args.modes or defaults)
    modes = [(spec, planned_mode(spec, args.device)) for spec in specs]
    from foleyscope.engine.memory import CARD_SIZES_GB, estimate
    from foleyscope.engine.presets import get_preset

    preset = get_preset(args.preset)
    estimates = [estimate(preset, mode, args.seconds, args.device, True if args.random_weights else None, args.cfg)
                 for _, mode in modes]
    cards = sorted({*CARD_SIZES_GB, *([gpu] if gpu else [])})
    plan = build_plan(estimates, cards if args.device == "cuda" else [], gpu)
    plan.update(preset=args.preset, seconds=args.seconds, device=args.device,
                ranking="bench " + str(args.bench) if args.bench else "as listed")
    if args.json:
        with atomic_output(args.json) as tmp:
            tmp.write_text(json.dumps(plan, indent=2) + "\n")
        notice(f"wrote {args.json}")
    render(plan)
    return 0


def parse_size(text: str) -> float:
    """`24GB`, `24G`, `24 GiB`, `24`: GiB, as cards are sold (a '24 GB' card holds about 24 GiB)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:g|gb|gib)?\s*", text, re.I)
    if not m or float(m.group(1)) <= 0:
        raise FoleyscopeError(f"--gpu {text}: expected a memory size such as 24GB")
    return float(m.group(1))


def _split(modes: str) -> list[str]:
    specs = [m.strip() for m in modes.split(",") if m.strip()]
    if not specs:
        raise FoleyscopeError("--modes: give at least one mode")
    return specs


def planned_mode(spec: str, device: str) -> Mode:
    """A mode as it would run on `device`: `auto` is bf16 on CUDA (no GPU needed to plan for one);
    on a CPU resolve decides it and refuses what only runs on CUDA."""
    from foleyscope.engine.modes import validate

    mode = parse_mode(spec)
    if device == "cpu":
        import torch

        from foleyscope.engine.modes import resolve

        return resolve(mode, torch.device("cpu"))
    validate(mode)
    return replace(mode, dtype="bf16") if mode.dtype == "auto" else mode


def _ranked_from_bench(path: Path, device: str) -> list[str]:
    """The modes a bench JSON measured without error, fastest median first, if measured on this kind
    of device (a CPU's ranking says nothing about a GPU's)."""
    try:
        data = json.loads(path.read_text())
        rows = {spec: row["total"]["median"] for spec, row in data["modes"].items() if not row.get("error")}
        measured_on = "cuda" if str(data["device"]).startswith("cuda") else "cpu"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FoleyscopeError(f"--bench {path}: not a readable bench JSON ({exc})") from None
    if measured_on != device:
        raise FoleyscopeError(f"--bench {path}: measured on {measured_on}, this plan is for {device}")
    if not rows:
        raise FoleyscopeError(f"--bench {path}: no mode ran without error")
    return sorted(rows, key=rows.get)


def build_plan(estimates: list[Any], cards: list[float], gpu: float | None) -> dict[str, Any]:
    """Per mode its estimate; per card the fastest mode that fits; minimum and recommended cards."""
    from foleyscope.engine.memory import fastest_fitting

    modes = {e.mode: {"peak_bytes": e.peak, "peak_stage": e.peak_stage, "weights_bytes": sum(e.weights.values()),
                      "host_bytes": e.host, "weights": e.weights, "stages": {s: e.stage_weights[s] + a for s, a in
                                                                              e.activations.items()},
                      "smallest_card_gb": next((c for c in cards if e.fits(c)), None)} for e in estimates}
    fitting = {c: fastest_fitting(estimates, c) for c in cards}
    per_card = {f"{c:g}": ({"mode": e.mode, "peak_bytes": e.peak} if e else None) for c, e in fitting.items()}
    fits = [c for c in cards if fitting[c]]
    fastest = [c for c in cards if fitting[c] is estimates[0]]
    plan: dict[str, Any] = {"modes": modes, "cards": per_card, "shapes": estimates[0].shapes,
                            "minimum": _choice(fits[0], fitting) if fits else None,
                            "recommended": _choice(fastest[0], fitting) if fastest else None}
    if gpu is not None:
        plan["gpu"] = {"gb": gpu, **(_choice(gpu, fitting) or {"mode": None})}
    return plan


def _choice(card: float, fitting: dict[float, Any]) -> dict[str, Any] | None:
    e = fitting.get(card)
    return {"card_gb": card, "mode": e.mode, "peak_bytes": e.peak} if e else None


def render(plan: dict[str, Any]) -> None:
    from rich import box
    from rich.table import Table

    gib = 2**30
    console = stdout_console()
    if not console.is_terminal:
        console.width = max(console.width, 120)
    s = plan["shapes"]
    where = "GPU memory (max allocated)" if plan["device"] == "cuda" else "RSS growth of a CPU run"
    table = Table(title=f"{plan['preset']}, {plan['seconds']:g} s clip ({s['windows']} window(s) of {s['latent']} "
                        f"latents): peak {where}, modes ranked {plan['ranking']}", box=box.SIMPLE_HEAD)
    for name in ("mode", "weights GB", "peak GB", "at stage", "host RAM GB", "smallest card"):
        table.add_column(name, justify="left" if name in ("mode", "at stage") else "right")
    for spec, m in plan["modes"].items():
        card = f"{m['smallest_card_gb']:g} GB" if m["smallest_card_gb"] else "-"
        table.add_row(spec, f"{m['weights_bytes'] / gib:.2f}", f"{m['peak_bytes'] / gib:.2f}", m["peak_stage"],
                      f"{m['host_bytes'] / gib:.2f}", card)
    console.print(table)
    if plan["cards"]:
        cards = Table(title="fastest mode that fits each card (CUDA context and 8% allocator headroom included)",
                      box=box.SIMPLE_HEAD)
        for name in ("card", "mode", "peak GB"):
            cards.add_column(name, justify="right" if name != "mode" else "left")
        for card, c in plan["cards"].items():
            cards.add_row(f"{card} GB", c["mode"] if c else "nothing fits", f"{c['peak_bytes'] / gib:.2f}" if c else "")
        console.print(cards)
    if not plan["cards"]:
        import psutil

        console.print(f"this machine: {psutil.virtual_memory().total / gib:.1f} GiB of RAM, "
                      f"{psutil.virtual_memory().available / gib:.1f} GiB available", highlight=False)
        return
    for label in ("minimum", "recommended"):
        console.print(f"{label}: {_verdict(plan[label])}", highlight=False)
    if "gpu" in plan:
        console.print(f"your {plan['gpu']['gb']:g} GB card: {_verdict(plan['gpu'])}", highlight=False)


def _verdict(choice: dict[str, Any] | None) -> str:
    if not choice or not choice.get("mode"):
        return "no listed mode fits"
    return f"{choice['card_gb']:g} GB with {choice['mode']} (peak {choice['peak_bytes'] / 2**30:.2f} GB)"
