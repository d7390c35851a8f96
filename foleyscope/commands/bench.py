"""`foleyscope bench`: the engine's modes side by side on one video: time per stage (median and range
over repeats, after a warm-up), speed-up against the first mode, peak memory, clips per minute at
each batch size, and drift from the first mode's output (same seed, same noise).

Every argument, the video and each mode (can it run on this device?) are checked before any model
loads. A mode that fails at run time is reported in its row; the others still run."""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
from pathlib import Path
from typing import Any

from foleyscope.commands.generate import add_engine_args, check_engine_args
from foleyscope.engine.modes import mode_from_args, parse_mode
from foleyscope.errors import FoleyscopeError
from foleyscope.media.atomic import atomic_output, check_output_path
from foleyscope.progress import is_quiet, notice, stdout_console

MAX_REPEAT = 100
MAX_BATCH = 64
DEFAULT_MODES = "fp32,bf16"
CPU_FLAGS = ("avx512_bf16", "avx512_vnni", "avx512_fp16", "amx_bf16", "amx_int8", "amx_tile", "amx_fp16")


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("bench", help="compare the engine's modes on one video: speed, memory, drift",
                       description=__doc__)
    p.add_argument("video", nargs="?", type=Path, help="input video")
    add_engine_args(p)
    p.add_argument("--modes", default=DEFAULT_MODES,
                   help="comma-separated mode specs, the first is the reference: e.g. fp32,bf16,bf16+compile,"
                        f"int8wo,int8dq,bf16+cache (default {DEFAULT_MODES}); each on top of the mode flags")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per mode after the warm-up (default 3)")
    p.add_argument("--batch", default="1", help="batch sizes for throughput, comma-separated (default 1)")
    p.add_argument("--json", type=Path, default=None, help="write the results as JSON (keys: the modes' specs)")
    p.add_argument("--random-weights", action="store_true",
                   help="seeded random weights for any preset (speed and memory only; SigLIP2/CLAP are tiny "
                        "stand-ins)")
    return p


def run(args: argparse.Namespace) -> int:
    requested, batches = _check_args(args)
    preset = _check_preset(args)
    from foleyscope.media.probe import probe

    duration = probe(args.video).duration_s
    spec, modes = _resolved(args, preset, requested, batches, duration)
    from foleyscope.engine.bench import bench

    if args.weights is None:
        notice(f"{preset}: seeded random weights: times and memory are real, the sound is noise.")
    write = (lambda results: _write_json(args.json, spec, results)) if args.json else None
    with BenchProgress(1 + len(modes) * (1 + len(batches) * (1 + args.repeat))) as progress:
        results = bench(spec, modes, phase=progress.phase, listener=progress, on_result=write)
    render(results, spec)
    if args.json:
        notice(f"wrote {args.json}")
    failed = [r for r in results if r.error]
    for r in failed:
        print(f"foleyscope: error: mode {r.requested} ({r.spec}) failed: {r.error}", file=sys.stderr)
    return 1 if failed else 0


def _check_args(args: argparse.Namespace) -> tuple[list[str], tuple[int, ...]]:
    """Everything that needs no torch: counts, batch sizes, mode names, the JSON path."""
    if args.video is None or args.prompt is None:
        raise FoleyscopeError("bench needs a VIDEO and --prompt")
    if not 1 <= args.repeat <= MAX_REPEAT:
        raise FoleyscopeError(f"--repeat must be 1 to {MAX_REPEAT}, got {args.repeat}")
    try:
        batches = tuple(dict.fromkeys(int(b) for b in args.batch.split(",")))
    except ValueError:
        raise FoleyscopeError(f"--batch {args.batch}: expected sizes like 1,4") from None
    if not all(1 <= b <= MAX_BATCH for b in batches):
        raise FoleyscopeError(f"--batch {args.batch}: each size must be 1 to {MAX_BATCH}")
    requested = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not requested:
        raise FoleyscopeError("--modes: give at least one mode, e.g. fp32,bf16")
    base = mode_from_args(args)
    for name in requested:
        parse_mode(name, base)  # unknown parts are named here, before torch is imported
    if args.json is not None:
        if args.json.suffix.lower() != ".json":
            raise FoleyscopeError(f"--json {args.json}: the file name must end in .json")
        check_output_path(args.json)
    return requested, batches


