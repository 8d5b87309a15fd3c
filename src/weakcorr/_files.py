"""JSON-safe values and atomic file replacement, for every module that writes results.

Below the layers that write files (the correlation experiment, sweeps, reports), so that they
share one temp-file-and-rename mechanism instead of each keeping its own.
"""

from __future__ import annotations

import contextlib
import math
import os
import pathlib
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["atomic_path", "json_safe"]


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
