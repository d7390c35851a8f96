"""`foleyscope doctor`: run the engine on a video under tracing and sampling, audit the input (and a
server with --server), and print findings ranked by the seconds each fix would save."""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from foleyscope.commands.generate import add_engine_args, check_engine_args, job_settings
from foleyscope.engine.modes import Mode, mode_from_args
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
    p.add_argument("--repeat", type=int, default=3,
                   help="--try-fixes: runs of the baseline and of each fix (median compared, spread shown; default 3)")
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
    import shlex
    import sys

    command = shlex.join(sys.argv) if "doctor" in sys.argv[1:] else None  # not the argv of a caller of main()
    ctx = DiagnoseContext(video_path=str(args.video), input_info=info,  # meta: the report's header
                          meta={"video": str(args.video), "prompt": args.prompt, "command": command})
    if args.server:
        from foleyscope.doctor.checks.service import measure_service

        notice(f"auditing {args.server} ({args.parallel} parallel requests)...")
        ctx.service = measure_service(args.server, str(args.video), args.prompt, n_parallel=args.parallel)
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
    if args.repeat < 1:
        raise FoleyscopeError(f"--repeat must be at least 1, got {args.repeat}")
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


def _job(args: argparse.Namespace, preset: str, mode: Mode, video: Path, out_dir: Path,
         console: Any) -> Callable[[], Any]:
    """One complete run as a user would do it: load the pipeline, then run_job (as generate does)."""
    from foleyscope.engine.jobs import Job, run_job
    from foleyscope.engine.pipeline import FoleyPipeline
    from foleyscope.progress import StageProgress
    from foleyscope.trace import listening

    settings = {**job_settings(args), "seed": 0 if args.seed is None else args.seed}  # re-runs: the same noise
    job = Job(video, args.prompt, args.negative_prompt, out=out_dir / "doctor.wav", **settings)

    def run() -> Any:
        with StageProgress(console) as progress, listening(progress):
            pipe = FoleyPipeline.load(preset, args.weights, args.device, mode, frames=args.frames)
            return run_job(pipe, job)

    return run


def _diagnosed_run(args, preset: str, video: Path, ctx, console):
    from foleyscope.doctor.api import diagnose

    with tempfile.TemporaryDirectory(prefix="foleyscope-doctor-") as tmp:
        return diagnose(_job(args, preset, mode_from_args(args), video, Path(tmp), console), context=ctx,
                        sample_hz=args.sample_hz)


def _try_fixes(report, args, preset: str, console) -> None:
    """Apply the fixes that are a mode (`finding.fix_mode`) or an input change (`finding.fix_prep`)
    cumulatively, in rank order: each is measured against the configuration with every earlier fix that
    helped already applied (--repeat runs of each, medians compared, the spread shown), so savings add up
    and none is credited with another's. A fix measured no faster than the spread of the runs is not
    kept, and is ranked after every other.

    The first baseline is a re-run of the unchanged job, not the diagnosed run: re-runs in this process
    find caches warm (the dtype measurement, imports, the OS file cache), and comparing a warm fixed run
    with the cold first run would credit the first fix with that warm-up."""
    from foleyscope.doctor.finding import rank
    from foleyscope.engine.device import resolve_device
    from foleyscope.engine.modes import resolve

    mode = resolve(mode_from_args(args), resolve_device(args.device))  # measured already: cached
    todo = [f for f in report.findings if _fixed_mode(f, mode) is not None or f.fix_prep]
    for f in report.findings:
        if f not in todo:
            f.extra["try_fix"] = "not re-run: this fix changes code or deployment, not a mode or the input"
    if not todo:
        return
    notice(f"--try-fixes: {args.repeat} run(s) of the unchanged job for a warm baseline")
    with tempfile.TemporaryDirectory(prefix="foleyscope-fix-") as tmp:
        current = _Config(mode, {}, args.video, None)
        base = _runs(_job(args, preset, mode, args.video, Path(tmp), console), args.repeat)
        for order, finding in enumerate(todo, 1):
            trial = current.plus(finding, Path(tmp))
            notice(f"--try-fixes: {finding.id}: {trial.describe()}")
            try:
                video = trial.video()
            except FoleyscopeError as exc:
                finding.extra["try_fix"] = f"prep failed: {exc}"
                continue
            runs = _runs(_job(args, preset, trial.mode, video, Path(tmp), console), args.repeat)
            _record(finding, trial, base, runs, report.total_s)
            finding.extra["try_fix"]["order"] = order  # applied on top of the earlier ones that helped
            if finding.helped():
                current, base = trial, runs  # kept: the next fix is measured on top of this one
    report.findings = rank(report.findings)


