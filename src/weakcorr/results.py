"""One JSON file per run, keyed by a hash of its config, written atomically.

A sweep directory holds ``sweep.json`` (the sweep config, written when the sweep starts) and
``runs/<run_id>.json``, one per run: the run's :class:`weakcorr.train.RunResult` as a dict
(``schema_version``, ``status``, ``metrics``, ``logs``, ``seed``, ``device``, ``dtype``, ...) with
``run_id`` and the run's full ``config`` (the dict whose canonical JSON hashes to ``run_id``).

Writes go to a temporary file with a random name in the same directory, created with
``O_CREAT | O_EXCL | O_NOFOLLOW``, fsynced, then renamed over the target
(:func:`weakcorr._files.atomic_open`): a reader, or a sweep killed at any moment, sees either no
file or a complete one, and a symlink planted in a shared directory is never followed.
Temporary files are hidden (``.<run_id>.json.<random>.<pid>.tmp``) and ignored by readers.

Records are read defensively (:meth:`RunStore.scan`): a run file that cannot be read or
parsed (whatever the exception: bad JSON, nesting that exhausts the recursion limit, a file
too large), or that is not a valid record, is ``corrupt``: listed by name and reason, skipped
by readers, redone by sweeps (which move it aside to ``runs/corrupt/``, never delete it). Not
valid: a status other than ok/diverged/failed; a ``config`` whose hash is not the file's name
(a copy of run B saved as run A would otherwise make A look done); wrong types (``width:
"wide"``); metrics that are not numbers, or, in an ``ok`` run, non-finite, larger than
:data:`METRIC_LIMIT` in size, negative where they cannot be (MSE, C, distances) or an accuracy
outside [0, 1] (``mse_test: 1e300`` in one record turned a fitted slope of -4.3 into +127).

The directory's protocol is fixed atomically by the first sweep into it
(:func:`claim_protocol`: ``protocol.json`` created by hard link, as claims are), and
``sweep.json`` is updated under a lock (:meth:`RunStore.update_manifest`), so that sweeps
started at the same instant neither mix protocols nor lose each other's run ids.

:class:`RunStore` is the seam where a run-claim protocol plugs in: the sweep calls
:meth:`RunStore.claim` before running and :meth:`RunStore.write` after.

>>> run_id({"seed": 0, "model": {"width": 8}}) == run_id({"model": {"width": 8}, "seed": 0})
True
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import math
import os
import pathlib
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ._files import atomic_open, atomic_path, create_exclusive, ensure_dir, json_safe

__all__ = [
    "CORRUPT_DIR", "FINISHED", "METRIC_LIMIT", "PROTOCOL", "Corrupt", "RunStore", "atomic_path",
    "atomic_write_json", "canonical_json", "claim_protocol", "json_safe", "protocol_changes",
    "check_protocol", "read_json", "record_problem", "run_id",
]

#: Statuses of finished runs (a rerun skips them); "failed" runs are redone only on request.
FINISHED = frozenset({"ok", "diverged"})
MANIFEST = "sweep.json"
RUNS_DIR = "runs"
#: The directory's protocol, written once by its first sweep (:func:`claim_protocol`).
PROTOCOL = "protocol.json"
#: Where sweeps move corrupt run files before redoing their runs (under ``runs/``).
CORRUPT_DIR = "corrupt"
#: No metric of a run that did not diverge comes near this size (training stops as diverged
#: once a loss grows 1e6-fold); a larger one is a damaged record, not a result.
METRIC_LIMIT = 1e100
#: Run files larger than this are corrupt without being read (a record with every step
#: logged is a few MB).
MAX_RECORD_BYTES = 256 * 2**20
_STATUSES = frozenset({*FINISHED, "failed"})


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
    with atomic_open(path) as fh:  # random temp name, O_EXCL | O_NOFOLLOW, fsync, rename
        fh.write(text)
    return path


def _load(path: pathlib.Path) -> Any:
    """The parsed JSON at ``path``; any failure raises (OSError, ValueError, RecursionError,
    MemoryError, a file over :data:`MAX_RECORD_BYTES`)."""
    size = path.stat().st_size
    if size > MAX_RECORD_BYTES:
        raise ValueError(f"{size} bytes, over the {MAX_RECORD_BYTES // 2**20} MiB a record "
                         "can have")
    return json.loads(path.read_text(encoding="utf-8"))


def read_json(path: str | os.PathLike[str]) -> Any | None:
    """The parsed JSON at ``path``, or None if it is missing or cannot be read or parsed
    (whatever the reason: bad JSON or UTF-8, nesting too deep for the parser, too large)."""
    try:
        return _load(pathlib.Path(path))
    except Exception:  # noqa: BLE001 - RecursionError and MemoryError included
        return None


@dataclass(frozen=True)
class Corrupt:
    """A run file that is not a valid record: its file name, why, and its ``kind`` if it
    parsed as a mapping (so a directory of another kind is still recognised)."""

    name: str
    reason: str
    kind: str | None = None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _metric_problem(name: str, v: Any, ok: bool) -> str | None:
    if v is None or isinstance(v, bool):
        return None
    if not _is_num(v):
        return f"metric {name!r} is {_short(v)}, not a number"
    if not ok:
        return None
    if not math.isfinite(v) or abs(v) > METRIC_LIMIT:
        return f"metric {name!r} = {v!r} is out of range for a run that did not diverge"
    nonneg = name.startswith(("mse_", "param_distance")) or name in ("c_test", "c_train")
    if nonneg and v < 0:
        return f"metric {name!r} = {v!r} is negative"
    if name.startswith("acc_") and not 0 <= v <= 1:
        return f"metric {name!r} = {v!r} is not an accuracy in [0, 1]"
    return None


def record_problem(rid: str, rec: Any) -> str | None:
    """Why ``rec`` is not a valid record of run ``rid`` (see the module docstring), or None."""
    if not isinstance(rec, Mapping):
        return f"not a JSON object (a {type(rec).__name__})"
    status = rec.get("status")
    if not isinstance(status, str) or status not in _STATUSES:
        return f"status {_short(status)} is not one of ok, diverged, failed"
    if rec.get("run_id", rid) != rid:
        return f"its run_id {_short(rec.get('run_id'))} is not its file name"
    cfg = rec.get("config")
    if cfg is not None:
        if not isinstance(cfg, Mapping):
            return f"config is {_short(cfg)}, not a mapping"
        try:
            if run_id(cfg) != rid:
                return ("its config hashes to another run id (a record copied under another "
                        "run's name?)")
        except (TypeError, ValueError):
            return "its config is not canonical JSON"
        model, training = cfg.get("model"), cfg.get("training")
        width = model.get("width") if isinstance(model, Mapping) else None
        if width is not None and not (_is_int(width) and width >= 1):
            return f"model.width is {_short(width)}, not a positive integer"
        alpha = training.get("alpha") if isinstance(training, Mapping) else None
        if alpha is not None and not _is_num(alpha):
            return f"training.alpha is {_short(alpha)}, not a number"
        if cfg.get("seed") is not None and not _is_int(cfg.get("seed")):
            return f"config seed is {_short(cfg.get('seed'))}, not an integer"
    if rec.get("seed") is not None and not _is_int(rec.get("seed")):
        return f"seed is {_short(rec.get('seed'))}, not an integer"
    metrics = rec.get("metrics")
    if metrics is not None:
        if not isinstance(metrics, Mapping):
            return f"metrics is {_short(metrics)}, not a mapping"
        for name, v in metrics.items():
            why = _metric_problem(str(name), v, status == "ok")
            if why:
                return why
    logs = rec.get("logs")
    if logs is not None:
        if not isinstance(logs, list) or not all(isinstance(e, Mapping) for e in logs):
            return "logs is not a list of mappings"
        for e in logs:
            for k, v in e.items():
                if v is not None and not _is_num(v):
                    return f"log entry {k!r} is {_short(v)}, not a number"
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

    def inspect(self, rid: str) -> tuple[dict[str, Any] | None, Corrupt | None]:
        """The record of run ``rid`` and None, or None and why its file is corrupt; (None,
        None) if there is no file. Never raises for a file's content."""
        path = self.path(rid)
        try:
            rec = _load(path)
        except FileNotFoundError:
            return None, None
        except Exception as err:  # noqa: BLE001 - RecursionError, MemoryError, ... included
            return None, Corrupt(path.name, f"unreadable ({type(err).__name__}: "
                                 f"{_short(str(err))})")
        try:
            why = record_problem(rid, rec)
        except Exception as err:  # noqa: BLE001 - e.g. RecursionError in a deep config
            why = f"cannot be checked ({type(err).__name__})"
        if why is None:
            return dict(rec), None
        kind = rec.get("kind") if isinstance(rec, Mapping) else None
        return None, Corrupt(path.name, why, kind if isinstance(kind, str) else None)

    def read(self, rid: str) -> dict[str, Any] | None:
        """The record of run ``rid``, or None if it is missing or corrupt."""
        return self.inspect(rid)[0]

    def state(self, rid: str) -> str:
        """``"missing"``, ``"corrupt"`` or the record's status (``ok``/``diverged``/``failed``)."""
        rec, bad = self.inspect(rid)
        if bad is not None:
            return "corrupt"
        if rec is None:
            return "missing" if not self.path(rid).exists() else "corrupt"
        return str(rec["status"])

    def set_aside(self, rid: str) -> pathlib.Path | None:
        """Move run ``rid``'s file to ``runs/corrupt/`` (never deleted) if it is corrupt; returns
        where it went, or None if it is valid or absent. Call it holding the run's claim."""
        if self.state(rid) != "corrupt":
            return None
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        dest = ensure_dir(self.runs_dir / CORRUPT_DIR) / (
            f"{rid}.json.{stamp}-{uuid.uuid4().hex[:6]}")
        try:
            os.rename(self.path(rid), dest)
        except FileNotFoundError:
            return None
        return dest

    def claim(self, rid: str) -> bool:
        """Reserve run ``rid`` before running it; False means someone else runs it."""
        return True

    def release(self, rid: str) -> None:
        """Give up a claim without writing a result (no-op here)."""

    def write(self, rid: str, record: Mapping[str, Any]) -> pathlib.Path:
        """Atomically write the record of run ``rid``."""
        ensure_dir(self.root)
        ensure_dir(self.runs_dir)
        return atomic_write_json(self.path(rid), {**record, "run_id": rid})

    def run_ids(self) -> list[str]:
        """Ids of all run files present (sorted), temp files excluded."""
        if not self.runs_dir.is_dir():
            return []
        return sorted(p.stem for p in self.runs_dir.glob("*.json") if not p.name.startswith("."))

    def records(self) -> Iterator[dict[str, Any]]:
        """All valid run records, in run-id order (corrupt files are skipped: :meth:`scan`)."""
        for rid in self.run_ids():
            rec = self.read(rid)
            if rec is not None:
                yield rec

    def scan(self) -> tuple[list[dict[str, Any]], list[Corrupt]]:
        """All valid records (run-id order) and the corrupt run files, each with its reason."""
        good, bad = [], []
        for rid in self.run_ids():
            rec, why = self.inspect(rid)
            if rec is not None:
                good.append(rec)
            elif why is not None:
                bad.append(why)
        return good, bad

    def write_manifest(self, manifest: Mapping[str, Any]) -> pathlib.Path:
        """Write ``sweep.json`` (the sweep config and its run ids) atomically, under its lock."""
        return self.update_manifest(lambda _old: manifest)

    def update_manifest(self, update: Callable[[dict[str, Any] | None], Mapping[str, Any]]
                        ) -> pathlib.Path:
        """Replace ``sweep.json`` by ``update(its current content or None)``, holding an
        exclusive lock (``flock`` on ``.sweep.json.lock``) from the read to the rename, so
        that concurrent sweeps merge their run ids instead of losing one another's."""
        ensure_dir(self.root)
        with _locked(self.root / f".{MANIFEST}.lock"):
            return atomic_write_json(self.root / MANIFEST, update(self.read_manifest()))

    def read_manifest(self) -> dict[str, Any] | None:
        """The contents of ``sweep.json``, or None if absent."""
        rec = read_json(self.root / MANIFEST)
        return rec if isinstance(rec, dict) else None

    def remove_stale_temp(self, *, older_than_s: float = 0.0) -> int:
        """Delete temp files left by killed writers of this host; returns how many.

        Only temp files whose writer process no longer exists (or that are older than
        ``older_than_s`` if positive) are removed, in ``runs/`` and beside ``sweep.json``.
        """
        if not self.runs_dir.is_dir():
            return 0
        removed = 0
        now = time.time()
        for tmp in [*self.runs_dir.glob(".*.tmp"), *self.root.glob(".*.tmp")]:
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


