"""Executors for :func:`weakcorr.sweep.run_sweep` that survive lost workers, and Dask ones.

* :class:`SupervisedPoolExecutor` — local spawn processes, one task at a time each. A worker that
  dies (SIGKILL, out-of-memory killer, segfault) is replaced and its task retried ``retries``
  times; after that the task's runs are recorded ``failed`` with the error. Workers die with the
  sweep (``PR_SET_PDEATHSIG`` on Linux, plus a parent watchdog).
* :class:`DaskExecutor` — each task is one Dask task on the cluster at ``scheduler`` (or of a
  ``distributed.Client`` you pass). Workers write to the shared results folder; with
  ``collect=True`` the records come back to this process, which claims the runs before
  submitting them and writes the records (clusters without a shared file system).
* :class:`DaskLocalExecutor` — the same on a ``distributed.LocalCluster`` of N worker processes
  bound to 127.0.0.1, speaking Dask's TLS with temporary credentials (``Security.temporary()``:
  a fresh CA and certificate held only in this process and its workers), so that other local
  users cannot connect and run code in the workers (loopback binding alone does not stop
  them). Without ``cryptography`` it refuses to start rather than run unauthenticated. No
  dashboard unless asked for (``dashboard=True``, ``--dashboard``); Dask's own log messages
  (a garbage packet to a port, a lost connection) go to a log file, not the terminal.

A task whose Dask worker dies is rescheduled by the scheduler up to its
``distributed.scheduler.allowed-failures`` times (``retries`` for :class:`DaskLocalExecutor`; the
remote scheduler's own setting, default 3, for :class:`DaskExecutor`), then its runs are recorded
``failed``. Resume works as with the local executors: finished runs are skipped, claims of lost
workers are retaken (:mod:`weakcorr._claims`).

Dask is an optional extra, imported only when a Dask executor is made.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import multiprocessing
import multiprocessing.connection
import os
import pickle
import re
import signal
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ._dasksec import _dashboard_address, _log_to_file, _restore_logs, temporary_security

__all__ = [
    "EXECUTORS", "DaskExecutor", "DaskLocalExecutor", "SupervisedPoolExecutor", "WorkerLostError",
    "lost_outcomes", "make_executor", "own_outcomes",
]

T = TypeVar("T")
R = TypeVar("R")

#: Names accepted by :func:`make_executor` (the ``--executor`` flag).
EXECUTORS = ("auto", "inprocess", "local", "dask", "dask-local")

_DASK_MISSING = ("the Dask executors need dask.distributed, which is not installed. "
                 "Install it via `pip install weakcorr[dask]`.")
_ADDRESS = re.compile(r"^(tcp|tls)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):[0-9]{1,5}$")


class WorkerLostError(RuntimeError):
    """A task's worker died on every attempt (raised for tasks that are not sweep runs)."""


def lost_outcomes(task: Any, error: str) -> list[Any]:
    """Record the runs of a task whose worker was lost as ``failed`` with ``error``.

    Called in the sweep's own process. A run is recorded only if this sweep can claim it (the
    lost worker's claim is retaken); runs claimed by another live sweep, or already finished
    (by the lost attempt itself, then reported with their own status), are left alone.

    Returns:
        One :class:`weakcorr.sweep.RunOutcome` per run of the task.

    Raises:
        WorkerLostError: if ``task`` is not a :class:`weakcorr.sweep.RunTask`.
    """
    from ._tasks import RunOutcome, RunTask, _failed_record

    if not isinstance(task, RunTask):
        raise WorkerLostError(error)
    outcomes = []
    for rid, cfg in zip(task.run_ids, task.configs, strict=True):
        if not task.store.claim(rid):
            outcomes.append(RunOutcome(rid, "claimed-elsewhere"))
            continue
        record = {**_failed_record(cfg, error, 0.0, task.device), "wall_time_s": None,
                  "config": cfg}
        task.store.write(rid, record)
        task.store.release(rid)
        outcomes.append(RunOutcome(rid, "failed", None, error))
    return own_outcomes(task, outcomes)


