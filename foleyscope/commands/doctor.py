"""`foleyscope doctor`: run the engine on a video under tracing and sampling, audit the input (and a
server with --server), and print findings ranked by the seconds each fix would save."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from foleyscope.commands.generate import add_engine_args, check_engine_args
from foleyscope.errors import FoleyscopeError
from foleyscope.media.atomic import check_output_path
from foleyscope.progress import is_quiet, notice, stdout_console


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("doctor", help="diagnose why Foley inference is slow", description=__doc__)
    p.add_argument("video", nargs="?", type=Path, help="input video")
    add_engine_args(p)
    p.add_argument("--json", type=Path, default=None, help="write the full report as JSON")
    p.add_argument("--html", type=Path, default=None, help="write a self-contained HTML report")
    p.add_argument("--trace", type=Path, default=None, help="write a Chrome trace (Perfetto, chrome://tracing)")
    p.add_argument("--server", default=None, metavar="URL", help="also audit this HTTP endpoint (step 5)")
    p.add_argument("--parallel", type=int, default=4, help="concurrent requests for the --server audit")
    p.add_argument("--try-fixes", action="store_true", help="re-run with each applicable fix and measure it")
    p.add_argument("--sample-hz", type=float, default=10.0, help="resource sampling rate (default 10)")
    p.add_argument("--top", type=int, default=10,
                   help="findings listed in the terminal (default 10; 0: none, only their count; all are in "
                        "--json/--html)")
    p.add_argument("--list-checks", action="store_true", help="print every check id and exit")
    return p


def run(args: argparse.Namespace) -> int:
    if args.list_checks:
        return _list_checks()
    if args.video is None or args.prompt is None:
        raise FoleyscopeError("doctor needs a VIDEO and --prompt (or --list-checks)")
    preset = check_engine_args(args)
    _check_report_args(args)
    from foleyscope.media.probe import probe

    info = probe(args.video)  # the input is checked before torch is even imported
    from rich.console import Console

    from foleyscope.doctor.api import DiagnoseContext

    console = Console(stderr=True, quiet=is_quiet())
    ctx = DiagnoseContext(video_path=str(args.video), input_info=info)
    if args.server:
        from foleyscope.doctor.checks.service import check_service

        notice(f"auditing {args.server} ({args.parallel} parallel requests)...")
        ctx.service, ctx.service_findings = check_service(args.server, str(args.video), args.prompt,
                                                          n_parallel=args.parallel)
    report = _diagnosed_run(args, preset, args.video, ctx, console)
    if args.try_fixes:
        _try_fixes(report, args, preset, console)
    for path, write in ((args.json, report.to_json), (args.html, report.to_html), (args.trace, report.to_trace)):
        if path is not None:  # written before the terminal report, which a closed pipe (`| head`) may cut
            write(path)
            notice(f"wrote {path}")
    report.print_terminal(stdout_console(), top=args.top)
    return 0


def _check_report_args(args: argparse.Namespace) -> None:
    for flag, path, suffixes in (("--json", args.json, (".json",)), ("--html", args.html, (".html", ".htm")),
                                 ("--trace", args.trace, (".json",))):
        if path is not None and path.suffix.lower() not in suffixes:
            raise FoleyscopeError(f"{flag} {path}: must end in {' or '.join(suffixes)}")
        if path is not None:
            check_output_path(path)
    if args.parallel < 1 or args.sample_hz < 0:
        raise FoleyscopeError("--parallel must be >= 1 and --sample-hz >= 0")
    if args.top < 0:
        raise FoleyscopeError(f"--top must be 0 or more (0 lists no findings in the terminal), got {args.top}")


def _list_checks() -> int:
    from rich.table import Table

    from foleyscope.doctor.checks import all_checks

    table = Table("id", "step", "what it finds", box=None)
    for cid, (step, line) in sorted(all_checks().items(), key=lambda kv: (kv[1][0], kv[0])):
        table.add_row(cid, str(step), line)
    stdout_console().print(table)
    return 0


def _job(args: argparse.Namespace, preset: str, video: Path, dtype: str, out_dir: Path, console: Any,
         compile: bool | None = None):
    """One complete run as a user would do it: load, generate, write the audio."""
    from foleyscope.engine.pipeline import DEFAULT_NEGATIVE_PROMPT, FoleyPipeline
    from foleyscope.media.audio import write_audio
    from foleyscope.progress import StageProgress
    from foleyscope.stages import Stage
    from foleyscope.trace import stage

    def job() -> float:
        with StageProgress(console) as progress:
            pipe = FoleyPipeline.load(preset, args.weights, args.device, dtype, seed=0,
                                      compile=args.compile if compile is None else compile)
            negative = DEFAULT_NEGATIVE_PROMPT if args.negative_prompt is None else args.negative_prompt
            result = pipe(video, args.prompt, negative_prompt=negative,
                          steps=args.steps, cfg=args.cfg, solver=args.solver, seed=args.seed or 0,
                          progress=progress)
            with stage(Stage.POSTPROCESS):
                write_audio(out_dir / "doctor.wav", result.audio, result.sample_rate)
        return result.duration_s

    return job


def _diagnosed_run(args, preset: str, video: Path, ctx, console):
    from foleyscope.doctor.api import diagnose

    with tempfile.TemporaryDirectory(prefix="foleyscope-doctor-") as tmp:
        return diagnose(_job(args, preset, video, args.dtype, Path(tmp), console), context=ctx,
                        sample_hz=args.sample_hz)


def _fix_variant(finding, args) -> tuple[str, dict[str, Any]] | None:
    """What to change for a re-run that applies `finding`'s fix, or None if it cannot be re-run here."""
    if finding.id == "fp32_where_bf16_fast":
        return "run with --dtype bf16", {"dtype": "bf16"}
    if finding.id == "half_precision_slow":
        return "run with --dtype fp32", {"dtype": "fp32"}
    if finding.id == "compile_off":
        return "run with --compile (the first video pays the compile time)", {"compile": True}
    if finding.id in ("input_needs_normalising", "input_long_clip") and "argv" in finding.extra:
        return "run on the prep'd input", {"prep_argv": finding.extra["argv"]}
    return None


