"""The `foleyscope` command. Each subcommand lives in foleyscope/commands/<name>.py and exposes
`register(subparsers)` and `run(args) -> int`. User errors print one line and exit 2; SIGINT exits 130,
SIGTERM 143, both after removing temp files. Only the chosen command's module is imported, so a bad
argument is answered before torch is."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import select
import signal
import sys
import threading
from collections.abc import Iterator

from foleyscope import __version__
from foleyscope.errors import FoleyscopeError
from foleyscope.progress import set_quiet

COMMANDS = ("probe", "prep", "generate", "convert", "doctor", "bench", "plan", "serve", "worker")
DESCRIPTION = ("Generate Foley audio for videos with HunyuanVideo-Foley models, and diagnose why that "
               "inference is slow.")


class Terminated(BaseException):
    """SIGTERM, raised in the main thread like KeyboardInterrupt so `finally` blocks remove temp files."""


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="foleyscope", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"foleyscope {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bars or notices; warnings and errors still print")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _wanted(sys.argv[1:] if argv is None else argv):
        try:
            module = importlib.import_module(f"foleyscope.commands.{name}")
        except ModuleNotFoundError as exc:  # a command not written yet
            if exc.name == f"foleyscope.commands.{name}":
                continue
            raise
        p = module.register(sub)
        p.set_defaults(_run=module.run)
    return parser


def _wanted(argv: list[str]) -> tuple[str, ...]:
    """The command named in argv (top-level options take no values), or all of them for help/usage."""
    for arg in argv:
        if arg in COMMANDS:
            return (arg,)
        if not arg.startswith("-"):
            break
    return COMMANDS


def main(argv: list[str] | None = None) -> int:
    args = build_parser(argv).parse_args(argv)
    set_quiet(args.quiet)
    try:
        with _sigterm_raises():
            return int(args._run(args) or 0)
    except FoleyscopeError as exc:
        print(f"foleyscope: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("foleyscope: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("foleyscope: terminated", file=sys.stderr)
        return 143
    except BrokenPipeError:
        if not _stdout_closed():
            raise
        _silence_stdout()  # the reader (`| head`) has what it wanted; report files were written first
        return 0
    finally:
        set_quiet(False)


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Handle SIGTERM like SIGINT while a command runs (a second SIGTERM kills at once)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stdout_closed() -> bool:
    """Whether stdout is a pipe whose reader has gone (not some other socket or pipe breaking)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass
