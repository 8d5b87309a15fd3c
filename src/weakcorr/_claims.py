"""Run claims, so that sweeps sharing one results folder never run the same run twice.

:class:`ClaimingRunStore` is the :class:`weakcorr.results.RunStore` that
:func:`weakcorr.sweep.run_sweep` uses by default. Before a run starts, its claim file
``runs/<run_id>.claim`` is created by hard-linking a fully written pending file to it (``link``
fails if the claim exists: one creator wins, also on NFS; ``O_CREAT | O_EXCL`` where hard links
are unsupported) and holds the claimer's host, pid, process start time, sweep token and start
time. The result is
written by temp file and rename (:func:`weakcorr.results.atomic_write_json`), then the claim is
removed. While a run is in flight a daemon thread touches its claim every ``stale_after_s / 4``
seconds (a heartbeat).

A claim is *stale*, and may be taken over, when

* its process is gone: same host and the pid is dead, a zombie, or reused by another process;
* its heartbeat stopped: the file is older than ``stale_after_s`` (any host: a dead machine);
* it belongs to this same sweep (same token) but another process: an executor retries a task
  only after the attempt that claimed it was lost, so that claim is the lost attempt's.

A takeover is serialised per stale claim file: the retaker first creates a marker named after
that file (its inode and content) with ``O_EXCL``, checks the claim is still that file, renames it
to a unique grave name and checks the grave is that file (else puts it back with ``os.link``,
never over a newer claim); then it creates a fresh claim with ``O_EXCL`` like anyone else. Two
retakers therefore cannot both win: the second one finds the marker taken, or the claim already
replaced, or loses the ``O_EXCL`` create.

After claiming, the run is given up if a record for it has appeared meanwhile: a finished one
(``ok``/``diverged``), or a ``failed`` one written after this store was created (by a concurrent
sweep; older ``failed`` records are redone when the sweep asks for it).

Limits: a takeover judged on heartbeat age assumes the hosts' clocks agree to well within
``stale_after_s``; a process that is frozen for longer than that (SIGSTOP, a suspended VM) can
lose its claim and then run its run a second time (the result is written atomically either way).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import pathlib
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._files import create_exclusive
from .results import FINISHED, RunStore

__all__ = ["CLAIM_SUFFIX", "Claim", "ClaimingRunStore", "pid_alive"]

CLAIM_SUFFIX = ".claim"
_GRAVE_SUFFIX = ".stale"
_MARKER_SUFFIX = ".takeover"
#: A takeover marker this old was left by a retaker that died during its takeover.
_MARKER_STALE_S = 60.0
#: A claim file that cannot be parsed (its writer was killed between create and write) is
#: treated as stale once it is this old.
_UNREADABLE_GRACE_S = 10.0


# --------------------------------------------------------------------------- processes


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (Linux), or None."""
    try:
        text = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[-1].split()


def _proc_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), or None."""
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def pid_alive(pid: int, start: str | None = None) -> bool:
    """True if process ``pid`` of this host runs (a zombie counts as dead).

    Args:
        pid: the process id.
        start: its start time as :func:`_proc_start` gave it when the claim was made; a
            different start time means the pid was reused by another process.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    fields = _proc_stat(pid)
    if fields is None:
        return True  # no /proc: trust kill(0)
    if fields[0] in ("Z", "X"):
        return False
    return start is None or len(fields) <= 19 or fields[19] == start


# --------------------------------------------------------------------------- claim files


