"""Run a sweep grid (widths × α × seeds), resumably, on a pluggable executor.

:func:`run_sweep` expands a :class:`weakcorr.config.SweepConfig` into runs, skips the ones whose
JSON is already in the sweep directory (status ``ok`` or ``diverged``; ``failed`` ones only with
``retry_failed=True``), groups the rest into tasks and hands them to an :class:`Executor`. Each
task, wherever it executes, does *claim before run, atomic write after*
(:meth:`weakcorr.results.RunStore.claim`, then the runner, then
:meth:`weakcorr.results.RunStore.write`), so a killed sweep loses at most the runs in flight.

A task is one run, or, with ``execution.seed_batch = K > 1``, up to K seeds of one (width, α)
trained together by the runner (same results as one after another, to float tolerance). The
batches are fixed by the grid (:func:`seed_batches`), not by what is left to do: a run is
always trained with the same partners, so its result is bit-for-bit the same whether its
batch ran whole, was split between two sweeps, or the run is redone alone (its partners are
trained again and their records dropped); each record lists its batch (``seed_batch``).

Executors: :class:`InProcessExecutor`, :class:`LocalPoolExecutor` (a spawn-context process
pool that divides torch threads among its workers), :class:`SupervisedPoolExecutor` (the default
for ``workers > 1``: replaces dead workers, retries their task once, then records it ``failed``),
:class:`DaskExecutor` and :class:`DaskLocalExecutor` (:mod:`weakcorr._executors`). Anything with
``map_unordered(fn, tasks)`` and ``shutdown()`` works, e.g. a cluster client. The default store
claims each run before it starts (:class:`weakcorr._claims.ClaimingRunStore`), so sweeps sharing
one folder never run a run twice.

The per-run work is injectable: ``runner(configs, *, device) -> list[record]`` (see
:class:`Runner`); the default is :func:`weakcorr.experiments.run_group`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import multiprocessing
import os
import stat
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from . import config as _config
from ._claims import ClaimingRunStore
from ._executors import DaskExecutor, DaskLocalExecutor, SupervisedPoolExecutor
from ._files import check_writable_dir
from ._tasks import (  # noqa: F401 - re-exported: weakcorr.sweep.RunTask etc.
    Executor,
    InProcessExecutor,
    PerRun,
    R,
    RunOutcome,
    RunTask,
    Runner,
    T,
    _failed_record,
)
from .results import (FINISHED, MANIFEST, PROTOCOL, RunStore, check_protocol, claim_protocol,
                      protocol_changes, read_json, run_id)

__all__ = [
    "DaskExecutor", "DaskLocalExecutor", "Executor", "InProcessExecutor", "LocalPoolExecutor",
    "PerRun", "RunOutcome", "RunTask", "Runner", "SupervisedPoolExecutor", "SweepEvent",
    "SweepPlan", "SweepSummary", "check_out_dir", "execute_all", "execute_task", "plan",
    "run_sweep", "seed_batches",
]

def _init_worker(n_threads: int) -> None:
    torch.set_num_threads(n_threads)


class LocalPoolExecutor:
    """A local process pool (spawn context); each worker gets ``threads_per_worker`` threads.

    Args:
        workers: number of worker processes (>= 1).
        threads_per_worker: torch threads in each worker; default: this process's torch
            thread count divided among the workers (at least 1).
    """

    def __init__(self, workers: int, *, threads_per_worker: int | None = None) -> None:
        if workers < 1:
            raise ValueError(f"`workers` must be >= 1, got {workers}")
        self.workers = workers
        self.threads_per_worker = threads_per_worker or max(1, torch.get_num_threads() // workers)
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def map_unordered(self, fn: Callable[[T], R], tasks: Sequence[T]) -> Iterator[R]:
        """Submit all tasks to the pool and yield results as they complete."""
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker, initargs=(self.threads_per_worker,),
            )
        futures = [self._pool.submit(fn, t) for t in tasks]
        try:
            for fut in concurrent.futures.as_completed(futures):
                yield fut.result()
        finally:
            for fut in futures:
                fut.cancel()

    def shutdown(self) -> None:
        """Stop the workers (pending tasks are cancelled)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def execute_task(task: RunTask) -> list[RunOutcome]:
    """Claim, run and write the runs of ``task`` (runs in a worker; module-level to pickle).

    Errors of the runner become ``failed`` records (with the error message); a record is
    written only once its run is complete.
    """
    ids, cfgs = [], []
    outcomes = []
    for rid, cfg in zip(task.run_ids, task.configs, strict=True):
        if task.store.claim(rid):
            ids.append(rid)
            cfgs.append(cfg)
            task.store.set_aside(rid)  # a corrupt file: kept in runs/corrupt/, run redone
        else:
            outcomes.append(RunOutcome(rid, "claimed-elsewhere"))
    if not ids:
        return outcomes
    trained = list(task.batch) or cfgs
    start = time.perf_counter()
    try:
        records = task.runner(trained, device=task.device)
        if len(records) != len(trained):
            raise RuntimeError(f"runner returned {len(records)} records for {len(trained)} runs")
        if task.batch:  # keep the records of the runs this task writes
            records = [records[trained.index(c)] for c in cfgs]
    except Exception as err:  # noqa: BLE001 - a failed run is recorded, not raised
        wall = time.perf_counter() - start
        msg = f"{type(err).__name__}: {err}"
        tb = traceback.format_exc(limit=-3)
        records = [{**_failed_record(c, msg, wall / len(cfgs), task.device), "traceback": tb}
                   for c in cfgs]
    except BaseException:
        for rid in ids:
            task.store.release(rid)
        raise
    for rid, cfg, rec in zip(ids, cfgs, records, strict=True):
        rec = dict(rec)
        if "config" in rec and rec["config"] != cfg:
            rec["train_config"] = rec["config"]
        rec["config"] = cfg
        if task.batch:
            rec["seed_batch"] = [c.get("seed") for c in task.batch]
        task.store.write(rid, rec)
        outcomes.append(RunOutcome(rid, str(rec.get("status")), rec.get("wall_time_s"),
                                   rec.get("error")))
    return outcomes


