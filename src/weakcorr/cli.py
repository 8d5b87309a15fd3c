"""The ``weakcorr`` command line: thin parsing over the library.

Each subcommand lives in ``weakcorr._commands.<name>`` and exposes
``add_parser(subparsers)`` (which sets ``func`` on its parser) so that the
commands stay independent; this module only assembles them and handles errors.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Subcommand modules under weakcorr._commands, in the order `weakcorr --help` lists them.
COMMANDS: tuple[str, ...] = ("correlations", "sweep", "report", "demo", "a1", "diagnose")


class UsageError(ValueError):
    """Bad input from the command line: printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="weakcorr",
        description="Exact derivative correlations and linearization diagnostics for PyTorch models.",
    )
    parser.add_argument("--version", action="version", version=f"weakcorr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"weakcorr._commands.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ._memory import tune_malloc

    tune_malloc()  # reuse freed blocks across steps instead of unmapping them (glibc only)
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        print(f"weakcorr {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"weakcorr {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