@dataclass(frozen=True)
class Claim:
    """The content of a claim file."""

    host: str
    pid: int
    pid_start: str | None
    sweep: str
    started: float

    def to_json(self) -> str:
        return json.dumps({"host": self.host, "pid": self.pid, "pid_start": self.pid_start,
                           "sweep": self.sweep, "started": self.started}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Claim | None:
        try:
            raw = json.loads(text)
            return cls(str(raw["host"]), int(raw["pid"]), raw.get("pid_start"),
                       str(raw["sweep"]), float(raw["started"]))
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class _Seen:
    """A claim file as read: its parsed content (None if unreadable), inode and age."""

    claim: Claim | None
    inode: int
    mtime: float
    text: str = ""

    @property
    def key(self) -> str:
        """Identifies this very file: its inode and content (inode numbers get reused)."""
        return hashlib.sha1(f"{self.inode}:{self.text}".encode()).hexdigest()[:16]


def _read_claim(path: pathlib.Path) -> _Seen | None:
    """The claim at ``path`` (content, inode and mtime from one open file), or None if gone."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        st = os.fstat(fd)
        with os.fdopen(fd, "r", encoding="utf-8", closefd=False) as fh:
            text = fh.read()
    finally:
        os.close(fd)
    return _Seen(Claim.from_json(text), st.st_ino, st.st_mtime, text)


# --------------------------------------------------------------------------- heartbeat


class _Heartbeat:
    """One daemon thread per process that touches the claim files in flight."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._paths: dict[str, float] = {}  # path -> interval
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def add(self, path: pathlib.Path, interval: float) -> None:
        with self._lock:
            self._paths[str(path)] = interval
            if self._thread is None or not self._thread.is_alive() or self._pid != os.getpid():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._loop, name="weakcorr-claims",
                                                daemon=True)
                self._thread.start()
        self._wake.set()

    def remove(self, path: pathlib.Path) -> None:
        with self._lock:
            self._paths.pop(str(path), None)

    def held(self) -> list[str]:
        with self._lock:
            return list(self._paths)

    def _loop(self) -> None:
        while True:
            with self._lock:
                paths = dict(self._paths)
            if not paths:
                self._wake.wait()
                self._wake.clear()
                continue
            self._wake.wait(min(paths.values()))
            self._wake.clear()
            for p in self.held():
                with contextlib.suppress(OSError):
                    os.utime(p)


_HEARTBEAT = _Heartbeat()


# --------------------------------------------------------------------------- the store