@dataclass(frozen=True)
class SweepPlan:
    """The runs of a sweep and which of them still have to run."""

    run_ids: tuple[str, ...]
    configs: dict[str, dict[str, Any]]
    states: dict[str, str]
    todo: tuple[str, ...]

    @property
    def total(self) -> int:
        """Number of runs in the grid."""
        return len(self.run_ids)

    @property
    def skipped(self) -> int:
        """Runs already finished (or failed and not retried)."""
        return self.total - len(self.todo)


def plan(cfg: _config.SweepConfig, store: RunStore, *, retry_failed: bool = False) -> SweepPlan:
    """Expand the grid and look up each run's state in ``store``.

    A run is to do if its file is missing or corrupt (:meth:`weakcorr.results.RunStore.scan`:
    unreadable, not a valid record, a config hash other than its name, metrics out of
    range), or if it failed and ``retry_failed``. Corrupt files are moved aside to
    ``runs/corrupt/`` (never deleted) by the task that redoes the run, once it holds the claim.
    """
    configs = {run_id(c): c for c in _config.expand(cfg)}
    states = {rid: store.state(rid) for rid in configs}
    redo = {"missing", "corrupt"} | ({"failed"} if retry_failed else set())
    todo = tuple(rid for rid in configs if states[rid] in redo)
    return SweepPlan(tuple(configs), configs, states, todo)


def _group_key(c: Mapping[str, Any]) -> str:
    return run_id({k: v for k, v in c.items() if k != "seed"})


def seed_batches(cfg: _config.SweepConfig, configs: Mapping[str, Mapping[str, Any]]
                 ) -> list[tuple[str, ...]]:
    """The seed batches of a grid: runs trained together, fixed by the grid alone.

    With ``execution.seed_batch = K > 1``, the runs of one (width, α) up to
    ``seed_batch_max_width``, in grid (seed) order, are cut into consecutive chunks of K; every
    other run is a batch of its own. A run is always trained in its chunk, whatever else is
    done or claimed, so its result does not depend on which runs were left to do (the vmapped
    training of a seed batch and a run alone agree to float tolerance, not to the bit; and a
    batch split between two sweeps changed results in the last bits).
    """
    k = cfg.execution.seed_batch
    groups: dict[str, list[str]] = {}
    for rid, c in configs.items():
        batched = k > 1 and c["model"]["width"] <= cfg.execution.seed_batch_max_width
        groups.setdefault(_group_key(c) if batched else rid, []).append(rid)
    step = max(k, 1)
    return [tuple(rids[i:i + step]) for rids in groups.values()
            for i in range(0, len(rids), step)]


def _tasks(cfg: _config.SweepConfig, the_plan: SweepPlan, store: RunStore, runner: Runner,
           device: str | None) -> list[RunTask]:
    todo = set(the_plan.todo)
    tasks = []
    for chunk in seed_batches(cfg, the_plan.configs):
        mine = tuple(r for r in chunk if r in todo)
        if not mine:
            continue
        batch = tuple(the_plan.configs[r] for r in chunk) if len(chunk) > 1 else ()
        tasks.append(RunTask(store, mine, tuple(the_plan.configs[r] for r in mine), runner,
                             device, batch))
    return tasks


@dataclass(frozen=True)
class SweepEvent:
    """Progress of a sweep: after each finished run (and once at the start, ``outcome=None``)."""

    done: int
    total: int
    skipped: int
    outcome: RunOutcome | None
    elapsed_s: float