class _Config:
    """A mode and the prep arguments applied so far; the input is prepped once per distinct set."""

    def __init__(self, mode: Mode, prep_kwargs: dict[str, Any], source: Path, prepped: Path | None) -> None:
        self.mode, self.prep_kwargs, self.source, self._prepped = mode, prep_kwargs, source, prepped
        self.prep_s: float | None = None
        self._dir: Path | None = None

    def plus(self, finding: Any, tmp: Path) -> _Config:
        mode = replace(self.mode, **(finding.fix_mode or {}))
        kwargs = {**self.prep_kwargs, **(finding.fix_prep or {})}
        made = _Config(mode, kwargs, self.source, self._prepped if kwargs == self.prep_kwargs else None)
        made._dir = tmp
        return made

    def describe(self) -> str:
        parts = [f"mode {self.mode.describe()}"]
        if self.prep_kwargs:
            parts.append("input prep'd (" + ", ".join(f"{k}={v}" for k, v in self.prep_kwargs.items()) + ")")
        return " + ".join(parts)

    def video(self) -> Path:
        if not self.prep_kwargs:
            return self.source
        if self._prepped is None:
            import time

            from foleyscope.media.prep import prep

            start = time.perf_counter()
            # one file per distinct set of arguments: an earlier, kept configuration may still use its own
            name = "prepped-" + "-".join(f"{k}{v}" for k, v in sorted(self.prep_kwargs.items())) + ".mp4"
            self._prepped = (self._dir or Path(tempfile.gettempdir())) / name
            prep(self.source, self._prepped, **self.prep_kwargs)
            self.prep_s = time.perf_counter() - start
        return self._prepped


def _record(finding: Any, trial: _Config, base: list[float], runs: list[float], first_run_s: float) -> None:
    base_s, fixed_s = round(statistics.median(base), 3), round(statistics.median(runs), 3)
    spread = round(max(max(runs) - min(runs), max(base) - min(base)), 3)
    saving = round(base_s - fixed_s, 3)  # from the printed numbers, so they add up
    finding.measured_saving_s = saving
    finding.extra["try_fix"] = {"change": trial.describe(), "baseline_s": base_s, "fixed_s": fixed_s,
                                "baseline_runs_s": [round(x, 3) for x in base],
                                "fixed_runs_s": [round(x, 3) for x in runs], "spread_s": spread,
                                # a saving within the runs' spread is noise: shown, but not counted as help
                                "within_noise": 0 < saving <= spread and len(runs) > 1,
                                "first_run_s": round(first_run_s, 3),
                                "prep_s": None if trial.prep_s is None else round(trial.prep_s, 3)}


def _runs(job: Callable[[], Any], repeat: int) -> list[float]:
    """Traced wall time of `repeat` runs of `job` (stage boundaries synchronise the device)."""
    from foleyscope.trace import Tracer

    times = []
    for _ in range(repeat):
        with Tracer() as tracer:
            job()
        times.append(tracer.total_s)
    return times


def _fixed_mode(finding: Any, mode: Mode) -> Mode | None:
    """The run's mode with the finding's override, or None if it has none or it changes nothing."""
    if not finding.fix_mode:
        return None
    fixed = replace(mode, **finding.fix_mode)
    return None if fixed == mode else fixed
