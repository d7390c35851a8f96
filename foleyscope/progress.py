"""Rich progress display for the pipeline's (stage, done, total) callbacks."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class StageProgress:
    """One bar per stage, created when the stage starts; the denoise bar counts steps."""

    def __init__(self, console: Console | None = None, label: str = ""):
        self.progress = Progress(
            TextColumn("{task.description:<28}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console or Console(stderr=True),
            transient=False,
        )
        self.label = label
        self.tasks: dict[str, int] = {}

    def __enter__(self) -> StageProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, stage: str, done: int, total: int) -> None:
        key = f"{self.label}{stage}"
        if key not in self.tasks:
            self.tasks[key] = self.progress.add_task(f"{self.label}{stage}", total=total)
        self.progress.update(self.tasks[key], completed=done, total=total)