@dataclass(frozen=True)
class SweepSummary:
    """What a call of :func:`run_sweep` did."""

    out_dir: str
    total: int
    skipped: int
    ran: int
    counts: dict[str, int]
    wall_time_s: float
    skipped_failed: int = 0  # of ``skipped``: failed runs left as they are (no retry_failed)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict."""
        return dataclasses.asdict(self)


def _check_device(device: str | None) -> None:
    if device is None or device == "cpu":
        return
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"`device` is {device!r} but CUDA is not available here; "
                             "use --device cpu")
        return
    raise ValueError(f"`device` must be 'cpu' or 'cuda', got {device!r}")


# What runs of one directory may differ in: the grid and how it is executed. Everything else
# (model, data, training, logging) is the protocol, which the report's fits pool over.
_GRID_FIELDS = {("model", "widths"), ("training", "alphas"), ("seeds",), ("execution",),
                ("name",), ("description",)}
_GRID_TEXT = "model.widths, training.alphas, seeds and execution"


def _check_runs_dir(store: RunStore) -> None:
    """Refuse a sweep directory whose runs/ folder is a symlink owned by another user."""
    with contextlib.suppress(FileNotFoundError):
        st = os.lstat(store.runs_dir)
        if stat.S_ISLNK(st.st_mode) and st.st_uid not in (os.geteuid(), 0):
            raise ValueError(f"`out_dir` (--out) {str(store.root)!r}: its runs/ is a symlink "
                             f"owned by another user (uid {st.st_uid}), which would send the "
                             "records elsewhere; remove it or pass another directory as --out")


def check_out_dir(cfg: _config.SweepConfig, store: RunStore) -> dict[str, Any] | None:
    """Check that the sweep can write into ``store``'s directory; returns its manifest (or None).

    The directory must be one, or creatable as one, and so must its runs/ folder
    (:func:`weakcorr._files.check_writable_dir`). If it holds a sweep already, that sweep must
    have the same protocol: only ``model.widths``, ``training.alphas``, ``seeds`` and
    ``execution`` may change, so that a directory can grow by widths, α or seeds while its
    runs stay comparable (the report fits all of them together); the same against the
    directory's ``protocol.json`` (:func:`weakcorr.results.check_protocol`). Writes nothing:
    :func:`run_sweep` then fixes the protocol atomically (:func:`weakcorr.results.claim_protocol`).

    Raises:
        ValueError: naming ``out_dir``, what it holds, and the fix.
    """
    root = store.root
    check_writable_dir(root, "--out", subdirs=(store.runs_dir.name,))
    old = _check_manifest(cfg, store)
    held = read_json(root / PROTOCOL)  # fixed by the directory's first sweep (read only here)
    check_protocol(root, held if isinstance(held, Mapping) else None, "a2", _config.to_dict(cfg),
                   _GRID_FIELDS, label="`out_dir` (--out)", allowed=_GRID_TEXT)
    return old


def _check_manifest(cfg: _config.SweepConfig, store: RunStore) -> dict[str, Any] | None:
    root = store.root
    old = store.read_manifest()
    if old is None:
        if (root / MANIFEST).exists():
            raise ValueError(f"`out_dir` (--out) {str(root)!r}: {MANIFEST} is unreadable; pass "
                             "a new directory as --out (or delete the damaged file)")
        return None
    if old.get("kind", "a2") != "a2" or not isinstance(old.get("config"), Mapping):
        raise ValueError(f"`out_dir` (--out) {str(root)!r} holds a sweep of another kind "
                         f"({old.get('kind', 'unknown')!r}, e.g. `weakcorr a1`); pass a new "
                         "directory as --out")
    shown = protocol_changes(old["config"], _config.to_dict(cfg), _GRID_FIELDS)
    if shown:
        raise ValueError(f"`out_dir` (--out) {str(root)!r} holds a sweep of another protocol "
                         f"({shown}); its runs would be fitted together with these. Pass a new "
                         f"directory as --out; into this one, only {_GRID_TEXT} may change")
    return old