def own_outcomes(task: Any, outcomes: Any) -> Any:
    """Relabel ``claimed-elsewhere`` outcomes whose record this same sweep wrote.

    That happens when an attempt wrote its records and then its worker was lost (or Dask lost
    the result with the worker): the retry finds the run finished.
    """
    written_by_us = getattr(getattr(task, "store", None), "written_by_us", None)
    if written_by_us is None or not isinstance(outcomes, list):
        return outcomes
    out = []
    for o in outcomes:
        rec = written_by_us(o.run_id) if o.status == "claimed-elsewhere" else None
        out.append(o if rec is None else dataclasses.replace(
            o, status=str(rec.get("status")), wall_time_s=rec.get("wall_time_s"),
            error=rec.get("error")))
    return out


def _drop_claims(task: Any) -> None:
    """Remove the claims of a task whose worker this sweep has just killed (no record yet:
    the next sweep may run them at once instead of waiting for the claims to go stale)."""
    drop = getattr(getattr(task, "store", None), "release_ours", None)
    if drop is None:
        return
    for rid in getattr(task, "run_ids", ()):
        with contextlib.suppress(OSError):
            drop(rid)


def _set_threads(n: int | None) -> None:
    if n:
        import torch

        if torch.get_num_threads() != n:
            torch.set_num_threads(n)


# --------------------------------------------------------------------------- local processes


