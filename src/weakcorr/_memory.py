"""Memory budgets: chunking of vmapped work, and the pre-flight check of a training run.

Generic helpers (no weakcorr imports): a computation that holds ``bytes_per_item``
bytes of working memory for each item of a batch is split into chunks whose
working set stays below ``max_memory_gb``.  Used by :mod:`weakcorr.correlations`
(per-(input, output) gradient blocks) and available to the other math modules.

The pre-flight (:func:`estimate_run_bytes`, :func:`available_bytes`, :func:`preflight`) tells,
before a run allocates anything, whether its peak memory fits in what the process can still
get (the cgroup limit or physical memory), so a width that cannot fit is recorded ``failed``
with "needs ~X GiB, Y GiB available" instead of the OOM killer taking the whole sweep.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["GIB", "InsufficientMemory", "available_bytes", "balanced_chunks",
           "check_memory_budget", "chunk_size_for", "estimate_run_bytes", "mlp_param_count",
           "peak_rss_bytes", "preflight"]

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


# --------------------------------------------------------------------------- run pre-flight

_ITEMSIZE = {"float32": 4, "float64": 8}
# Input and output sizes of the datasets a config can name (images flattened); what
# data.options gives the teacher overrides its defaults.
DATASET_DIMS: dict[str, tuple[int, int]] = {
    "mnist5k": (784, 10), "digits": (64, 10), "teacher": (16, 10), "mnist": (784, 10),
    "fashion-mnist": (784, 10), "cifar10": (3072, 10),
}
# θ0's activations on a whole split are cached when they take at most this much
# (weakcorr._vmap_train.CACHE_BYTES; a test checks they agree).
THETA0_CACHE_BYTES = 1.5e9
_EVAL_CHUNK = 1024  # rows per chunk of the evaluation passes (_vmap_train.outputs)
_LOG_ENTRY_BYTES = 600  # one log entry: a dict of ~8 floats, in memory and in the record
_FIXED_BYTES = 64 * 2**20  # allocator slack, the record, small tensors
NO_CHECK_ENV = "WEAKCORR_NO_MEMORY_CHECK"
# Where the kernel describes this process's cgroups (module constants, so tests can point
# them at a fake tree).
PROC_CGROUP = "/proc/self/cgroup"
CGROUP_V2_ROOT = "/sys/fs/cgroup"
CGROUP_V1_ROOT = "/sys/fs/cgroup/memory"
PROC_MEMINFO = "/proc/meminfo"


class InsufficientMemory(MemoryError):
    """A run refused before it allocated: its estimated peak does not fit."""


def estimate_run_bytes(run_cfg: Mapping[str, Any], d_in: int | None = None,
                       d_out: int | None = None, *, seeds: int = 1) -> int:
    """The peak memory of one paired run (paper App. A.2: f trained beside f_lin), in bytes.

    An estimate from the run config alone (no allocation), for the hand-written passes
    (``weakcorr._vmap_train``, the CPU default) and the autograd ones alike. With ``P`` the
    parameters per seed, ``H = depth · width`` the hidden units, ``B`` the batch (``n_train``
    with ``full_batch``), ``K = seeds`` trained together and ``s`` the dtype's bytes:

    * parameters: 7·K·P·s — the model, θ0, θ, Δ, the gradients of θ and Δ, and one more
      copy (the stacked first layer of θ and Δ, or autograd's leaf of θ0);
    * the step's activations: 10·K·B·H·s (f's layer inputs and slopes, θ0's, the tangents
      of f_lin and the backward signals of both);
    * θ0's cached pass on the training set, 2·K·n_train·H·s, and on the test set with
      ``logging.eval_every``, where each fits in 1.5 GB (as the trainer decides);
    * the evaluation passes, chunked by 1,024 rows: 6·K·min(n, 1024)·H·s;
    * the data, twice (the loaded split and the trainer's copy): 2·n·(d_in + d_out)·s, with
      n = n_train + n_test; the log entries (600 bytes each), and 64 MiB of slack.

    Args:
        run_cfg: a run config of :func:`weakcorr.config.expand` (``model.width``, ``depth``,
            ``bias``; ``data``; ``training``; ``logging``).
        d_in, d_out: the network's input and output sizes (default: the dataset's, from
            :data:`DATASET_DIMS` and ``data.options``).
        seeds: seeds trained together (``execution.seed_batch``).

    Returns:
        Bytes (an int). Against the peak resident memory of real CPU runs (float32 and
        float64, widths 1,024-8,192, full batch, 4 seeds together, eval_every) it is 1.06-1.4
        times the measured peak (``tests/reliability/test_preflight.py``): it errs on the
        side of refusing.

    Raises:
        ValueError: a run config of a ``model.factory`` (its size is not in the config).

    >>> cfg = {"model": {"width": 1024, "depth": 2, "bias": True},
    ...        "data": {"name": "mnist5k", "n_train": 4000, "n_test": 1000},
    ...        "training": {"steps": 250, "batch_size": 128, "dtype": "float32"},
    ...        "logging": {"every": 10}}
    >>> round(estimate_run_bytes(cfg) / 2**20)
    265
    """
    m, d, t = run_cfg["model"], run_cfg["data"], run_cfg["training"]
    lg = run_cfg.get("logging") or {}
    if m.get("factory") is not None or "depth" not in m:
        raise ValueError("`run_cfg` must be a run config of the built-in MLP (model.width and "
                         f"model.depth), got model keys {sorted(m)}; a model.factory's memory "
                         "is not known from its config")
    if d_in is None or d_out is None:
        dims = DATASET_DIMS.get(d.get("name"), (784, 10))
        options = dict(d.get("options") or {})
        d_in = d_in if d_in is not None else int(options.get("d_in", dims[0]))
        d_out = d_out if d_out is not None else int(options.get("d_out", dims[1]))
    s = _ITEMSIZE.get(t.get("dtype", "float32"), 8)
    k, width, depth = int(seeds), int(m["width"]), int(m["depth"])
    params = mlp_param_count(d_in, width, depth, d_out, bias=bool(m.get("bias", True)))
    hidden = width * depth
    n_train, n_test = int(d["n_train"]), int(d["n_test"])
    batch = n_train if t.get("full_batch") else int(t["batch_size"])
    total = 7 * k * params * s + 10 * k * batch * hidden * s
    for n, cached in ((n_train, True), (n_test, lg.get("eval_every") is not None)):
        cache = 2 * k * n * hidden * s
        if cached and cache <= THETA0_CACHE_BYTES:
            total += cache + k * n * d_out * s
    total += 6 * k * min(max(n_train, n_test), _EVAL_CHUNK) * hidden * s
    total += 2 * (n_train + n_test) * (d_in + d_out) * s
    steps = int(t.get("steps", 0))
    entries = steps // max(1, int(lg.get("every") or steps or 1))
    if lg.get("eval_every"):
        entries += steps // int(lg["eval_every"])
    return int(total + (entries + 1) * _LOG_ENTRY_BYTES + _FIXED_BYTES)


def mlp_param_count(d_in: int, width: int, depth: int, d_out: int, *, bias: bool = True) -> int:
    """Parameters of the MLP ``d_in → width (× depth) → d_out`` (weights, and biases if
    ``bias``), as ``weakcorr.models.mlp`` builds it.

    >>> mlp_param_count(784, 100, 2, 10)
    89610
    """
    sizes = [d_in, *([width] * depth), d_out]
    return sum(a * b + (b if bias else 0) for a, b in zip(sizes[:-1], sizes[1:]))


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as fh:
            text = fh.read().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None  # "max" (no limit) -> None


def _stat_value(path: str, key: str) -> int:
    try:
        with open(path, encoding="ascii") as fh:
            for line in fh:  # "inactive_file 123" (memory.stat), "MemAvailable: 123 kB"
                parts = line.split()
                if len(parts) >= 2 and parts[0] == key and parts[1].isdigit():
                    return int(parts[1])
    except (OSError, UnicodeDecodeError):
        pass
    return 0


def _cgroup_dirs() -> list[tuple[str, str]]:
    """(version, directory) of this process's memory cgroups, innermost first, with the
    hierarchy's root as the fallback (a container sees its own cgroup there)."""
    out: list[tuple[str, str]] = []
    try:
        with open(PROC_CGROUP, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError:
        lines = []
    for line in lines:
        _, controllers, path = line.split(":", 2) if line.count(":") >= 2 else ("", "", "")
        if controllers == "":
            root, version = CGROUP_V2_ROOT, "v2"
        elif "memory" in controllers.split(","):
            root, version = CGROUP_V1_ROOT, "v1"
        else:
            continue
        parts = [p for p in path.split("/") if p]
        for i in range(len(parts), 0, -1):
            out.append((version, os.path.join(root, *parts[:i])))
        out.append((version, root))
    return out


def cgroup_available_bytes() -> int | None:
    """What the memory cgroups of this process still allow (limit minus usage, counting
    inactive page cache as free), the tightest of its cgroups; None without a limit."""
    best: int | None = None
    for version, folder in _cgroup_dirs():
        if version == "v2":
            limit = _read_int(os.path.join(folder, "memory.max"))
            usage = _read_int(os.path.join(folder, "memory.current"))
            cache = _stat_value(os.path.join(folder, "memory.stat"), "inactive_file")
        else:
            limit = _read_int(os.path.join(folder, "memory.limit_in_bytes"))
            usage = _read_int(os.path.join(folder, "memory.usage_in_bytes"))
            cache = _stat_value(os.path.join(folder, "memory.stat"), "total_inactive_file")
        if limit is None or usage is None or limit >= 2**62:  # v1 writes "no limit" as ~2^63
            continue
        free = max(0, limit - usage + cache)
        best = free if best is None else min(best, free)
    return best


def physical_available_bytes() -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` (memory the kernel can give without swapping)."""
    kib = _stat_value(PROC_MEMINFO, "MemAvailable:")
    if kib:
        return kib * 1024
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def available_bytes() -> int | None:
    """Memory this process can still allocate: the smaller of the cgroup allowance
    (``/sys/fs/cgroup/memory.max`` minus usage, v1 or v2) and physical ``MemAvailable``;
    None when neither can be read."""
    found = [v for v in (cgroup_available_bytes(), physical_available_bytes()) if v is not None]
    return min(found) if found else None


def preflight(needed: int, available: int | None, what: str = "the run") -> None:
    """Refuse work whose estimated peak does not fit (set ``WEAKCORR_NO_MEMORY_CHECK=1`` to
    skip the check).

    Raises:
        InsufficientMemory: "needs ~X GiB, Y GiB available", before anything is allocated.
    """
    if available is None or os.environ.get(NO_CHECK_ENV, "") not in ("", "0"):
        return
    if needed > available:
        raise InsufficientMemory(
            f"{what} needs ~{needed / GIB:.3g} GiB, {available / GIB:.3g} GiB available "
            f"(cgroup limit or physical memory); use a smaller width or batch, fewer seeds per "
            f"batch (execution.seed_batch), or more memory ({NO_CHECK_ENV}=1 skips this check)"
        )