def run_sweep(
    cfg: _config.SweepConfig,
    out_dir: str,
    *,
    executor: Executor | None = None,
    workers: int = 1,
    device: str | None = None,
    retry_failed: bool = False,
    runner: Runner | None = None,
    store: RunStore | None = None,
    check_data: bool = True,
    progress: Callable[[SweepEvent], None] | None = None,
) -> SweepSummary:
    """Run every unfinished run of the grid and write one JSON per run under ``out_dir``.

    Args:
        cfg: the validated sweep config.
        out_dir: the sweep directory (``sweep.json`` + ``runs/<run_id>.json``).
        executor: where tasks run; default: in-process for ``workers == 1``, else a
            :class:`SupervisedPoolExecutor` of ``workers`` processes (shut down at the end).
        workers: process count when no ``executor`` is given.
        device: ``"cpu"`` or ``"cuda"`` (None: the runner's default, CPU).
        retry_failed: redo runs whose status is ``failed``.
        runner: the per-run work (default :func:`weakcorr.experiments.run_group`).
        store: the run store (default ``ClaimingRunStore(out_dir)``); the claim seam.
        check_data: load the dataset once before writing anything, so a missing dataset is an
            error rather than a directory of failed runs.
        progress: called with a :class:`SweepEvent` at the start and after each run.

    Returns:
        A :class:`SweepSummary`.

    Raises:
        ValueError: bad ``device``/``workers``, or an ``out_dir`` that is a file or holds a
        sweep of another protocol (:func:`check_out_dir`); FileNotFoundError: dataset not found.
    """
    _check_device(device)
    if workers < 1:
        raise ValueError(f"`workers` must be >= 1, got {workers}")
    check_writable_dir(out_dir, "--out")  # '' would be the current directory
    store = store or ClaimingRunStore(out_dir)
    old_manifest = check_out_dir(cfg, store)
    _check_runs_dir(store)
    if check_data or runner is None:
        from . import experiments  # torch models and datasets: only when runs are real

        if check_data:
            try:
                experiments.check_data(cfg)
            except (FileNotFoundError, ValueError) as err:
                if str(err).startswith(("`data.", "`model.")):  # already names its field
                    raise
                field = "data.data_dir" if cfg.data.data_dir else "data.name"
                raise type(err)(f"`{field}` ({cfg.data.name!r}): {err}") from None
        runner = runner or experiments.run_group
    # Atomic: of two sweeps of different protocols started at the same instant (both passed
    # check_out_dir), the second is refused here, before it writes anything else.
    claim_protocol(store.root, "a2", _config.to_dict(cfg), _GRID_FIELDS,
                   label="`out_dir` (--out)", allowed=_GRID_TEXT)
    start = time.perf_counter()
    the_plan = plan(cfg, store, retry_failed=retry_failed)
    from . import __version__

    # The run ids of every sweep into this directory (one protocol: check_out_dir), in order,
    # merged under sweep.json's lock with those of sweeps running now.
    def merged(now: dict[str, Any] | None) -> dict[str, Any]:
        before = [*(old_manifest or {}).get("run_ids", []), *((now or {}).get("run_ids") or [])]
        return {"kind": "a2", "config": _config.to_dict(cfg),
                "run_ids": list(dict.fromkeys([*before, *the_plan.run_ids])),
                "weakcorr_version": __version__}

    store.update_manifest(merged)
    store.remove_stale_temp()
    tasks = _tasks(cfg, the_plan, store, runner, device)
    own_executor = executor is None
    if executor is None:
        executor = InProcessExecutor() if workers == 1 else SupervisedPoolExecutor(workers)
    counts = execute_all(tasks, executor, total=the_plan.total, skipped=the_plan.skipped,
                         start=start, progress=progress, shutdown=own_executor)
    todo = set(the_plan.todo)
    skipped_failed = sum(the_plan.states[rid] == "failed" and rid not in todo
                         for rid in the_plan.run_ids)
    return SweepSummary(str(out_dir), the_plan.total, the_plan.skipped, len(the_plan.todo),
                        counts, time.perf_counter() - start, skipped_failed)


def execute_all(tasks: Sequence[RunTask], executor: Any, *, total: int, skipped: int,
                start: float, progress: Callable[[SweepEvent], None] | None = None,
                shutdown: bool = False) -> dict[str, int]:
    """Run ``tasks`` on ``executor``; return the outcome counts by status.

    ``progress`` gets a :class:`SweepEvent` before the first run and after each one (``total``
    runs in the sweep, ``skipped`` of them finished before, times from ``start``, a
    ``time.perf_counter()`` value). ``shutdown``: shut the executor down at the end.
    """
    counts = {s: 0 for s in ("ok", "diverged", "failed", "claimed-elsewhere")}
    done = skipped
    if progress:
        progress(SweepEvent(done, total, skipped, None, 0.0))
    try:
        for outcomes in executor.map_unordered(execute_task, tasks):
            for out in outcomes:
                done += 1
                counts[out.status] = counts.get(out.status, 0) + 1
                if progress:
                    progress(SweepEvent(done, total, skipped, out, time.perf_counter() - start))
    finally:
        if shutdown:
            executor.shutdown()
    return counts


def finished(store: RunStore, rid: str) -> bool:
    """True if run ``rid`` has a finished record (``ok`` or ``diverged``)."""
    return store.state(rid) in FINISHED
