"""Fault injection (slow): workers SIGKILLed mid-run, whole sweeps SIGKILLed at seeded random
moments and resumed, two sweeps racing on one folder, a divergent learning rate.

Every test counts what it injected and asserts that no run is lost: the final folder holds one
complete record per run of the grid, nothing else.
"""

from __future__ import annotations

import collections
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from weakcorr import analysis, config, report, sweep
from weakcorr._executors import DaskLocalExecutor, SupervisedPoolExecutor
from weakcorr.results import RunStore, run_id

from ..sweep._fake import CountingRunner
from ._runners import SelfKillRunner, executions, leftovers, run_key, unparsable

pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[2]

FAKE = {
    "name": "fake",
    "model": {"widths": [8, 16], "depth": 2},
    "data": {"name": "teacher", "n_train": 64, "n_test": 32},
    "training": {"steps": 20, "batch_size": 16, "lr0": 0.1, "alphas": [0]},
    "seeds": 3,
    "logging": {"every": 5},
}

# A real (tiny) sweep: 12 runs of paired_sgd on digits, ~0.1-0.5 s each on one thread.
TINY = {
    "name": "tiny",
    "model": {"widths": [8, 16], "depth": 2},
    "data": {"name": "digits", "n_train": 256, "n_test": 64},
    "training": {"steps": 150, "batch_size": 32, "lr0": 0.1, "alphas": [0, -1]},
    "seeds": 3,
    "logging": {"every": 10},
}

def _executor(kind: str, **kwargs):
    if kind == "local":
        return SupervisedPoolExecutor(2, threads_per_worker=1, **kwargs)
    return DaskLocalExecutor(2, threads_per_worker=1, **kwargs)


def _complete(out: pathlib.Path, cfg: config.SweepConfig) -> None:
    """One parseable, finished record per run of the grid, and nothing else in the folder."""
    store = RunStore(out)
    expected = sorted(run_id(c) for c in config.expand(cfg))
    assert store.run_ids() == expected
    assert {store.state(r) for r in expected} <= {"ok", "diverged", "failed"}
    assert leftovers(out) == [] and unparsable(out) == []


# --------------------------------------------------------------------------- a worker dies


@pytest.mark.parametrize("kind", ["local", "dask-local"])
def test_worker_killed_mid_run_is_retried_once_then_recorded_failed(tmp_path, kind):
    cfg = config.load(FAKE)
    log = str(tmp_path / "executions.log")
    always, once = "8 0.0 1", "16 0.0 2"
    runner = SelfKillRunner(log, kill_always=(always,), kill_once=(once,))
    executor = _executor(kind)
    try:
        summary = sweep.run_sweep(cfg, str(tmp_path / "out"), runner=runner, check_data=False,
                                  executor=executor)
    finally:
        executor.shutdown()
    counts = collections.Counter(executions(log))
    injected = counts[always] + 1  # two kills of `always`, one of `once`
    assert injected == 3
    assert counts == {**{run_key(c): 1 for c in config.expand(cfg)}, always: 2, once: 2}
    assert summary.counts["ok"] == 5 and summary.counts["failed"] == 1
    _complete(tmp_path / "out", cfg)
    failed = [r for r in RunStore(tmp_path / "out").records() if r["status"] == "failed"]
    assert [run_key(r["config"]) for r in failed] == [always]
    assert failed[0]["error"].startswith("WorkerLost: the ") and "died" in failed[0]["error"]
    # The failed run is redone on request, like any failed run.
    again = sweep.run_sweep(cfg, str(tmp_path / "out"), runner=CountingRunner(log + ".2"),
                            check_data=False, retry_failed=True)
    assert (again.ran, again.counts["ok"]) == (1, 1)


# --------------------------------------------------------------------------- SIGKILL a sweep


def _threads_1() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}


def _table(out: pathlib.Path):
    return analysis.load_table(out).drop(columns=["wall_time_s"]).reset_index(drop=True)


