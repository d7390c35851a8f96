"""The `foleyscope` command. Each subcommand lives in foleyscope/commands/<name>.py and exposes
`register(subparsers)` and `run(args) -> int`. User errors print one line and exit 2."""

from __future__ import annotations

import argparse
import importlib
import sys

from foleyscope import __version__
from foleyscope.errors import FoleyscopeError

COMMANDS = ("probe", "prep", "generate", "convert", "doctor")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="foleyscope", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"foleyscope {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"foleyscope.commands.{name}")
        except ModuleNotFoundError as exc:  # a command not written yet
            if exc.name == f"foleyscope.commands.{name}":
                continue
            raise
        p = module.register(sub)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except FoleyscopeError as exc:
        print(f"foleyscope: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("foleyscope: interrupted", file=sys.stderr)
        return 130
