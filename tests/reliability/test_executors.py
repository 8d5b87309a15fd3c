"""Executors: what the CLI flags build, Dask's optional import, lost-task records, outcome
relabelling; a worker error and an abandoned map (slow: they spawn workers)."""

from __future__ import annotations

import dataclasses
import os
import sys

import pytest

from weakcorr import config, sweep
from weakcorr._claims import ClaimingRunStore
from weakcorr._executors import (
    DaskExecutor, DaskLocalExecutor, SupervisedPoolExecutor, WorkerLostError, lost_outcomes,
    make_executor, own_outcomes,
)
from weakcorr.results import RunStore, run_id

from ..sweep._fake import fake_runner
from .test_claims import _plant

SMALL = {
    "model": {"widths": [8], "depth": 2},
    "data": {"name": "teacher", "n_train": 64, "n_test": 32},
    "training": {"steps": 20, "batch_size": 16, "lr0": 0.1, "alphas": [0]},
    "seeds": 2, "logging": {"every": 5},
}


@pytest.mark.parametrize("kind,kwargs,cls", [
    ("auto", {}, type(None)),
    ("auto", {"workers": 3}, type(None)),
    ("inprocess", {}, sweep.InProcessExecutor),
    ("local", {"workers": 2}, SupervisedPoolExecutor),
    ("dask-local", {"workers": 2}, DaskLocalExecutor),
    ("dask-local", {"workers": 2, "collect": True}, DaskLocalExecutor),
    ("dask", {"scheduler": "tcp://10.0.0.5:8786"}, DaskExecutor),
    ("dask", {"scheduler": "tls://[::1]:8786", "collect": True}, DaskExecutor),
], ids=["auto", "auto-workers", "inprocess", "local", "dask-local", "dask-local-collect", "dask",
        "dask-tls-ipv6"])
def test_make_executor_builds_without_starting_anything(kind, kwargs, cls):
    ex = make_executor(kind, **kwargs)
    assert type(ex) is cls
    if isinstance(ex, DaskExecutor):
        assert ex._client is None and ex.collect is kwargs.get("collect", False)
    if isinstance(ex, DaskLocalExecutor):
        assert ex.workers == 2 and ex._cluster is None
    if isinstance(ex, SupervisedPoolExecutor):
        assert ex.workers == 2 and ex.retries == 1 and ex._idle == []


def test_dask_executor_needs_exactly_one_of_scheduler_and_client():
    with pytest.raises(ValueError, match="Precisely one of `scheduler` and `client`"):
        DaskExecutor()
    with pytest.raises(ValueError, match="Precisely one of `scheduler` and `client`"):
        DaskExecutor("tcp://127.0.0.1:8786", client=object())


@pytest.mark.parametrize("bad", ["127.0.0.1:8786", "tcp://host", "http://h:1", "tcp://h:port", 8786])
def test_scheduler_address_is_checked(bad):
    with pytest.raises(ValueError, match="`scheduler` must look like tcp://HOST:PORT"):
        DaskExecutor(bad)


@pytest.mark.parametrize("cls,args", [(DaskLocalExecutor, (0,)), (SupervisedPoolExecutor, (0,))])
def test_worker_counts_are_checked(cls, args):
    with pytest.raises(ValueError, match="`workers` must be an integer >= 1, got 0"):
        cls(*args)


def test_missing_dask_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    for make in (lambda: DaskLocalExecutor(1), lambda: DaskExecutor("tcp://127.0.0.1:8786")):
        with pytest.raises(ImportError, match=r"Install it via `pip install weakcorr\[dask\]`"):
            make()


def test_importing_weakcorr_sweep_does_not_import_dask():
    import subprocess

    code = "import sys, weakcorr.sweep; print([m for m in ('dask', 'distributed') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _task(store):
    cfgs = config.expand(config.load(SMALL))
    return sweep.RunTask(store, tuple(run_id(c) for c in cfgs), tuple(cfgs), fake_runner)


def test_lost_task_is_recorded_failed_unless_another_sweep_holds_it(tmp_path):
    store = ClaimingRunStore(tmp_path)
    task = _task(store)
    mine, theirs = task.run_ids
    _plant(store, mine, pid=1, host="elsewhere", sweep_token=store.sweep_token)  # lost worker
    _plant(store, theirs, pid=1, host="elsewhere")  # a live sweep on another machine
    outcomes = lost_outcomes(task, "WorkerLost: boom")
    assert [(o.run_id, o.status) for o in outcomes] == [(mine, "failed"), (theirs, "claimed-elsewhere")]
    rec = store.read(mine)
    assert rec["status"] == "failed" and rec["error"] == "WorkerLost: boom"
    assert rec["config"] == task.configs[0] and run_id(rec["config"]) == mine
    assert store.read(theirs) is None and store.claims() == [theirs]


def test_lost_task_that_is_not_a_sweep_run_raises():
    with pytest.raises(WorkerLostError, match="boom"):
        lost_outcomes(("not", "a", "RunTask"), "boom")


def test_outcomes_of_runs_this_sweep_wrote_are_relabelled(tmp_path):
    store = ClaimingRunStore(tmp_path)
    task = _task(store)
    a, b = task.run_ids
    store.write(a, {"status": "ok", "wall_time_s": 1.5})  # written by a lost attempt of ours
    ClaimingRunStore(tmp_path).write(b, {"status": "ok"})  # written by another sweep
    outs = own_outcomes(task, [sweep.RunOutcome(a, "claimed-elsewhere"),
                               sweep.RunOutcome(b, "claimed-elsewhere")])
    assert [(o.status, o.wall_time_s) for o in outs] == [("ok", 1.5), ("claimed-elsewhere", None)]
    plain = dataclasses.replace(task, store=RunStore(tmp_path))
    assert own_outcomes(plain, outs) == outs


def _boom(task):
    raise KeyError(f"no {task}")


def _pid(task):
    return os.getpid()


@pytest.mark.slow
def test_supervised_pool_runs_in_workers_and_raises_worker_errors():
    pool = SupervisedPoolExecutor(2, threads_per_worker=1)
    try:
        pids = set(pool.map_unordered(_pid, range(6)))
        assert os.getpid() not in pids and 1 <= len(pids) <= 2
        with pytest.raises(KeyError, match="no 3") as info:
            list(pool.map_unordered(_boom, [3]))
        assert any("in a worker process" in n for n in getattr(info.value, "__notes__", []))
        gen = pool.map_unordered(_pid, range(4))
        next(gen)
        gen.close()  # the caller stops early: busy workers are stopped, idle ones kept
        assert len(set(pool.map_unordered(_pid, range(2)))) >= 1
    finally:
        pool.shutdown()
    assert pool._idle == []