def _n_done(out: pathlib.Path) -> int:
    runs = out / "runs"
    return len([p for p in runs.glob("*.json") if not p.name.startswith(".")]) if runs.is_dir() else 0


def _wait_group_gone(pgid: int, timeout: float = 30.0) -> bool:
    """True once no process of the group is left (the sweep's workers died with it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


_SWEEPER = textwrap.dedent("""
    import json, sys
    from weakcorr import config, sweep
    from weakcorr._executors import make_executor
    from tests.reliability._runners import StartLogRunner
    raw, out, log, kind = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    ex = make_executor(kind, workers=2)
    try:
        s = sweep.run_sweep(config.load(raw), out, runner=StartLogRunner(log, delay_s=0.15),
                            check_data=False, executor=ex)
    finally:
        ex.shutdown()
    print(json.dumps(s.to_dict()))
""")

KILL_GRID = {**FAKE, "model": {"widths": [8, 16, 32], "depth": 2},
             "training": {**FAKE["training"], "alphas": [0, -1]}, "seeds": 4}


@pytest.mark.parametrize("kind", ["local", "dask-local"])
def test_sigkill_sweep_at_random_moments_then_resume(tmp_path, kind):
    """A sweep (2 workers, runs of 0.15 s) is SIGKILLed three times, each after a seeded random
    number of new records plus a random fraction of a run, so mostly with runs in flight; then
    it is rerun to the end. Only the sweep process is killed: its workers must die with it."""
    cfg = config.load(KILL_GRID)
    total = len(config.expand(cfg))
    out, log = tmp_path / "out", tmp_path / "executions.log"
    cmd = [sys.executable, "-c", _SWEEPER, json.dumps(KILL_GRID), str(out), str(log), kind]
    rng = random.Random(f"sigkill-{kind}")
    kills = []
    for _ in range(3):
        before = _n_done(out)
        new, delay = rng.randint(1, 6), rng.uniform(0.0, 0.3)
        proc = subprocess.Popen(cmd, env=_threads_1(), cwd=ROOT, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while _n_done(out) < min(before + new, total) and proc.poll() is None:
            assert time.monotonic() < deadline, "the sweep made no progress"
            time.sleep(0.005)
        time.sleep(delay)
        alive = proc.poll() is None
        if alive:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        stderr = proc.stderr.read().decode()
        proc.stderr.close()
        assert _wait_group_gone(proc.pid), "worker processes outlived the killed sweep"
        assert not alive or proc.returncode == -signal.SIGKILL, stderr
        kills.append({"after_new": new, "delay_s": round(delay, 2), "done": _n_done(out),
                      "killed": alive})
        assert unparsable(out) == []  # every file there parses, at any moment
        assert {RunStore(out).state(r) for r in RunStore(out).run_ids()} <= {"ok"}
    assert sum(k["killed"] for k in kills) == 3 and kills[-1]["done"] < total, kills
    final = subprocess.run(cmd, env=_threads_1(), cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
    assert final.returncode == 0, final.stderr
    summary = json.loads(final.stdout)
    assert summary["counts"]["claimed-elsewhere"] == 0
    assert summary["skipped"] == kills[-1]["done"] and summary["ran"] == total - kills[-1]["done"]
    _complete(out, cfg)
    reference = tmp_path / "reference"
    sweep.run_sweep(cfg, str(reference), runner=CountingRunner(str(tmp_path / "ref.log")),
                    check_data=False)
    assert _table(out).equals(_table(reference)), kills
    # Runs lost: none. Runs started twice: those in flight at a kill (at most 2 per kill), and
    # at least one kill caught a run in flight.
    starts = collections.Counter(executions(log))
    assert set(starts) == {run_key(c) for c in config.expand(cfg)}
    rerun = sum(starts.values()) - total
    assert 1 <= rerun <= 2 * len(kills), (starts.most_common(4), kills)
    print(f"{kind}: {len(kills)} kills {kills}, {total} runs, 0 lost, {rerun} runs in flight "
          "at a kill were rerun")


# --------------------------------------------------------------------------- racing sweeps

_RACER = textwrap.dedent("""
    import json, sys
    from weakcorr import config, sweep
    from weakcorr._executors import SupervisedPoolExecutor
    from tests.sweep._fake import CountingRunner
    raw, out, log, pool = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4] == "1"
    ex = SupervisedPoolExecutor(2, threads_per_worker=1) if pool else None
    try:
        s = sweep.run_sweep(config.load(raw), out, runner=CountingRunner(log, delay_s=0.02),
                            check_data=False, executor=ex)
    finally:
        if ex is not None:
            ex.shutdown()
    print(json.dumps(s.to_dict()))
