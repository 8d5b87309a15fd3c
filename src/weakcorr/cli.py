"""The ``weakcorr`` command line: thin parsing over the library.

Each subcommand lives in ``weakcorr._commands.<name>`` and exposes
``add_parser(subparsers)`` (which sets ``func`` on its parser) so that the
commands stay independent; this module only assembles them and handles errors.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import os
import signal
import sys
import threading
from collections.abc import Iterator

# Subcommand modules under weakcorr._commands, in the order `weakcorr --help` lists them.
COMMANDS: tuple[str, ...] = ("correlations", "sweep", "report", "demo", "a1", "diagnose")


class UsageError(ValueError):
    """Bad input from the command line: printed as one line, exit code 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is: runs in flight are abandoned, their claims released."""


# Commands that run sweeps: an interruption keeps finished runs and resumes.
_RESUMABLE = {"sweep", "demo", "a1"}


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) in the
    main thread, so a sweep stopped by ``kill`` or a batch scheduler unwinds like Ctrl-C:
    workers stopped, claims released, a message. No-op outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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


def _file_in_the_way(path: str) -> str | None:
    """The first existing component of ``path`` that is not a directory (ENOTDIR's culprit)."""
    parts = os.path.normpath(path).split(os.sep)
    for k in range(1, len(parts)):
        head = os.sep.join(parts[:k]) or os.sep
        if os.path.lexists(head) and not os.path.isdir(head):
            return head
    return None


def os_error_message(err: OSError, out: str | None = None) -> str:
    """One line for an OSError of a command: the path, the system's reason and the fix.

    Errors raised with a message of our own (no ``strerror``) are shown as they are. A path
    under ``out`` (the command's ``--out``) names the flag.
    """
    if not err.strerror:
        return str(err)
    reason = f"{err.strerror} [Errno {err.errno}]" if err.errno else err.strerror
    path = err.filename
    if path is None:
        return reason
    path = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else str(path)
    what = f"{path!r}: {reason}"
    if err.filename2 is not None:
        what = f"{path!r} -> {os.fsdecode(err.filename2)!r}: {reason}"
    if err.errno == errno.ENOTDIR:
        blocker = _file_in_the_way(path)
        if blocker is not None:
            what += f" ({blocker!r} is a file)"
    if out is not None:
        root, full = os.path.abspath(out), os.path.abspath(path)
        # the directory itself, a file in it, or a parent that could not be created
        if full == root or full.startswith(root + os.sep) or root.startswith(full + os.sep):
            if full == root and err.filename2 is None:
                what = what[len(f"{path!r}: "):]
            return (f"`--out` {out!r}: {what}; pass a directory that can be created or "
                    "written to as --out")
    return f"{what}; check the path and its permissions"


def main(argv: list[str] | None = None) -> int:
    from ._memory import tune_malloc

    tune_malloc()  # reuse freed blocks across steps instead of unmapping them (glibc only)
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        with sigterm_as_interrupt():
            return int(args.func(args) or 0)
    except ValueError as err:
        print(f"weakcorr {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # FileNotFoundError (a message of ours), FileExistsError, EACCES, ...
        message = os_error_message(err, getattr(args, "out", None))
        print(f"weakcorr {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        term = isinstance(err, Terminated)
        how = "interrupted (SIGTERM)" if term else "interrupted"
        more = ("; finished runs are kept and the claims of runs in flight released: rerun the "
                "same command to resume") if args.command in _RESUMABLE else ""
        print(f"weakcorr {args.command}: {how}{more}", file=sys.stderr)
        return 143 if term else 130


if __name__ == "__main__":
    raise SystemExit(main())
