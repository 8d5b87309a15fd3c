"""Determinism (slow): one config and seed give bit-identical metrics and logs in-process, on the
local pool and on dask-local (through `python -m weakcorr`, and with --collect), on CPU.

Bit-identity needs the same torch thread count everywhere (a reduction split over more threads
sums in another order), so every executor runs its runs on one thread here.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch

from weakcorr import config, sweep
from weakcorr._executors import DaskLocalExecutor, SupervisedPoolExecutor
from weakcorr.results import RunStore

pytestmark = pytest.mark.slow

TINY = {
    "name": "tiny",
    "model": {"widths": [8, 16], "depth": 2},
    "data": {"name": "digits", "n_train": 256, "n_test": 64},
    "training": {"steps": 40, "batch_size": 32, "lr0": 0.1, "alphas": [0, -1]},
    "seeds": 2,
    "logging": {"every": 10},
}


def _records(out: pathlib.Path) -> dict[str, dict]:
    return {r["run_id"]: r for r in RunStore(out).records()}


def _same(a: dict[str, dict], b: dict[str, dict]) -> None:
    assert sorted(a) == sorted(b) and len(a) == 8
    for rid in a:
        assert a[rid]["status"] == b[rid]["status"] == "ok"
        assert a[rid]["metrics"] == b[rid]["metrics"], rid  # exact, not approximate
        assert a[rid]["logs"] == b[rid]["logs"], rid


def test_bit_identical_metrics_across_executors(tmp_path):
    cfg = config.load(TINY)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sweep.run_sweep(cfg, str(tmp_path / "inprocess"), executor=sweep.InProcessExecutor())
    finally:
        torch.set_num_threads(threads)
    reference = _records(tmp_path / "inprocess")

    pool = SupervisedPoolExecutor(2, threads_per_worker=1)
    try:
        sweep.run_sweep(cfg, str(tmp_path / "pool"), executor=pool)
    finally:
        pool.shutdown()
    _same(reference, _records(tmp_path / "pool"))

    collect = DaskLocalExecutor(2, threads_per_worker=1, collect=True)
    try:
        sweep.run_sweep(cfg, str(tmp_path / "collect"), executor=collect)
    finally:
        collect.shutdown()
    collected = _records(tmp_path / "collect")
    _same(reference, collected)
    assert {r["writer"]["pid"] for r in collected.values()} == {os.getpid()}  # written here

    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(json.dumps(TINY))
    proc = subprocess.run(
        [sys.executable, "-m", "weakcorr", "sweep", str(cfg_path), "--out", str(tmp_path / "dask"),
         "--executor", "dask-local", "--workers", "2", "--quiet", "--json"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["counts"]["ok"] == 8
    on_dask = _records(tmp_path / "dask")
    _same(reference, on_dask)
    assert len({r["writer"]["pid"] for r in on_dask.values()} - {os.getpid()}) >= 1
