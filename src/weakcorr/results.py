"""One JSON file per run, keyed by a hash of its config, written atomically.

A sweep directory holds ``sweep.json`` (the sweep config, written when the sweep starts) and
``runs/<run_id>.json``, one per run: the run's :class:`weakcorr.train.RunResult` as a dict
(``schema_version``, ``status``, ``metrics``, ``logs``, ``seed``, ``device``, ``dtype``, ...) with
``run_id`` and the run's full ``config`` (the dict whose canonical JSON hashes to ``run_id``).

Writes go to a temporary file in the same directory, are fsynced, then renamed over the target
(``os.replace``): a reader, or a sweep killed at any moment, sees either no file or a complete
one. Temporary files are hidden (``.<run_id>.json.<pid>.tmp``) and ignored by readers.

:class:`RunStore` is the seam where a run-claim protocol plugs in: the sweep calls
:meth:`RunStore.claim` before running and :meth:`RunStore.write` after.

>>> run_id({"seed": 0, "model": {"width": 8}}) == run_id({"model": {"width": 8}, "seed": 0})
True
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import time
from collections.abc import Iterator, Mapping
from typing import Any

from ._files import atomic_path, json_safe

__all__ = [
    "FINISHED", "RunStore", "atomic_path", "atomic_write_json", "canonical_json", "json_safe",
    "protocol_changes", "read_json",
    "run_id",
]

#: Statuses of finished runs (a rerun skips them); "failed" runs are redone only on request.
FINISHED = frozenset({"ok", "diverged"})
MANIFEST = "sweep.json"
RUNS_DIR = "runs"


def canonical_json(obj: Any) -> str:
    """Canonical JSON: sorted keys, no whitespace, non-finite numbers rejected."""
    return json.dumps(json_safe(obj), sort_keys=True, separators=(",", ":"), allow_nan=False)


def run_id(config: Mapping[str, Any]) -> str:
    """A stable id of a run: the first 16 hex digits of sha256 of its canonical JSON config."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:16]


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> pathlib.Path:
    """Write ``obj`` as JSON to ``path`` atomically (temp file in the same dir, fsync, rename).

    Args:
        path: the target file; its directory must exist.
        obj: anything :func:`json_safe` turns into strict JSON.

    Returns:
        The path written.
    """
    path = pathlib.Path(path)
    text = json.dumps(json_safe(obj), indent=1, sort_keys=True, allow_nan=False)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    with contextlib.suppress(OSError):  # make the rename itself durable (POSIX)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return path


def read_json(path: str | os.PathLike[str]) -> Any | None:
    """The parsed JSON at ``path``, or None if it is missing or not valid JSON."""
    try:
        return json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class RunStore:
    """The run files of one sweep directory.

    Args:
        root: the sweep directory (created on first write).

    The claim protocol is a no-op here (:meth:`claim` always succeeds); a subclass for shared
    file systems or clusters overrides :meth:`claim` and :meth:`release`.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = pathlib.Path(root)
        self.runs_dir = self.root / RUNS_DIR

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r})"

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return (type(self), (str(self.root),))

    def path(self, rid: str) -> pathlib.Path:
        """Where the record of run ``rid`` lives."""
        return self.runs_dir / f"{rid}.json"

    def read(self, rid: str) -> dict[str, Any] | None:
        """The record of run ``rid``, or None if it is missing or unreadable."""
        rec = read_json(self.path(rid))
        return rec if isinstance(rec, dict) else None

    def state(self, rid: str) -> str:
        """``"missing"``, ``"corrupt"`` or the record's status (``ok``/``diverged``/``failed``)."""
        if not self.path(rid).exists():
            return "missing"
        rec = self.read(rid)
        if rec is None or rec.get("status") not in {*FINISHED, "failed"}:
            return "corrupt"
        return str(rec["status"])

    def claim(self, rid: str) -> bool:
        """Reserve run ``rid`` before running it; False means someone else runs it."""
        return True

    def release(self, rid: str) -> None:
        """Give up a claim without writing a result (no-op here)."""

    def write(self, rid: str, record: Mapping[str, Any]) -> pathlib.Path:
        """Atomically write the record of run ``rid``."""
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        return atomic_write_json(self.path(rid), {**record, "run_id": rid})

    def run_ids(self) -> list[str]:
        """Ids of all run files present (sorted), temp files excluded."""
        if not self.runs_dir.is_dir():
            return []
        return sorted(p.stem for p in self.runs_dir.glob("*.json") if not p.name.startswith("."))

    def records(self) -> Iterator[dict[str, Any]]:
        """All readable run records, in run-id order (unreadable files are skipped)."""
        for rid in self.run_ids():
            rec = self.read(rid)
            if rec is not None:
                yield rec

    def write_manifest(self, manifest: Mapping[str, Any]) -> pathlib.Path:
        """Write ``sweep.json`` (the sweep config and its run ids) atomically."""
        self.root.mkdir(parents=True, exist_ok=True)
        return atomic_write_json(self.root / MANIFEST, manifest)

    def read_manifest(self) -> dict[str, Any] | None:
        """The contents of ``sweep.json``, or None if absent."""
        rec = read_json(self.root / MANIFEST)
        return rec if isinstance(rec, dict) else None

    def remove_stale_temp(self, *, older_than_s: float = 0.0) -> int:
        """Delete temp files left by killed writers of this host; returns how many.

        Only temp files whose writer process no longer exists (or that are older than
        ``older_than_s`` if positive) are removed.
        """
        if not self.runs_dir.is_dir():
            return 0
        removed = 0
        now = time.time()
        for tmp in self.runs_dir.glob(".*.tmp"):
            try:
                pid = int(tmp.name.rsplit(".", 2)[-2])
            except (ValueError, IndexError):
                continue
            stale = not _pid_alive(pid) or (older_than_s > 0 and
                                            now - tmp.stat().st_mtime > older_than_s)
            if stale:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                    removed += 1
        return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _flat_protocol(cfg: Mapping[str, Any], grid: set[tuple[str, ...]]) -> dict[str, Any]:
    """A config dict's fields outside ``grid``, flattened one level: {"training.steps": 250}."""
    flat: dict[str, Any] = {}
    for key, value in cfg.items():
        if (key,) in grid:
            continue
        if isinstance(value, Mapping):
            flat.update({f"{key}.{sub}": v for sub, v in value.items() if (key, sub) not in grid})
        else:
            flat[key] = value
    return flat


def protocol_changes(old: Mapping[str, Any], new: Mapping[str, Any],
                     grid: set[tuple[str, ...]], *, most: int = 4) -> str | None:
    """What differs between two sweep configs outside their ``grid`` fields (the protocol), as
    ``"training.steps: 5 -> 20; ..."`` (at most ``most`` fields named), or None if nothing.

    ``grid`` holds the fields a directory's runs may differ in, as ``("seeds",)`` for a
    top-level field or ``("model", "widths")`` for one inside a section."""
    before, now = _flat_protocol(old, grid), _flat_protocol(new, grid)
    changed = [f"{k}: {before.get(k)!r} -> {now.get(k)!r}"
               for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)]
    if not changed:
        return None
    more = f"; and {len(changed) - most} more" if len(changed) > most else ""
    return "; ".join(changed[:most]) + more
