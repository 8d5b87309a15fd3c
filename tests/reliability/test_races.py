"""Sweeps racing on one directory (issue 18, items 4, 5 and 7).

The interleavings are forced, not hoped for: a barrier after each sweep's directory check
makes both sweeps pass the check before either writes, which is what two sweeps started at
the same instant do. Before the change, two sweeps of different protocols were then both
accepted (the directory held runs of both), sweep.json lost the run ids of one of two sweeps
on overlapping grids, and two `weakcorr a1` into one directory ran every run twice (A.1 had no
claims). The process test at the end races real processes without a barrier.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap
import threading

import pytest

from weakcorr import _a1, _a1_report, config, sweep
from weakcorr.results import PROTOCOL, RunStore, run_id

from ..a1._tiny import tiny
from ..sweep._fake import fake_runner

GRID = {
    "name": "fake",
    "model": {"widths": [8, 16], "depth": 2},
    "data": {"name": "teacher", "n_train": 64, "n_test": 32},
    "training": {"steps": 20, "batch_size": 16, "lr0": 0.1, "alphas": [0]},
    "seeds": 3,
    "logging": {"every": 5},
}


def _race(targets: list, monkeypatch, module, name: str = "check_out_dir") -> list:
    """Run ``targets`` in threads that all pass ``module.name`` before any goes on; returns
    each one's result or exception."""
    barrier = threading.Barrier(len(targets), timeout=20)
    real = getattr(module, name)

    def checked(*args, **kwargs):
        out = real(*args, **kwargs)
        barrier.wait()
        return out

    monkeypatch.setattr(module, name, checked)
    results: list = [None] * len(targets)

    def run(i):
        try:
            results[i] = targets[i]()
        except BaseException as err:  # noqa: BLE001 - inspected by the test
            results[i] = err

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(targets))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_two_protocols_started_together_one_is_refused(tmp_path, monkeypatch):
    out = str(tmp_path / "s")
    cfgs = [config.load({**GRID, "training": {**GRID["training"], "steps": s}}) for s in (40, 41)]
    results = _race([lambda c=c: sweep.run_sweep(c, out, runner=fake_runner, check_data=False)
                     for c in cfgs], monkeypatch, sweep)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], ValueError), results
    assert "holds a sweep of another protocol (training.steps: " in str(errors[0])
    assert "by its protocol.json" in str(errors[0])
    steps = {r["config"]["training"]["steps"] for r in RunStore(out).records()}
    assert len(steps) == 1 and len(list(RunStore(out).records())) == 6  # one protocol only
    held = json.loads((tmp_path / "s" / PROTOCOL).read_text())
    assert held["kind"] == "a2" and held["config"]["training"]["steps"] == steps.pop()


def test_overlapping_grids_started_together_lose_no_run_ids(tmp_path, monkeypatch):
    """sweep.json listed 30 of 45 runs in 4 of 4 trials: each sweep wrote its own list."""
    out = str(tmp_path / "s")
    cfgs = [config.load({**GRID, "seeds": seeds}) for seeds in ([0, 1, 2], [2, 3, 4])]
    results = _race([lambda c=c: sweep.run_sweep(c, out, runner=fake_runner, check_data=False)
                     for c in cfgs], monkeypatch, sweep)
    assert not any(isinstance(r, BaseException) for r in results), results
    listed = RunStore(out).read_manifest()["run_ids"]
    union = {run_id(c) for cfg in cfgs for c in config.expand(cfg)}
    assert len(listed) == len(set(listed)) == len(union) == 10 and set(listed) == union


def test_manifest_updates_are_serialised(tmp_path):
    """Read-modify-write of sweep.json by 8 threads, each slow in the middle: none is lost."""
    store = RunStore(tmp_path)
    store.write_manifest({"run_ids": []})

    def add(i):
        def update(now):
            threading.Event().wait(0.01)  # widen the window between read and write
            return {"run_ids": [*(now or {}).get("run_ids", []), f"r{i}"]}
        RunStore(tmp_path).update_manifest(update)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(store.read_manifest()["run_ids"]) == [f"r{i}" for i in range(8)]


# -- A.1


class _A1Runner:
    """Fake A.1 runner: appends each run to ``log`` and waits at a barrier on its first run,
    so that two sweeps are both running before either finishes one."""

    def __init__(self, log, barrier):
        self.log, self.barrier, self.first = log, barrier, True

    def __call__(self, configs, *, device):
        if self.first:
            self.first = False
            self.barrier.wait()
        out = []
        for c in configs:
            fd = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.write(fd, f"{c['data']['name']} {c['model']['depth']} {c['model']['width']} "
                     f"{c['model']['activation']} {c['seed']}\n".encode())
            os.close(fd)
            out.append({"kind": "a1", "status": "ok", "seed": c["seed"], "metrics": {},
                        "logs": [], "wall_time_s": 0.0, "device": "cpu"})
        return out


