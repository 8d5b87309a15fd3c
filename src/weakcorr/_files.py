"""JSON-safe values and safe atomic file writes, for every module that writes results.

Below the layers that write files (the correlation experiment, sweeps, reports), so that they
share one mechanism instead of each keeping its own. Every file the library writes is created
under a *random* name in its target directory with ``O_CREAT | O_EXCL | O_NOFOLLOW``
(:func:`tempfile.mkstemp`), written through that file descriptor, fsynced, then renamed onto
its name (:func:`atomic_open`). So a file that another local user planted in a shared results
directory (a symlink to one of your files, named like a temp file) is never opened: the old
``.<name>.<pid>.tmp`` names were predictable and opened with ``open(tmp, "w")``, which
follows symlinks, and a planted link let anyone overwrite any file the sweep could write.
The rename replaces a link at the target name itself, never the file it points to.

Temp names are ``.<name>.<random>.<pid>.tmp``: hidden, and with the writer's pid last, so
:meth:`weakcorr.results.RunStore.remove_stale_temp` recognises a dead writer's.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import pathlib
import stat
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from typing import IO, Any

__all__ = ["atomic_open", "atomic_path", "atomic_write_text", "check_writable_dir",
           "create_exclusive", "ensure_dir", "fsync_dir", "json_safe", "with_path"]


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


def expand_user(path: str | os.PathLike[str], name: str) -> pathlib.Path:
    """``path`` with a leading ``~`` or ``~user`` expanded.

    Raises:
        ValueError: naming ``name`` when the home directory cannot be found (``~nosuchuser``,
            or no HOME): pathlib raises a bare RuntimeError there.
    """
    try:
        return pathlib.Path(path).expanduser()
    except RuntimeError:
        shown = str(path)[:80]
        raise ValueError(f"`{name}` is {shown!r}, whose home directory ('~...') is unknown on "
                         "this machine; give the folder as an absolute or relative path") from None


def with_path(err: OSError, path: str | os.PathLike[str]) -> OSError:
    """``err`` with ``path`` as its file name if it names none (a full disk says only
    "No space left on device"); the CLI prints the path from it."""
    if err.filename is not None or not err.errno:
        return err
    new = type(err)(err.errno, err.strerror or os.strerror(err.errno), os.fspath(path))
    new.__cause__ = err
    return new


def _umask() -> int:
    """This process's umask, read without changing it (Linux /proc; else the usual 022)."""
    with contextlib.suppress(OSError, ValueError):
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make renames in directory ``path`` durable (POSIX; ignored where unsupported)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def ensure_dir(path: str | os.PathLike[str]) -> pathlib.Path:
    """Create directory ``path`` (and parents) unless it exists; refuse one that is a symlink
    owned by another user (planted in a shared directory, it would send our files elsewhere).

    Raises:
        PermissionError: for such a symlink, naming it.
    """
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) and st.st_uid not in (os.geteuid(), 0):
        raise PermissionError(errno.EPERM, "is a symlink owned by another user (uid "
                              f"{st.st_uid}); remove it or pass another directory", str(path))
    return path


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """A file object to write ``path`` through; it replaces ``path`` when the block ends.

    The file is created under a random name in ``path``'s directory (which must exist) with
    ``O_CREAT | O_EXCL | O_NOFOLLOW`` and permissions as ``open`` gives (0666 less the umask),
    written, flushed and fsynced, then renamed onto ``path`` and the directory fsynced. If the
    block raises (a crash, Ctrl-C, a full disk), the temp file is removed and ``path`` keeps
    its old content or stays absent: readers never see half a file. An OSError that names no
    file (ENOSPC) is raised naming ``path``.

    Args:
        path: the target file.
        mode: ``"w"`` (text, UTF-8) or ``"wb"``.

    Example:
        >>> import tempfile
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "report.md"
        >>> with atomic_open(target) as fh:
        ...     _ = fh.write("done")
        >>> target.read_text()
        'done'
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"`mode` must be 'w' or 'wb', got {mode!r}")
    path = pathlib.Path(path)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".{os.getpid()}.tmp",
                                    dir=path.parent)
    except OSError as err:
        raise with_path(err, path) from None
    tmp = pathlib.Path(name)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as fh:
            os.fchmod(fh.fileno(), 0o666 & ~_umask())
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(err, OSError):
            raise with_path(err, path) from None
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> pathlib.Path:
    """Write ``text`` (UTF-8) to ``path`` with :func:`atomic_open`; returns the path."""
    with atomic_open(path) as fh:
        fh.write(text)
    return pathlib.Path(path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[pathlib.Path]:
    """A freshly created temp file next to ``path`` to write by name; renamed onto ``path``.

    For writers that need a path (prefer :func:`atomic_open`, which never reopens it by
    name). The temp file is created as in :func:`atomic_open`; before the rename it must
    still be that regular file (not replaced by a link), else OSError and ``path`` is left
    alone. If the block raises, the temp file is removed.
    """
    path = pathlib.Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".{os.getpid()}.tmp",
                                dir=path.parent)
    tmp = pathlib.Path(name)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        yield tmp
        mine, now = os.fstat(fd), os.lstat(tmp)
        if not stat.S_ISREG(now.st_mode) or (now.st_ino, now.st_dev) != (mine.st_ino,
                                                                          mine.st_dev):
            raise PermissionError(errno.EPERM, "the temp file was replaced while being "
                                  "written (another user in this directory?)", str(tmp))
        os.fsync(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    finally:
        os.close(fd)
    fsync_dir(path.parent)


def create_exclusive(path: str | os.PathLike[str], text: str) -> bool:
    """Create ``path`` holding ``text`` in one step; False if ``path`` exists (someone else won).

    The text goes to a random temp file (as :func:`atomic_open`), fsynced, that is then
    hard-linked to ``path``: ``link`` fails if ``path`` exists, like ``O_EXCL`` but also on
    NFS, and never follows a link at ``path``; the file is never visible empty. Where hard
    links are unsupported, ``O_CREAT | O_EXCL | O_NOFOLLOW`` and write.
    """
    path = pathlib.Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".{os.getpid()}.tmp",
                                dir=path.parent)
    pending = pathlib.Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~_umask())
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(pending, path)
            fsync_dir(path.parent)
            return True
        except FileExistsError:
            return False
        except OSError as err:  # file systems without hard links
            if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise with_path(err, path) from None
    finally:
        with contextlib.suppress(OSError):
            pending.unlink()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    return True


def check_writable_dir(path: str | os.PathLike[str], name: str = "out_dir", *,
                       subdirs: Sequence[str] = ()) -> None:
    """Raise a one-line ValueError (naming ``name``) unless ``path`` is, or can become, a directory.

    Checked without creating anything: ``path`` must not be empty (``''`` would mean the
    current directory); it (and ``path/<subdir>`` for each of ``subdirs``) must be a
    directory or not exist; its nearest existing ancestor must be a writable directory.
    """
    if not str(os.fspath(path)).strip():
        raise ValueError(f"`{name}` is empty ({os.fspath(path)!r}), which would write into the "
                         f"current directory; pass a directory path as {name}, e.g. {name} "
                         "runs/x (or . for the current directory)")
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
