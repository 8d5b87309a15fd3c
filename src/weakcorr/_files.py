"""JSON-safe values and atomic file replacement, for every module that writes results.

Below the layers that write files (the correlation experiment, sweeps, reports), so that they
share one temp-file-and-rename mechanism instead of each keeping its own.
"""

from __future__ import annotations

import contextlib
import math
import os
import pathlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

__all__ = ["atomic_path", "check_writable_dir", "json_safe"]


def json_safe(obj: Any) -> Any:
    """A copy of ``obj`` that strict JSON accepts: non-finite floats → None, tuples → lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return json_safe(obj.item())
    return obj


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[pathlib.Path]:
    """A temp path next to ``path`` to write to; renamed onto ``path`` when the block ends.

    If the block raises (a crash, Ctrl-C), the temp file is removed and ``path`` keeps its
    old content or stays absent: readers never see half a file. The temp name ends in
    ``.<pid>.tmp``, so :meth:`RunStore.remove_stale_temp` recognises a dead writer's.

    Example:
        >>> import tempfile
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "report.md"
        >>> with atomic_path(target) as tmp:
        ...     _ = tmp.write_text("done")
        >>> target.read_text()
        'done'
    """
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def check_writable_dir(path: str | os.PathLike[str], name: str = "out_dir", *,
                       subdirs: Sequence[str] = ()) -> None:
    """Raise a one-line ValueError (naming ``name``) unless ``path`` is, or can become, a directory.

    Checked without creating anything: ``path`` (and ``path/<subdir>`` for each of
    ``subdirs``) must be a directory or not exist; its nearest existing ancestor must be a
    writable directory.
    """
    root = pathlib.Path(path)
    for p in (root, *(root / d for d in subdirs)):
        if p.exists() and not p.is_dir():
            raise ValueError(f"`{name}` {str(root)!r}: {str(p)!r} is a file, not a directory; "
                             f"pass a new or existing directory as {name}")
    probe = root
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ValueError(f"`{name}` {str(root)!r}: {str(probe)!r} is a file, so no directory "
                         f"can be made under it; pass a directory path as {name}")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"`{name}` {str(root)!r}: {str(probe)!r} is not writable; pass a "
                         f"directory you can write to as {name}")