def _die_with_parent(parent_pid: int) -> None:
    """Make this worker exit when the sweep process dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(0.2)

    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(target=watch, name="weakcorr-parent-watch", daemon=True).start()


def _worker_main(conn: Any, n_threads: int, parent_pid: int) -> None:
    """Loop of a :class:`SupervisedPoolExecutor` worker: receive a task, run it, send back."""
    _die_with_parent(parent_pid)
    _set_threads(n_threads)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        idx, blob = msg
        try:
            fn, task = pickle.loads(blob)
            out: tuple[Any, ...] = ("ok", idx, fn(task), "")
        except BaseException as err:  # noqa: BLE001 - sent back and raised in the parent
            out = ("err", idx, err, traceback.format_exc())
        try:
            conn.send(out)
        except Exception as err:  # noqa: BLE001 - an unpicklable result or error
            conn.send(("err", idx, RuntimeError(f"cannot send the result back: {err}"), ""))


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


@dataclass
class _Proc:
    proc: Any
    conn: Any


class SupervisedPoolExecutor:
    """Local worker processes (spawn) that are replaced when they die; lost tasks are retried.

    Args:
        workers: number of worker processes (>= 1).
        threads_per_worker: torch threads in each worker; default: this process's torch
            thread count divided among the workers (at least 1).
        retries: how many times a task whose worker died is run again (>= 0); after that its
            runs are recorded ``failed`` (:func:`lost_outcomes`).
        on_lost: ``on_lost(task, error) -> result`` for a task that could not be run
            (default :func:`lost_outcomes`).
    """

    def __init__(self, workers: int, *, threads_per_worker: int | None = None, retries: int = 1,
                 on_lost: Callable[[Any, str], Any] | None = None) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"`workers` must be an integer >= 1, got {workers!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"`retries` must be an integer >= 0, got {retries!r}")
        if threads_per_worker is None:
            import torch

            threads_per_worker = max(1, torch.get_num_threads() // workers)
        self.workers = workers
        self.threads_per_worker = threads_per_worker
        self.retries = retries
        self.on_lost = on_lost or lost_outcomes
        self._idle: list[_Proc] = []

    def _spawn(self) -> _Proc:
        ctx = multiprocessing.get_context("spawn")
        ours, theirs = ctx.Pipe()
        proc = ctx.Process(target=_worker_main, args=(theirs, self.threads_per_worker, os.getpid()),
                           daemon=True, name="weakcorr-worker")
        proc.start()
        theirs.close()
        return _Proc(proc, ours)

    @staticmethod
    def _discard(w: _Proc, *, kill: bool = False) -> int | None:
        if kill and w.proc.is_alive():
            w.proc.kill()
        w.proc.join(timeout=10)
        with contextlib.suppress(OSError):
            w.conn.close()
        return w.proc.exitcode

    def map_unordered(self, fn: Callable[[T], R], tasks: Sequence[T]) -> Iterator[R]:
        """Run ``fn`` on every task in the workers; yield results as they complete."""
        tasks = list(tasks)
        queue = collections.deque(range(len(tasks)))
        attempts = [0] * len(tasks)
        busy: dict[int, tuple[_Proc, int]] = {}  # id(worker) -> (worker, task index)
        clean = False
        try:
            while queue or busy:
                while queue and len(busy) < self.workers:
                    w = self._idle.pop() if self._idle else self._spawn()
                    i = queue.popleft()
                    try:
                        w.conn.send((i, pickle.dumps((fn, tasks[i]))))
                    except (BrokenPipeError, ConnectionError, EOFError):  # died while idle
                        self._discard(w)
                        queue.appendleft(i)
                        continue
                    busy[id(w)] = (w, i)
                waitables = [x for w, _ in busy.values() for x in (w.conn, w.proc.sentinel)]
                ready = set(multiprocessing.connection.wait(waitables))
                for key, (w, i) in list(busy.items()):
                    if w.conn not in ready and w.proc.sentinel not in ready:
                        continue
                    del busy[key]
                    msg = None
                    with contextlib.suppress(EOFError, OSError):
                        if w.conn.poll():
                            msg = w.conn.recv()
                    if msg is not None:
                        self._idle.append(w)
                        kind, _, payload, tb = msg
                        if kind == "err":
                            if tb and hasattr(payload, "add_note"):
                                payload.add_note(f"in a worker process:\n{tb}")
                            raise payload
                        yield own_outcomes(tasks[i], payload)
                        continue
                    code = self._discard(w, kill=True)
                    attempts[i] += 1
                    if attempts[i] <= self.retries:
                        queue.appendleft(i)
                    else:
                        yield self.on_lost(tasks[i], (
                            f"WorkerLost: the worker process running this run died "
                            f"({_describe_exit(code)}) on each of {attempts[i]} attempts"))
            clean = True
        finally:
            if not clean:  # abandoned (an error, Ctrl-C, SIGTERM): stop the busy workers
                for w, i in busy.values():
                    self._discard(w, kill=True)
                    _drop_claims(tasks[i])

    def shutdown(self) -> None:
        """Stop the idle workers."""
        while self._idle:
            w = self._idle.pop()
            with contextlib.suppress(OSError):
                w.conn.send(None)
            w.proc.join(timeout=10)
            self._discard(w, kill=True)


# --------------------------------------------------------------------------- Dask


def _require_distributed() -> Any:
    try:
        import distributed
    except ImportError as err:
        raise ImportError(_DASK_MISSING) from err
    return distributed


@dataclass(frozen=True)
class _Threaded:
    """``fn`` run after setting the worker's torch thread count (picklable)."""

    fn: Callable[..., Any]
    n_threads: int | None

    def __call__(self, task: Any) -> Any:
        _set_threads(self.n_threads)
        return self.fn(task)


def _run_records(runner: Any, configs: Sequence[Mapping[str, Any]], device: str | None,
                 n_threads: int | None) -> list[dict[str, Any]]:
    """Worker side of ``collect=True``: the runner's records (errors → ``failed`` records)."""
    from ._tasks import _failed_record

    _set_threads(n_threads)
    start = time.perf_counter()
    try:
        records = runner(list(configs), device=device)
        if len(records) != len(configs):
            raise RuntimeError(f"runner returned {len(records)} records for {len(configs)} runs")
        return [dict(r) for r in records]
    except Exception as err:  # noqa: BLE001 - a failed run is recorded, not raised
        wall = (time.perf_counter() - start) / len(configs)
        tb = traceback.format_exc(limit=-3)
        return [{**_failed_record(c, f"{type(err).__name__}: {err}", wall, device),
                 "traceback": tb} for c in configs]