def _try_fixes(report, args, preset: str, console) -> None:
    """Re-run the same job once per applicable fix; measured saving = baseline total - fixed total.

    The baseline is a re-run of the unchanged job, not the diagnosed run: re-runs in this process find
    caches warm (the dtype probe, imports, the OS file cache), and comparing a warm fixed run with the
    cold first run would credit the fix with that warm-up."""
    import time

    from foleyscope.trace import Tracer

    if not any(_fix_variant(f, args) for f in report.findings):
        return
    notice("--try-fixes: re-running the unchanged job for a warm baseline")
    with tempfile.TemporaryDirectory(prefix="foleyscope-fix-") as tmp, Tracer() as tracer:
        _job(args, preset, args.video, args.dtype, Path(tmp), console)()
    baseline = tracer.total_s
    for finding in report.findings:
        variant = _fix_variant(finding, args)
        if variant is None:
            finding.extra["try_fix"] = "not re-run: this fix changes code or deployment, not a flag"
            continue
        what, change = variant
        notice(f"--try-fixes: {finding.id}: {what}")
        with tempfile.TemporaryDirectory(prefix="foleyscope-fix-") as tmp:
            video, prep_s = args.video, None
            if "prep_argv" in change:
                start = time.perf_counter()
                try:
                    video = _prep_quietly(change["prep_argv"], Path(tmp) / "prepped.mp4")
                except FoleyscopeError as exc:
                    finding.extra["try_fix"] = f"prep failed: {exc}"
                    continue
                prep_s = time.perf_counter() - start
            job = _job(args, preset, video, change.get("dtype", args.dtype), Path(tmp), console,
                       change.get("compile"))
            with Tracer() as tracer:
                job()
        base_s, fixed_s = round(baseline, 3), round(tracer.total_s, 3)
        finding.measured_saving_s = round(base_s - fixed_s, 3)  # from the printed numbers, so they add up
        finding.extra["try_fix"] = {"change": what, "baseline_s": base_s, "fixed_s": fixed_s,
                                    "first_run_s": round(report.total_s, 3),
                                    "prep_s": None if prep_s is None else round(prep_s, 3)}


def _prep_quietly(argv: list[str], out: Path) -> Path:
    """Run the finding's `foleyscope prep ...` command into a temp file, printing nothing (the temp path
    means nothing to the user, and stdout is the report's)."""
    from foleyscope.commands.prep import register
    from foleyscope.media.prep import prep

    parser = argparse.ArgumentParser(prog="foleyscope")
    p = register(parser.add_subparsers(dest="command"))
    args = p.parse_args(list(argv[2:]))
    prep(args.video, out, height=args.height, fps=args.fps, max_seconds=args.max_seconds, crf=args.crf,
         preset=args.preset)
    return out