""")


@pytest.mark.parametrize("round_", range(3))
def test_two_sweeps_on_overlapping_grids_run_each_run_once(tmp_path, round_):
    """Sweep A (in-process) and sweep B (two worker processes) start together on grids that
    share 4 of their 6 seeds, into one folder; every execution is appended to one log."""
    rng = random.Random(round_)
    base = {**FAKE, "model": {"widths": [8, 16, 32], "depth": 2},
            "training": {**FAKE["training"], "alphas": [0, -1]}}
    grid_a = {**base, "seeds": [0, 1, 2, 3, 4, 5]}
    grid_b = {**base, "seeds": [7, 6, 5, 4, 3, 2] if round_ % 2 else [2, 3, 4, 5, 6, 7]}
    out, log = tmp_path / "shared", tmp_path / "executions.log"
    procs = []
    for grid, pool in ((grid_a, "0"), (grid_b, "1")):
        procs.append(subprocess.Popen(
            [sys.executable, "-c", _RACER, json.dumps(grid), str(out), str(log), pool],
            cwd=ROOT, env=_threads_1(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True))
        time.sleep(rng.uniform(0.0, 1.0))
    results = [p.communicate(timeout=300) for p in procs]
    for p, (stdout, stderr) in zip(procs, results):
        assert p.returncode == 0, stderr
    summaries = [json.loads(stdout) for stdout, _ in results]
    union = {run_key(c) for g in (grid_a, grid_b) for c in config.expand(config.load(g))}
    counts = collections.Counter(executions(log))
    assert set(counts) == union and set(counts.values()) == {1}, counts.most_common(3)
    assert sum(s["counts"]["ok"] for s in summaries) == len(union)
    overlap = 3 * 2 * 4
    assert sum(s["counts"]["claimed-elsewhere"] + s["skipped"] for s in summaries) == overlap
    assert len(RunStore(out).run_ids()) == len(union)
    assert leftovers(out) == [] and unparsable(out) == []


# --------------------------------------------------------------------------- divergence


def test_divergent_learning_rate_is_recorded_and_reported(tmp_path):
    raw = {**TINY, "model": {"widths": [8], "depth": 2},
           "training": {**TINY["training"], "steps": 40, "lr0": 1e4, "alphas": [0, -5]},
           "seeds": 2}
    cfg = config.load(raw)
    summary = sweep.run_sweep(cfg, str(tmp_path / "out"))
    assert summary.counts["diverged"] == 2 and summary.counts["ok"] == 2  # lr 1e4 vs 0.3
    records = list(RunStore(tmp_path / "out").records())
    diverged = [r for r in records if r["status"] == "diverged"]
    assert {r["config"]["training"]["alpha"] for r in diverged} == {0.0}
    for r in diverged:
        assert isinstance(r["diverged_step"], int) and 0 <= r["diverged_step"] <= 40
    rep = report.write_report(tmp_path / "out", n_boot=50)
    text = rep.markdown.read_text()
    section = text[text.index("## Failed or diverged runs"):]
    assert section.count("| diverged |") == 2, section
    for r in diverged:
        assert f"| {r['diverged_step']} |" in section