class ClaimingRunStore(RunStore):
    """A :class:`~weakcorr.results.RunStore` whose runs are claimed before they run.

    Args:
        root: the sweep directory.
        stale_after_s: a claim whose heartbeat is older than this is stale (any host). Its
            heartbeat is refreshed every quarter of it while the run is in flight.

    The store pickles with its sweep token and creation time, so the copies that executors
    send to their workers act as one sweep.

    >>> import tempfile
    >>> store = ClaimingRunStore(tempfile.mkdtemp())
    >>> store.claim("abc"), store.claim("abc")  # re-entrant for its owner
    (True, True)
    >>> other = ClaimingRunStore(store.root)
    >>> other.claim("abc")
    False
    >>> _ = store.write("abc", {"status": "ok"})  # writing releases the claim
    >>> other.claim("abc"), store.claim_path("abc").exists()
    (False, False)
    """

    def __init__(self, root: str | os.PathLike[str], *, stale_after_s: float = 600.0) -> None:
        super().__init__(root)
        if not stale_after_s > 0:
            raise ValueError(f"`stale_after_s` must be > 0, got {stale_after_s!r}")
        self.stale_after_s = float(stale_after_s)
        self.sweep_token = uuid.uuid4().hex
        self.since = time.time()

    def __repr__(self) -> str:
        return f"ClaimingRunStore({str(self.root)!r}, sweep={self.sweep_token[:8]})"

    def __reduce__(self) -> tuple[Any, ...]:  # type: ignore[override]
        return (type(self), (str(self.root),),
                {"stale_after_s": self.stale_after_s, "sweep_token": self.sweep_token,
                 "since": self.since})

    # -- paths and identity

    def claim_path(self, rid: str) -> pathlib.Path:
        """Where the claim of run ``rid`` lives."""
        return self.runs_dir / f"{rid}{CLAIM_SUFFIX}"

    def _me(self) -> Claim:
        pid = os.getpid()
        return Claim(socket.gethostname(), pid, _proc_start(pid), self.sweep_token, time.time())

    def _is_mine(self, c: Claim | None) -> bool:
        return (c is not None and c.sweep == self.sweep_token and c.pid == os.getpid()
                and c.host == socket.gethostname())

    def _is_stale(self, seen: _Seen) -> bool:
        age = time.time() - seen.mtime
        c = seen.claim
        if c is None:
            return age > _UNREADABLE_GRACE_S
        if age > self.stale_after_s:
            return True
        if c.sweep == self.sweep_token:
            return True  # a lost attempt of this sweep (see the module docstring)
        return c.host == socket.gethostname() and not pid_alive(c.pid, c.pid_start)

    # -- the protocol

    def claim(self, rid: str) -> bool:
        """Reserve run ``rid``; False if another live process holds it or its record exists.

        Re-entrant: the process that holds a claim (with this store's token) gets True again.
        """
        path = self.claim_path(rid)
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(8):
            if self._create(path):
                if self._taken_by_record(rid):
                    self.release(rid)
                    return False
                _HEARTBEAT.add(path, self.stale_after_s / 4)
                return True
            seen = _read_claim(path)
            if seen is None:
                continue  # released meanwhile: try to create it again
            if self._is_mine(seen.claim):
                _HEARTBEAT.add(path, self.stale_after_s / 4)
                return True
            if not self._is_stale(seen):
                return False
            self._take_over(path, seen)
        return False  # lost every race: someone else is active on this run

    def release(self, rid: str) -> None:
        """Remove the claim of ``rid`` if this process holds it (else leave it alone)."""
        path = self.claim_path(rid)
        _HEARTBEAT.remove(path)
        seen = _read_claim(path)
        if seen is not None and self._is_mine(seen.claim):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def drop_claim(self, rid: str) -> None:
        """Remove the claim of ``rid`` whoever holds it (the sweep knows its holder is lost)."""
        path = self.claim_path(rid)
        _HEARTBEAT.remove(path)
        seen = _read_claim(path)
        if seen is not None:
            self._take_over(path, seen)

    def release_ours(self, rid: str) -> None:
        """Remove the claim of ``rid`` if any process of this sweep (same token) holds it: a
        worker the sweep killed (Ctrl-C, SIGTERM). Another sweep's claim is left alone."""
        path = self.claim_path(rid)
        _HEARTBEAT.remove(path)
        seen = _read_claim(path)
        if seen is not None and seen.claim is not None and seen.claim.sweep == self.sweep_token:
            self._take_over(path, seen)

    def write(self, rid: str, record: Mapping[str, Any]) -> pathlib.Path:
        """Atomically write the record of ``rid`` (with ``writer``: host, pid and sweep token),
        then release its claim."""
        writer = {"host": socket.gethostname(), "pid": os.getpid(), "sweep": self.sweep_token}
        out = super().write(rid, {**record, "writer": writer})
        self.release(rid)
        return out

    def written_by_us(self, rid: str) -> dict[str, Any] | None:
        """The record of ``rid`` if this sweep (any of its processes) wrote it, else None."""
        rec = self.read(rid)
        writer = rec.get("writer") if rec else None
        if isinstance(writer, dict) and writer.get("sweep") == self.sweep_token:
            return rec
        return None

    def claims(self) -> list[str]:
        """Run ids with a claim file present (sorted)."""
        if not self.runs_dir.is_dir():
            return []
        return sorted(p.name[:-len(CLAIM_SUFFIX)] for p in self.runs_dir.glob(f"*{CLAIM_SUFFIX}")
                      if not p.name.startswith("."))

    def remove_stale_temp(self, *, older_than_s: float = 0.0) -> int:
        """Delete dead writers' temp files, stale claims and takeover leftovers; how many."""
        removed = super().remove_stale_temp(older_than_s=older_than_s)
        if not self.runs_dir.is_dir():
            return removed
        for rid in self.claims():
            path = self.claim_path(rid)
            seen = _read_claim(path)
            ours = seen is not None and seen.claim is not None and (
                seen.claim.sweep == self.sweep_token)
            if seen is not None and not ours and self._is_stale(seen) and (
                    self._take_over(path, seen)):
                removed += 1
        now = time.time()
        for junk in [*self.runs_dir.glob(f".*{_GRAVE_SUFFIX}"),
                     *self.runs_dir.glob(f".*{_MARKER_SUFFIX}")]:
            with contextlib.suppress(OSError):
                if now - junk.stat().st_mtime > _MARKER_STALE_S:
                    junk.unlink()
                    removed += 1
        return removed

    # -- file operations

    def _create(self, path: pathlib.Path) -> bool:
        """Create the claim file with its content in one step; False if it exists.

        The content goes to a pending file that is then hard-linked to ``path`` (``link``
        fails if ``path`` exists, like ``O_EXCL``), so a claim is never visible empty: a
        process killed between an ``O_EXCL`` create and its write left an unreadable claim
        that blocked the run for ``_UNREADABLE_GRACE_S``. Where hard links are not
        supported, ``O_EXCL`` create and write.
        """
        try:  # random temp name (pid last, like the records'), fsync, link
            return create_exclusive(path, self._me().to_json())
        except FileNotFoundError:
            pass  # our pending file was cleaned up by another host's sweep start
        return self._create_exclusive(path)

    def _create_exclusive(self, path: pathlib.Path) -> bool:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                         0o644)
        except FileExistsError:
            return False
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(self._me().to_json())
        except BaseException:
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        return True

    def _take_over(self, path: pathlib.Path, seen: _Seen) -> bool:
        """Remove the claim file ``seen`` (judged stale) unless another has replaced it.

        Retakers of one stale claim first create its marker with ``O_EXCL`` (one at a time);
        the one holding it checks that the claim is still that file, renames it to a unique
        grave and checks the grave is that file (inode and content), else puts it back.

        Returns True if this call removed exactly that file.
        """
        marker = path.with_name(f".{path.name}.{seen.key}{_MARKER_SUFFIX}")
        for _ in range(2):
            try:
                os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
                break
            except FileExistsError:
                with contextlib.suppress(FileNotFoundError):
                    if time.time() - marker.stat().st_mtime > _MARKER_STALE_S:
                        marker.unlink()  # left by a retaker that died mid-takeover
                        continue
                return False  # another retaker is on it
        else:
            return False
        try:
            now = _read_claim(path)
            if now is None or now.key != seen.key:
                return False  # already taken over (or released) by someone else
            grave = path.with_name(f".{path.name}.{uuid.uuid4().hex}{_GRAVE_SUFFIX}")
            try:
                os.rename(path, grave)
            except FileNotFoundError:
                return False
            moved = _read_claim(grave)
            if moved is not None and moved.key == seen.key:
                with contextlib.suppress(FileNotFoundError):
                    grave.unlink()
                return True
            # Replaced between the check and the rename (its live owner released it and a
            # new claim appeared): put it back, never over a claim made since.
            try:
                os.link(grave, path)
            except FileExistsError:
                pass
            except OSError as err:  # file systems without hard links
                if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
                if not path.exists():
                    os.rename(grave, path)
                    return False
            with contextlib.suppress(FileNotFoundError):
                grave.unlink()
            return False
        finally:
            with contextlib.suppress(FileNotFoundError):
                marker.unlink()

    def _taken_by_record(self, rid: str) -> bool:
        """True if run ``rid`` already has a finished record, or a failed one newer than us."""
        state = self.state(rid)
        if state in FINISHED:
            return True
        if state == "failed":
            with contextlib.suppress(FileNotFoundError):
                return self.path(rid).stat().st_mtime >= self.since
        return False
