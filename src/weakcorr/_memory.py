"""Memory-budget chunking: how many items of a vmapped computation fit in a budget.

Generic helpers (no weakcorr imports): a computation that holds ``bytes_per_item``
bytes of working memory for each item of a batch is split into chunks whose
working set stays below ``max_memory_gb``.  Used by :mod:`weakcorr.correlations`
(per-(input, output) gradient blocks) and available to the other math modules.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

__all__ = ["GIB", "balanced_chunks", "check_memory_budget", "chunk_size_for", "peak_rss_bytes"]

GIB = 1024**3


def check_memory_budget(max_memory_gb: float) -> float:
    """Validate a memory budget in GiB and return it as a float.

    Raises:
        ValueError: if ``max_memory_gb`` is not a finite number > 0.
    """
    try:
        value = float(max_memory_gb)
    except (TypeError, ValueError):
        raise ValueError(
            f"`max_memory_gb` must be a number of GiB > 0, got {max_memory_gb!r}; "
            "pass e.g. max_memory_gb=4."
        ) from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"`max_memory_gb` must be a finite number of GiB > 0, got {max_memory_gb!r}; "
            "pass e.g. max_memory_gb=4."
        )
    return value


def chunk_size_for(
    bytes_per_item: int | float,
    max_memory_gb: float,
    *,
    n_items: int | None = None,
    reserved_bytes: int | float = 0,
) -> int:
    """The largest number of items whose working memory fits in the budget.

    Args:
        bytes_per_item: working memory one item needs (bytes, > 0).
        max_memory_gb: the budget in GiB (> 0).
        n_items: if given, the result is capped at it (and at least 1).
        reserved_bytes: memory already spoken for (model, outputs), subtracted first.

    Returns:
        A chunk size >= 1 (one item is always allowed, even over budget: the caller
        cannot split an item further).

    Example:
        >>> chunk_size_for(1024**3, 4)
        4
        >>> chunk_size_for(100, 4, n_items=10)
        10
    """
    budget = check_memory_budget(max_memory_gb) * GIB - float(reserved_bytes)
    if not bytes_per_item > 0:
        raise ValueError(f"`bytes_per_item` must be > 0, got {bytes_per_item!r}.")
    size = max(1, int(budget // float(bytes_per_item)))
    if n_items is not None:
        size = max(1, min(size, int(n_items)))
    return size


def balanced_chunks(n_items: int, max_chunk: int) -> Iterator[slice]:
    """Split ``range(n_items)`` into the fewest chunks of at most ``max_chunk``, evenly sized.

    Fewer, larger groups are faster than many small ones for vmapped work; equal sizes
    avoid a tiny last chunk.

    Example:
        >>> [(s.start, s.stop) for s in balanced_chunks(10, 4)]
        [(0, 4), (4, 7), (7, 10)]
    """
    if n_items <= 0:
        return
    max_chunk = max(1, int(max_chunk))
    n_chunks = -(-n_items // max_chunk)
    base, extra = divmod(n_items, n_chunks)
    start = 0
    for c in range(n_chunks):
        stop = start + base + (1 if c < extra else 0)
        yield slice(start, stop)
        start = stop


def tune_malloc() -> bool:
    """Keep freed memory in the glibc heap instead of returning it to the OS each step.

    Training and correlation steps allocate and free the same large blocks again and
    again; glibc's defaults serve blocks above 128 KiB by mmap and give them back
    immediately, which costs page faults on every step. ``mallopt(M_MMAP_MAX, 0)`` and
    a high ``M_TRIM_THRESHOLD`` (what ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=…``
    set from the environment) avoid that. Called where the CLI starts; a no-op returning
    False off glibc. Peak memory is unchanged; freed memory is reused instead of unmapped.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    ok = mallopt(m_mmap_max, 0) == 1
    return bool(mallopt(m_trim_threshold, 2**30) == 1 and ok)


def peak_rss_bytes() -> int:
    """This process's peak resident set size in bytes (Linux: ``VmHWM``).

    ``VmHWM`` in ``/proc/self/status`` belongs to the current address space, which
    ``exec`` replaces.  ``getrusage(RUSAGE_SELF).ru_maxrss`` does not: Linux carries the
    parent's high-water mark across fork + exec, so a subprocess started by a 1.3 GB
    pytest process reports >= 1.3 GB before allocating anything.  Falls back to
    ``ru_maxrss`` (KiB on Linux, bytes on macOS) where ``/proc`` is missing.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)