@dataclass(frozen=True)
class _Replay:
    """A runner that returns records computed elsewhere (``collect=True``)."""

    records: tuple[dict[str, Any], ...]

    def __call__(self, configs: Sequence[Mapping[str, Any]], *, device: str | None
                 ) -> list[dict[str, Any]]:
        return [dict(r) for r in self.records]


def _claim_here(task: Any) -> tuple[Any, list[Any]]:
    """Claim the runs of ``task`` in this process: (the task reduced to them, the others)."""
    from ._tasks import RunOutcome, RunTask

    if not isinstance(task, RunTask):
        raise TypeError(f"`collect=True` needs sweep tasks (RunTask), got {type(task).__name__}")
    held = [(rid, cfg) for rid, cfg in zip(task.run_ids, task.configs, strict=True)
            if task.store.claim(rid)]
    held_ids = {rid for rid, _ in held}
    elsewhere = [RunOutcome(rid, "claimed-elsewhere") for rid in task.run_ids
                 if rid not in held_ids]
    return dataclasses.replace(task, run_ids=tuple(r for r, _ in held),
                               configs=tuple(c for _, c in held)), elsewhere


class DaskExecutor:
    """Runs each task as a Dask task on an existing cluster.

    Args:
        scheduler: the scheduler address, ``tcp://HOST:PORT`` (or ``tls://``).
        client: a ``distributed.Client`` instead of ``scheduler`` (not closed by
            :meth:`shutdown`).
        collect: send records back to this process, which claims the runs before submitting
            them and writes the records (for workers without the results folder).
        threads_per_worker: torch threads set in the worker before each task (None: leave it;
            Dask's nanny starts workers with ``OMP_NUM_THREADS=1``).

    Raises:
        ValueError: a malformed ``scheduler``, or both/neither of ``scheduler`` and ``client``.
        ImportError: dask.distributed is not installed (``pip install weakcorr[dask]``).
    """

    def __init__(self, scheduler: str | None = None, *, client: Any = None, collect: bool = False,
                 threads_per_worker: int | None = None) -> None:
        if (scheduler is None) == (client is None):
            raise ValueError("Precisely one of `scheduler` and `client` must be given, e.g. "
                             "scheduler='tcp://10.0.0.5:8786'.")
        if scheduler is not None and not (isinstance(scheduler, str) and _ADDRESS.match(scheduler)):
            raise ValueError(f"`scheduler` must look like tcp://HOST:PORT "
                             f"(e.g. tcp://10.0.0.5:8786), got {scheduler!r}")
        _require_distributed()
        self.scheduler = scheduler
        self.collect = bool(collect)
        self.threads_per_worker = threads_per_worker
        self._client = client
        self._own_client = client is None
        self.log_path: str | None = None  # Dask's log file, once connected
        self._logs: list[tuple[Any, Any, int, bool]] = []

    def _connect(self) -> Any:
        if self._client is None:
            distributed = _require_distributed()
            if not self._logs:  # comm errors to a file, not tracebacks on the terminal
                self.log_path, self._logs = _log_to_file()
            try:
                self._client = distributed.Client(self.scheduler, timeout="30s",
                                                  set_as_default=False)
            except (OSError, TimeoutError) as err:
                raise ValueError(f"cannot reach the Dask scheduler at {self.scheduler} "
                                 f"({type(err).__name__}); check `--scheduler` and that "
                                 "`dask scheduler` runs there") from None
        return self._client

    @property
    def client(self) -> Any:
        """The ``distributed.Client`` (connects on first use)."""
        return self._connect()

    def map_unordered(self, fn: Callable[[T], R], tasks: Sequence[T]) -> Iterator[R]:
        """Submit every task and yield results as they complete (lost tasks: ``failed``)."""
        distributed = _require_distributed()
        client = self._connect()
        pending: dict[Any, Any] = {}
        try:
            for task in tasks:
                name = getattr(task, "run_ids", None)
                key = f"weakcorr-{name[0] if name else 'task'}-{uuid.uuid4().hex[:8]}"
                if self.collect:
                    task, elsewhere = _claim_here(task)
                    if elsewhere:
                        yield elsewhere  # type: ignore[misc]
                    if not task.run_ids:
                        continue
                    # the whole seed batch (RunTask.batch), as execute_task trains it
                    trained = getattr(task, "batch", ()) or task.configs
                    fut = client.submit(_run_records, task.runner, trained, task.device,
                                        self.threads_per_worker, key=key, pure=False)
                else:
                    fut = client.submit(_Threaded(fn, self.threads_per_worker), task, key=key,
                                        pure=False)
                pending[fut] = task
            for fut in distributed.as_completed(list(pending), loop=client.loop):
                task = pending.pop(fut)
                try:
                    result = fut.result()
                except distributed.KilledWorker as err:
                    yield lost_outcomes(task, f"WorkerLost: the Dask worker running this run "
                                              f"died on every attempt ({err})")  # type: ignore[misc]
                    continue
                if self.collect:
                    result = fn(dataclasses.replace(task, runner=_Replay(tuple(result))))
                yield own_outcomes(task, result)
        finally:
            for fut, task in pending.items():
                fut.cancel()
                if self.collect:
                    for rid in task.run_ids:
                        task.store.release(rid)

    def shutdown(self) -> None:
        """Close the client if this executor opened it."""
        if self._client is not None and self._own_client:
            self._client.close()
            self._client = None
        self._close_log()

    def _close_log(self) -> None:
        _restore_logs(self._logs)
        if self.log_path is not None:
            with contextlib.suppress(OSError):
                if os.path.getsize(self.log_path) == 0:
                    os.unlink(self.log_path)
                    self.log_path = None