def _check_preset(args: argparse.Namespace) -> str:
    """The engine options; --random-weights lets any preset run without --weights."""
    if not args.random_weights:
        return check_engine_args(args)
    if args.weights is not None:
        raise FoleyscopeError("give --weights or --random-weights, not both")
    check_engine_args(argparse.Namespace(**{**vars(args), "preset": "tiny"}))  # steps, cfg, seed
    return args.preset or "tiny"


def _resolved(args: argparse.Namespace, preset: str, requested: list[str], batches: tuple[int, ...],
              duration: float) -> tuple[Any, list[tuple[str, Any]]]:
    """Each mode made concrete for the device (CUDA-only ones refused here), and the bench's spec."""
    from foleyscope.engine.bench import BenchSpec
    from foleyscope.engine.device import resolve_device
    from foleyscope.engine.jobs import DEFAULT_NEGATIVE_PROMPT
    from foleyscope.engine.modes import resolve
    from foleyscope.engine.presets import get_preset

    window = get_preset(preset).window_s
    if max(batches) > 1 and duration > window:
        raise FoleyscopeError(f"--batch {args.batch}: batching videos needs a clip of at most {window:g} s "
                              f"(one model window); this one is {duration:.1f} s")
    device = resolve_device(args.device)
    base = mode_from_args(args)
    modes, seen = [], {}
    for name in requested:
        mode = resolve(parse_mode(name, base), device)
        if mode.spec in seen:
            raise FoleyscopeError(f"--modes: {name} and {seen[mode.spec]} are the same mode here ({mode.spec})")
        seen[mode.spec] = name
        modes.append((name, mode))
    negative = DEFAULT_NEGATIVE_PROMPT if args.negative_prompt is None else args.negative_prompt
    spec = BenchSpec(args.video, args.prompt, negative, preset, args.weights, str(device), args.frames, args.steps,
                     args.cfg, args.solver, 0 if args.seed is None else args.seed, args.repeat, batches)
    return spec, modes


# -- output ---------------------------------------------------------------------------------------------


def to_json(spec: Any, results: list[Any]) -> dict[str, Any]:
    """The whole run; `modes` is keyed by each mode's spec, in the order run (the first is the reference)."""
    import torch

    return {"video": str(spec.video), "prompt": spec.prompt, "preset": getattr(spec.preset, "name", spec.preset),
            "device": spec.device, "machine": machine(spec.device), "torch": torch.__version__,
            "steps": spec.steps, "cfg": spec.cfg, "solver": spec.solver, "seed": spec.seed, "repeat": spec.repeat,
            "batches": list(spec.batches), "reference": next((r.spec for r in results if not r.error), None),
            "modes": {r.spec: _mode_json(r) for r in results}}


def _mode_json(r: Any) -> dict[str, Any]:
    return {"requested": r.requested, "describe": r.mode.describe(), "error": r.error, "load_s": r.load_s,
            "warmup_s": r.warmup_s, "stages": {k: v.to_dict() for k, v in r.stages.items()},
            "total": r.total.to_dict() if r.total.values else None, "speedup": r.speedup,
            "memory_kind": r.memory_kind, "peak_bytes": r.peak_bytes, "growth_bytes": r.growth_bytes,
            "clips_per_min": {str(b): v.to_dict() for b, v in r.throughput.items()},
            "batch_peak_bytes": {str(b): v for b, v in r.batch_peak_bytes.items()},
            "drift": r.drift, "repeat_drift_latents": r.repeat_drift,
            "cache_steps": dict(zip(("computed", "skipped"), r.cache_steps, strict=True)) if r.cache_steps else None}


def _write_json(path: Path, spec: Any, results: list[Any]) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(to_json(spec, results), indent=2) + "\n")


def machine(device: str) -> dict[str, Any]:
    """What the numbers were measured on: the CPU and the flags that decide bf16/int8 speed, the GPU."""
    info: dict[str, Any] = {"cpu": platform.processor() or platform.machine(), "cpu_flags": []}
    try:
        text = Path("/proc/cpuinfo").read_text()
        model = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        info["cpu"] = model.group(1).strip() if model else info["cpu"]
        flags = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
        info["cpu_flags"] = sorted(set(flags.group(1).split()) & set(CPU_FLAGS)) if flags else []
    except OSError:
        pass
    if device.startswith("cuda"):
        import torch

        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


