"""What keeps a local Dask cluster to its owner, and its messages off the terminal.

Used by :class:`weakcorr._executors.DaskLocalExecutor`: temporary TLS credentials (or a refusal
to start without them), no dashboard unless asked for, and Dask's (and tornado's, asyncio's)
log messages routed to a private file. dask.distributed is imported only when called.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from typing import Any

__all__ = ["temporary_security"]

_TLS_MISSING = ("--executor dask-local runs its cluster over TLS with temporary credentials, "
                "which needs the `cryptography` package (not installed); it refuses to start "
                "an unauthenticated cluster that any local user could run code on. Install it "
                "via `pip install weakcorr[dask]` (or `pip install cryptography`)")


def _dashboard_address(wanted: bool) -> str | None:
    if not wanted:
        return None
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return None  # without bokeh, Dask has no dashboard to serve
    return "127.0.0.1:0"


def temporary_security() -> Any:
    """``distributed.security.Security.temporary()``: a fresh self-signed CA and certificate,
    TLS required on every connection (client, scheduler, workers).

    Raises:
        ValueError: ``cryptography`` is missing (``pip install weakcorr[dask]``).
    """
    from distributed.security import Security

    try:
        return Security.temporary()
    except ImportError:
        raise ValueError(_TLS_MISSING) from None


_DASK_LOGGERS = ("distributed", "tornado", "asyncio")


def _restore_logs(saved: list[tuple[Any, Any, int, bool]]) -> None:
    """Undo :func:`_log_to_file` (``saved`` is emptied): our handler removed and closed, the
    terminal handlers it took off put back, levels and propagation as they were."""
    ours = saved[0][1] if saved else None
    while saved:
        log, handler, level, propagate = saved.pop()  # reversed: a logger's first entry last
        if handler is ours:
            log.removeHandler(handler)
        else:
            log.addHandler(handler)
        log.setLevel(level)
        log.propagate = propagate
    if ours is not None:
        ours.close()
        ours.stream.close()  # a StreamHandler leaves its stream open


def _log_to_file() -> tuple[str, list[tuple[Any, Any, int, bool]]]:
    """Route Dask's log messages (and tornado's/asyncio's) to a new private file.

    Returns:
        The file's path and what to restore (:func:`_restore_logs`): (logger, handler, old
        level, old propagate) per change.
    """
    fd, path = tempfile.mkstemp(prefix="weakcorr-dask-", suffix=".log")  # O_EXCL, mode 0600
    handler = logging.StreamHandler(os.fdopen(fd, "a", encoding="utf-8"))
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    saved = []
    for name in _DASK_LOGGERS:
        log = logging.getLogger(name)
        saved.append((log, handler, log.level, log.propagate))
        log.addHandler(handler)
        log.setLevel(logging.WARNING)
        log.propagate = False  # not to the root logger (the terminal)
        for h in list(log.handlers):
            if h is not handler and isinstance(h, logging.StreamHandler) and getattr(
                    h, "stream", None) in (sys.stderr, sys.stdout):
                log.removeHandler(h)
                saved.append((log, h, log.level, log.propagate))
    return path, saved
