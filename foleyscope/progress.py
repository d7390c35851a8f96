"""What the commands say on stderr while they work: progress from the engine's Progress events
(foleyscope.trace), notices and warnings. Rich bars on a terminal; one plain line per event when stderr is a
log or a pipe (bars there are unreadable escape codes); nothing but warnings and errors with --quiet."""

from __future__ import annotations

import sys
import time
from typing import Any

from foleyscope.trace.events import Progress

_QUIET = False
LOG_EVERY = 0.1  # log mode: a line every 10% of a multi-step stage (the denoising steps)


def set_quiet(quiet: bool) -> None:
    """--quiet (set by cli.main): no progress, no notices. Warnings and errors still print."""
    global _QUIET
    _QUIET = quiet


def is_quiet() -> bool:
    return _QUIET


def notice(text: str) -> None:
    """One status line on stderr. Plain print, not rich: never hard-wrapped, no markup read from paths."""
    if not _QUIET:
        print(text, file=sys.stderr, flush=True)


def warn(text: str) -> None:
    """One line about input we could not use as given; printed even with --quiet."""
    print(f"foleyscope: warning: {text}", file=sys.stderr, flush=True)


def stdout_console() -> Any:
    """A rich console on stdout that lets a closed pipe (`| head`) raise BrokenPipeError, which cli.main
    ends quietly, instead of rich's own exit(1)."""
    from rich.console import Console

    class PipeConsole(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError

    return PipeConsole()


def duration(seconds: float) -> str:
    """Seconds in the unit a person reads: 35 ms, 4.2 s, 3:07."""
    if seconds < 0.1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes}:{secs:02d}"


class StageProgress:
    """The engine's progress listener: `progress(event)`. Use as a context manager.

    Picks its display from the console: bars on a terminal, log lines elsewhere, nothing when quiet."""

    def __init__(self, console: Any = None, label: str = ""):
        if console is None:
            from rich.console import Console

            console = Console(stderr=True)
        if _QUIET:
            self.display: _Display = _Display()
        elif console.is_terminal:
            self.display = _Bars(console, label)
        else:
            self.display = _LogLines(label)

    def __enter__(self) -> StageProgress:
        self.display.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.display.stop(failed=exc_type is not None)

    def __call__(self, event: Progress) -> None:
        """A Progress listener: stage start/end and steps; decode's seconds-of-video move only a bar."""
        total = max(1, int(event.total)) if event.unit == "steps" else event.total
        if event.kind == "start":
            self.display.update(event.stage, 0, total)
        elif event.kind == "end":
            self.display.update(event.stage, total, total)
        elif event.unit == "steps":
            self.display.update(event.stage, int(event.done), total)
        elif isinstance(self.display, _Bars) and total:
            self.display.update(event.stage, min(event.done, total) / total, 1)


class _Display:
    """Shows nothing (--quiet)."""

    def start(self) -> None:
        pass

    def stop(self, failed: bool) -> None:
        pass

    def update(self, stage: str, done: int, total: int) -> None:
        pass


class _LogLines(_Display):
    """One plain line when a stage starts and ends, and every 10% of a multi-step stage, with an ETA."""

    def __init__(self, label: str):
        self.label = label
        self.started: dict[str, float] = {}
        self.next_mark: dict[str, float] = {}
        self.ended: set[str] = set()

    def update(self, stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        if stage not in self.started:
            self.started[stage] = now
            self.next_mark[stage] = LOG_EVERY
            self._line(f"{stage}: started" + (f", {total} steps" if total > 1 else ""))
        if stage in self.ended:
            return
        elapsed = now - self.started[stage]
        if done >= total:
            self.ended.add(stage)
            self._line(f"{stage}: done in {duration(elapsed)}")
        elif total > 1 and done > 0 and done / total >= self.next_mark[stage] - 1e-9:
            self.next_mark[stage] = (int(done / total / LOG_EVERY + 1e-9) + 1) * LOG_EVERY
            eta = elapsed / done * (total - done)
            self._line(f"{stage}: {done}/{total} ({done / total:.0%}), {duration(elapsed)}, ETA {duration(eta)}")

    def _line(self, text: str) -> None:
        print(f"{self.label}{text}", file=sys.stderr, flush=True)


class _Bars(_Display):
    """Rich bars, one per stage; the multi-step ones show an ETA. Cleared if the run fails, so the error
    line is the last thing on the screen."""

    def __init__(self, console: Any, label: str):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.label = label
        self.tasks: dict[str, Any] = {}
        self.progress = Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), _eta_column(), console=console)

    def start(self) -> None:
        self.progress.start()

    def stop(self, failed: bool) -> None:
        if failed:
            self.progress.live.transient = True
        self.progress.stop()

    def update(self, stage: str, done: int, total: int) -> None:
        key = f"{self.label}{stage}"
        if key not in self.tasks:
            self.tasks[key] = self.progress.add_task(key, total=total)
        self.progress.update(self.tasks[key], completed=done, total=total)


def _eta_column() -> Any:
    from rich.progress import ProgressColumn
    from rich.text import Text

    class EtaColumn(ProgressColumn):
        """'ETA 0:12' while a multi-step stage runs; blank for one-step stages and when done."""

        def render(self, task: Any) -> Text:
            if task.finished or not task.total or task.total <= 1 or task.time_remaining is None:
                return Text("")
            return Text(f"ETA {duration(task.time_remaining)}", style="progress.remaining")

    return EtaColumn()