STAGE_COLUMNS = (("decode", "decode"), ("visual_encode", "visual"), ("text_encode", "text"),
                 ("sync_encode", "sync"), ("denoise", "denoise"), ("vae_decode", "vae"))


def render(results: list[Any], spec: Any) -> None:
    """Two rich tables on stdout: stage times, then speed-up, memory, throughput and drift. Unwrapped
    in a log or a pipe (rich would fold them at 80 columns)."""
    console = stdout_console()
    if not console.is_terminal:
        console.width = max(console.width, 160)
    console.print(stage_table(results, spec))
    console.print(summary_table(results, spec))


def _title(spec: Any, what: str) -> str:
    preset = getattr(spec.preset, "name", spec.preset)
    return f"{what} ({preset} on {spec.device}, {spec.steps} steps, median of {spec.repeat} +- half the range)"


def stage_table(results: list[Any], spec: Any) -> Any:
    from rich import box
    from rich.table import Table

    table = Table(title=_title(spec, "seconds per stage"), box=box.SIMPLE_HEAD)
    table.add_column("mode")
    for _, label in STAGE_COLUMNS:
        table.add_column(label, justify="right")
    table.add_column("total", justify="right")
    for r in results:
        if r.error:
            table.add_row(r.spec, *["-"] * (len(STAGE_COLUMNS) + 1))
            continue
        cells = [_runs(r.stages[name]) if name in r.stages else "-" for name, _ in STAGE_COLUMNS]
        table.add_row(r.spec, *cells, _runs(r.total))
    return table


def summary_table(results: list[Any], spec: Any) -> Any:
    from rich import box
    from rich.table import Table

    kind = "CUDA" if any(r.memory_kind == "cuda_max_allocated" for r in results) else "RSS"
    cached = any(r.cache_steps for r in results)
    table = Table(title=_title(spec, f"against {results[0].spec}"), box=box.SIMPLE_HEAD)
    names = ("mode", "speed-up", "load s", f"peak {kind} GB", *(f"clips/min @{b}" for b in spec.batches),
             "latents L2", "audio L2", "log-mel dB", *(["steps run/skipped"] if cached else []))
    for name in names:
        table.add_column(name, justify="left" if name == "mode" else "right")
    for r in results:
        if r.error:
            table.add_row(r.spec, "failed", *[""] * (len(names) - 2))
            continue
        throughput = [_runs(r.throughput[b], 1) if b in r.throughput else "-" for b in spec.batches]
        d = r.drift
        cache = [f"{r.cache_steps[0]}/{r.cache_steps[1]}" if r.cache_steps else "-"] if cached else []
        table.add_row(r.spec, f"{r.speedup:.2f}x", f"{r.load_s:.1f}", f"{r.peak_bytes / 2**30:.2f}", *throughput,
                      f"{d['latents_rel_l2']:.1e}", f"{d['audio_rel_l2']:.1e}", f"{d['log_mel_db']:.2f}", *cache)
    return table


def _runs(runs: Any, digits: int = 2) -> str:
    return f"{runs.median:.{digits}f} +-{runs.spread:.{digits}f}"


class BenchProgress:
    """An overall bar over every load, warm-up and timed run, and one for the current stage's steps;
    one line per phase in a log; nothing with --quiet."""

    def __init__(self, phases: int) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.phases = phases
        self.bars: Any = None
        if not is_quiet() and self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bars = Progress(TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=self.console, transient=True)
            self.overall = self.bars.add_task("bench", total=phases)
            self.current = self.bars.add_task("", total=1)
        self.done = 0

    def __enter__(self) -> BenchProgress:
        if self.bars is not None:
            self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bars is not None:
            self.bars.stop()

    def phase(self, text: str) -> None:
        if self.bars is not None:
            self.bars.update(self.overall, completed=self.done, description=f"bench: {text}")
        elif not is_quiet():
            notice(f"bench [{self.done + 1}/{self.phases}] {text}")
        self.done += 1

    def __call__(self, event: Any) -> None:
        """The engine's Progress events: the current stage, and its steps while denoising."""
        if self.bars is None:
            return
        if event.kind == "start":
            self.bars.update(self.current, description=f"  {event.stage}", completed=0, total=max(1, event.total))
        elif event.kind == "end":
            self.bars.update(self.current, completed=max(1, event.total))
        elif event.unit == "steps":
            self.bars.update(self.current, completed=event.done)