class DaskLocalExecutor(DaskExecutor):
    """A ``distributed.LocalCluster`` of ``workers`` processes on 127.0.0.1, started on first use.

    Args:
        workers: worker processes (>= 1), one task at a time each.
        threads_per_worker: torch threads per worker; default: this process's torch thread
            count divided among the workers (at least 1), as :class:`SupervisedPoolExecutor`.
        collect: as in :class:`DaskExecutor`.
        retries: how often a task whose worker died is rescheduled (>= 0), then ``failed``.
        dashboard: serve Dask's dashboard on 127.0.0.1 (a free port; needs bokeh). Off by
            default: it is plain HTTP that any local user can read.

    Raises:
        ValueError: bad ``workers``/``retries``; when the cluster starts, ``cryptography``
            missing (no TLS: refused rather than unauthenticated).
        ImportError: dask.distributed is not installed.
    """

    def __init__(self, workers: int, *, threads_per_worker: int | None = None,
                 collect: bool = False, retries: int = 1, dashboard: bool = False) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"`workers` must be an integer >= 1, got {workers!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"`retries` must be an integer >= 0, got {retries!r}")
        _require_distributed()
        self.scheduler = None
        self.collect = bool(collect)
        if threads_per_worker is None:
            import torch

            threads_per_worker = max(1, torch.get_num_threads() // workers)
        self.threads_per_worker = threads_per_worker
        self.workers = workers
        self.retries = retries
        self.dashboard = bool(dashboard)
        self.log_path: str | None = None  # Dask's log file, once the cluster runs
        self._client = None
        self._own_client = True
        self._cluster: Any = None
        self._logs: list[tuple[Any, Any, int, bool]] = []

    def _connect(self) -> Any:
        if self._client is None:
            import logging

            import dask

            distributed = _require_distributed()
            security = temporary_security()  # TLS or nothing (ValueError without cryptography)
            if not self._logs:
                self.log_path, self._logs = _log_to_file()
            # Saturation 1: a worker holds only the task it runs, so a worker's death counts
            # against that task alone (queued tasks are not "processing" there).
            quiet = {} if self.dashboard else {  # no HTTP at all: not even /json/identity.json
                "distributed.scheduler.http.routes": [], "distributed.worker.http.routes": []}
            with dask.config.set({"distributed.scheduler.allowed-failures": self.retries,
                                  "distributed.scheduler.worker-saturation": 1.0, **quiet}):
                self._cluster = distributed.LocalCluster(
                    n_workers=self.workers, threads_per_worker=1, processes=True,
                    host="127.0.0.1", protocol="tls://", security=security,
                    dashboard_address=_dashboard_address(self.dashboard),
                    silence_logs=logging.CRITICAL,  # workers: no tracebacks on the terminal
                )
                self._client = distributed.Client(self._cluster, security=security,
                                                  set_as_default=False)
        return self._client

    @property
    def cluster(self) -> Any:
        """The ``distributed.LocalCluster`` (started on first use)."""
        self._connect()
        return self._cluster

    def shutdown(self) -> None:
        """Close the client and stop the cluster."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None
        self._close_log()


# --------------------------------------------------------------------------- from the CLI


def make_executor(kind: str = "auto", *, workers: int = 1, scheduler: str | None = None,
                  collect: bool = False, dashboard: bool = False) -> Any:
    """The executor of the ``--executor``/``--workers``/``--scheduler``/``--collect`` flags.

    Args:
        kind: one of :data:`EXECUTORS`. ``auto``: in-process for one worker, else a
            :class:`SupervisedPoolExecutor` (chosen by :func:`weakcorr.sweep.run_sweep`).
        workers: local worker processes (``local``, ``dask-local``).
        scheduler: ``tcp://HOST:PORT`` of a running Dask scheduler (``dask`` only).
        collect: records come back to this process (``dask``, ``dask-local`` only).
        dashboard: serve the Dask dashboard on 127.0.0.1 (``dask-local`` only).

    Returns:
        An executor, or None for ``auto`` (let :func:`weakcorr.sweep.run_sweep` choose).

    Raises:
        ValueError: an unknown kind or a flag that does not go with it, naming the fix.
        ImportError: a Dask kind without dask.distributed installed.
    """
    if kind not in EXECUTORS:
        raise ValueError(f"`--executor` must be one of {', '.join(map(repr, EXECUTORS))}, "
                         f"got {kind!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"`--workers` must be >= 1, got {workers!r}")
    if scheduler is not None and kind != "dask":
        raise ValueError(f"`--scheduler` is only used with --executor dask, got --executor {kind}; "
                         "add --executor dask or drop --scheduler")
    if collect and kind not in ("dask", "dask-local"):
        raise ValueError(f"`--collect` is only used with --executor dask or dask-local, got "
                         f"--executor {kind}; drop --collect")
    if dashboard and kind != "dask-local":
        raise ValueError(f"`--dashboard` is only used with --executor dask-local (a remote "
                         f"cluster serves its own), got --executor {kind}; drop --dashboard")
    if kind == "auto":
        return None
    if kind == "inprocess":
        if workers != 1:
            raise ValueError(f"`--workers` must be 1 with --executor inprocess, got {workers}; "
                             "use --executor local for worker processes")
        from ._tasks import InProcessExecutor

        return InProcessExecutor()
    if kind == "local":
        return SupervisedPoolExecutor(workers)
    if kind == "dask-local":
        return DaskLocalExecutor(workers, collect=collect, dashboard=dashboard)
    if scheduler is None:
        raise ValueError("`--scheduler` is required with --executor dask, e.g. "
                         "--scheduler tcp://10.0.0.5:8786 (or use --executor dask-local)")
    if workers != 1:
        raise ValueError(f"`--workers` ({workers}) starts local workers and does not apply to "
                         "--executor dask: size the cluster behind --scheduler instead")
    return DaskExecutor(scheduler, collect=collect)