def test_two_a1_sweeps_into_one_directory_split_the_runs(tmp_path):
    cfg = _a1.load_config(tiny(model={"widths": [4, 8], "depths": [1], "activations": ["relu"]}))
    out = tmp_path / "a1"
    log = tmp_path / "runs.log"
    barrier = threading.Barrier(2, timeout=20)
    summaries: list = [None, None]

    def go(i):
        try:
            summaries[i] = _a1_report.run_a1(cfg, out, runner=_A1Runner(str(log), barrier))
        except BaseException as err:  # noqa: BLE001
            summaries[i] = err

    threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(isinstance(s, sweep.SweepSummary) for s in summaries), summaries
    lines = log.read_text().splitlines()
    n = summaries[0].total
    assert len(lines) == len(set(lines)) == n  # every run once, none twice
    assert sum(s.counts["ok"] for s in summaries) == n
    assert sum(s.counts["claimed-elsewhere"] for s in summaries) == n
    assert len(list(RunStore(out).records())) == n and not list((out / "runs").glob("*.claim"))


def test_two_a1_protocols_started_together_one_is_refused(tmp_path, monkeypatch):
    out = tmp_path / "a1"
    cfgs = [_a1.load_config(tiny(model={"widths": [4], "depths": [1], "activations": ["relu"]},
                          training={"steps": s})) for s in (8, 9)]
    runner = _A1Runner(str(tmp_path / "log"), threading.Barrier(1))
    results = _race([lambda c=c: _a1_report.run_a1(c, out, runner=runner) for c in cfgs],
                    monkeypatch, _a1_report)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1 and "holds a sweep of another protocol (training.steps:" in str(
        errors[0]), results


# -- real processes, no barrier


RACER = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, sys.argv[4])
    from weakcorr import config, sweep
    from tests.sweep._fake import fake_runner
    change = json.loads(sys.argv[2])
    cfg = config.load({GRID!r} | {{k: v if k == "seeds" else {{**{GRID!r}[k], **v}}
                                  for k, v in change.items()}})
    open(sys.argv[3] + "." + str(sorted(change.items())).replace(" ", ""), "w").close()  # ready
    while not os.path.exists(sys.argv[3]):  # go
        pass
    try:
        sweep.run_sweep(cfg, sys.argv[1], runner=fake_runner, check_data=False)
        print("accepted")
    except ValueError as err:
        print("refused", err)
""")


def _race_processes(tmp_path, changes: list[dict]) -> tuple[list[str], pathlib.Path]:
    """Start one sweep process per config change, release them together; what each said."""
    import time

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    script = tmp_path / "racer.py"
    script.write_text(RACER.format(GRID=GRID))
    out, go = tmp_path / "s", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, str(script), str(out), json.dumps(c), str(go),
                               root], stdout=subprocess.PIPE, text=True) for c in changes]
    ready = [f"{go}." + str(sorted(c.items())).replace(" ", "") for c in changes]
    deadline = time.time() + 120
    while not all(os.path.exists(r) for r in ready) and time.time() < deadline:
        time.sleep(0.05)
    go.touch()
    return sorted(p.communicate(timeout=120)[0].split()[0] for p in procs), out


@pytest.mark.slow
def test_two_protocols_in_processes_at_the_same_instant(tmp_path):
    """The issue's race (5 of 5 trials accepted both): two processes, released together."""
    said, out = _race_processes(tmp_path, [{"training": {"steps": 40}},
                                           {"training": {"steps": 41}}])
    assert said == ["accepted", "refused"]
    assert len({r["config"]["training"]["steps"] for r in RunStore(out).records()}) == 1


@pytest.mark.slow
def test_overlapping_grids_in_processes_lose_no_run_ids(tmp_path):
    """The issue's lost update (sweep.json listed 30 of 45 runs in 4 of 4 trials)."""
    changes = [{"seeds": [0, 1, 2]}, {"seeds": [2, 3, 4]}, {"seeds": [4, 5, 6]}]
    said, out = _race_processes(tmp_path, changes)
    assert said == ["accepted"] * 3
    assert sorted(RunStore(out).read_manifest()["run_ids"]) == RunStore(out).run_ids()
    assert len(RunStore(out).run_ids()) == 14


def test_check_out_dir_reads_the_protocol_without_sweep_json(tmp_path):
    """A first sweep killed after fixing its protocol, before writing sweep.json: a sweep of
    another protocol is refused by the read-only check (e.g. --dry-run's), writing nothing."""
    first = config.load(GRID)
    sweep.run_sweep(first, str(tmp_path), runner=fake_runner, check_data=False)
    (tmp_path / "sweep.json").unlink()
    before = sorted(p.name for p in tmp_path.rglob("*"))
    other = config.load({**GRID, "training": {**GRID["training"], "steps": 7}})
    with pytest.raises(ValueError, match=r"another protocol \(training.steps: 20 -> 7; by its "
                       r"protocol.json"):
        sweep.check_out_dir(other, RunStore(tmp_path))
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    sweep.check_out_dir(config.load({**GRID, "seeds": 5}), RunStore(tmp_path))  # grid: fine
