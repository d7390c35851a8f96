"""`foleyscope convert`: write safetensors copies of the official .pth checkpoints (faster, memory-mapped
loading that runs no pickle code). Dtypes are kept; the VAE's constructor kwargs go into the header."""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from foleyscope.engine.weight_paths import DENOISER_STEMS, SYNC_STEM, VAE_STEM
from foleyscope.errors import FoleyscopeError
from foleyscope.progress import duration, is_quiet, notice

CONVERTIBLE = (*DENOISER_STEMS.values(), VAE_STEM, SYNC_STEM)


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("convert", help="convert the official .pth checkpoints to safetensors",
                       description=__doc__)
    p.add_argument("--weights", type=Path, required=True, help="folder with the official .pth files")
    p.add_argument("-o", "--out-dir", type=Path, default=None,
                   help="where to write the .safetensors files (default: the --weights folder, where "
                        "`generate --weights` then prefers them)")
    p.add_argument("--force", action="store_true", help="overwrite conversions that already exist")
    return p


def plan(weights: Path, out_dir: Path) -> list[tuple[Path, Path]]:
    """(source, destination) for every official .pth present in `weights`."""
    if not weights.is_dir():
        raise FoleyscopeError(f"--weights {weights}: not a folder")
    pairs = [(weights / f"{stem}.pth", out_dir / f"{stem}.safetensors") for stem in CONVERTIBLE]
    pairs = [(src, dst) for src, dst in pairs if src.is_file()]
    if not pairs:
        names = ", ".join(f"{s}.pth" for s in CONVERTIBLE)
        raise FoleyscopeError(f"--weights {weights}: no official checkpoint found (looked for {names})")
    return pairs


def run(args: argparse.Namespace) -> int:
    weights: Path = args.weights.expanduser()
    out_dir: Path = (args.out_dir or weights).expanduser()
    from foleyscope.engine.weight_paths import check_checkpoint_file
    from foleyscope.engine.weights import read_checkpoint

    pairs = plan(weights, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    todo = []
    for src, dst in pairs:
        if dst.exists() and not args.force:
            notice(f"{dst.name}: exists, skipped (--force to redo)")
        elif src.resolve() == dst.resolve():
            raise FoleyscopeError(f"{src}: source and destination are the same file")
        else:
            todo.append((src, dst))
    for src, _ in todo:  # every source must read (cheap: memory-mapped) before minutes of writing start
        check_checkpoint_file(src)
        read_checkpoint(src)
    need = sum(src.stat().st_size for src, _ in todo)
    free = shutil.disk_usage(out_dir).free
    if need > free:
        raise FoleyscopeError(f"{out_dir}: {need / 1e9:.1f} GB needed, only {free / 1e9:.1f} GB free")
    rows = _convert_all(todo)
    if rows and not is_quiet():
        _print_table(rows, out_dir)
    return 0


def _convert_all(todo: list[tuple[Path, Path]]) -> list[tuple[str, str, str]]:
    """Convert each file with a byte-count bar on a terminal, a line per file in a log; (name, size, time) rows."""
    from rich.console import Console

    from foleyscope.engine.weights import convert_to_safetensors

    console = Console(stderr=True)
    rows = []
    with _bar(console) as bar:
        for src, dst in todo:
            task = bar.add_task(dst.name, total=src.stat().st_size) if bar else None
            if bar is None:
                notice(f"converting {src.name} ({src.stat().st_size / 1e6:,.1f} MB)")
            start = time.perf_counter()
            convert_to_safetensors(src, dst, progress=(
                lambda done, total, t=task: bar.update(t, completed=done, total=total)) if bar else None)
            seconds = time.perf_counter() - start
            rows.append((dst.name, f"{dst.stat().st_size / 1e6:,.1f} MB", duration(seconds)))
    return rows


def _bar(console):
    """A compact rich bar (fits 80 columns) on a terminal; otherwise a null context yielding None."""
    import contextlib

    if is_quiet() or not console.is_terminal:
        return contextlib.nullcontext(None)
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(bar_width=20), DownloadColumn(),
                    TimeRemainingColumn(compact=True), console=console, transient=True)


def _print_table(rows: list[tuple[str, str, str]], out_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    notice(f"converted into {out_dir}:")
    table = Table("file", "size", "time")
    table.columns[1].justify = table.columns[2].justify = "right"
    for name, size, took in rows:
        table.add_row(name, size, took)
    Console(stderr=True).print(table)