@contextlib.contextmanager
def _locked(path: pathlib.Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if absent, never through a symlink)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    try:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock (single-machine Windows use)
            yield
            return
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def claim_protocol(root: str | os.PathLike[str], kind: str, config: Mapping[str, Any],
                   grid: set[tuple[str, ...]], *, label: str = "`out_dir`",
                   flag: str = "--out", allowed: str = "the grid") -> None:
    """Fix the protocol of directory ``root`` atomically, or check ``config`` against it.

    The first sweep into ``root`` creates ``protocol.json`` (its ``kind`` and ``config``) in
    one step (:func:`weakcorr._files.create_exclusive`: a hard link, which fails if the file
    exists); every later sweep, including one started at the same instant, reads it and must
    have the same kind and the same config outside ``grid`` (:func:`protocol_changes`). Call
    it after the manifest checks and before writing anything else.

    Raises:
        ValueError: starting with ``label`` (how the directory is named, e.g. ``"`out_dir`
            (--out)"``), with the differing fields and the fix (``flag``: where to pass a new
            directory; ``allowed``: what may change), before any record is written.
    """
    root = ensure_dir(root)
    path = root / PROTOCOL
    text = json.dumps(json_safe({"kind": kind, "config": config}), indent=1, sort_keys=True)
    for _ in range(3):
        if create_exclusive(path, text):
            return
        held = read_json(path)
        if isinstance(held, Mapping) and isinstance(held.get("config"), Mapping):
            break
        time.sleep(0.05)  # on a file system without links, a winner may still be writing
    else:
        raise ValueError(f"{label} {str(root)!r}: {PROTOCOL} is unreadable; pass a new "
                         f"directory as {flag} (or delete the damaged file)")
    check_protocol(root, held, kind, config, grid, label=label, flag=flag, allowed=allowed)


def check_protocol(root: str | os.PathLike[str], held: Mapping[str, Any] | None, kind: str,
                   config: Mapping[str, Any], grid: set[tuple[str, ...]], *,
                   label: str = "`out_dir`", flag: str = "--out", allowed: str = "the grid"
                   ) -> None:
    """Check ``config`` against ``held``, the content of ``root``'s ``protocol.json`` (nothing
    to check if None), as :func:`claim_protocol` does; writes nothing.

    Raises:
        ValueError: another kind or protocol, worded as in :func:`claim_protocol`.
    """
    if held is None:
        return
    if held.get("kind") != kind or not isinstance(held.get("config"), Mapping):
        raise ValueError(f"{label} {str(root)!r} holds a sweep of another kind "
                         f"({held.get('kind')!r}, by its {PROTOCOL}); pass a new directory as "
                         f"{flag}")
    shown = protocol_changes(held["config"], config, grid)
    if shown:
        raise ValueError(f"{label} {str(root)!r} holds a sweep of another protocol ({shown}; "
                         f"by its {PROTOCOL}, written by the first sweep into it); its runs "
                         f"would be fitted together with these. Pass a new directory as {flag}; "
                         f"into this one, only {allowed} may change")


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
