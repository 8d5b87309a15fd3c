"""The sweep runner with fake runners: one atomic JSON per run, resume, retry, pools, seed
batches, and a sweep SIGKILLed mid-way then resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from weakcorr import config, sweep
from weakcorr.results import RunStore, atomic_write_json, read_json, run_id

from ._fake import CountingRunner, fake_runner

SMALL = {
    "name": "fake",
    "model": {"widths": [8, 16, 32], "depth": 2},
    "data": {"name": "teacher", "n_train": 64, "n_test": 32},
    "training": {"steps": 20, "batch_size": 16, "lr0": 0.1, "alphas": [0, -1]},
    "seeds": 3,
    "logging": {"every": 5},
}
N_SMALL = 3 * 2 * 3


def _cfg(**overrides: object) -> config.SweepConfig:
    return config.load(SMALL, [f"{k.replace('__', '.')}={json.dumps(v)}"
                               for k, v in overrides.items()])


def _snapshot(root) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (root / "runs").glob("*.json")}


def _table(root):
    from weakcorr import analysis

    return analysis.load_table(root).drop(columns=["wall_time_s"])


def test_one_json_per_run_named_by_hash(tmp_path):
    cfg = _cfg()
    events = []
    summary = sweep.run_sweep(cfg, str(tmp_path), runner=fake_runner, check_data=False,
                              progress=events.append)
    assert (summary.total, summary.skipped, summary.ran) == (N_SMALL, 0, N_SMALL)
    assert summary.counts["ok"] == N_SMALL
    store = RunStore(tmp_path)
    expected = {run_id(c) for c in config.expand(cfg)}
    assert set(store.run_ids()) == expected
    for rid in expected:
        rec = read_json(store.path(rid))
        assert rec["run_id"] == rid and run_id(rec["config"]) == rid
        assert rec["train_config"] == {"lr": 0.0}  # the runner's own config is kept aside
    manifest = store.read_manifest()
    assert manifest["config"] == config.to_dict(cfg) and len(manifest["run_ids"]) == N_SMALL
    assert [e.done for e in events] == list(range(N_SMALL + 1))
    assert events[0].outcome is None and events[-1].total == N_SMALL
    assert not list((tmp_path / "runs").glob(".*"))  # no temp files left


def test_rerun_skips_finished_runs(tmp_path):
    runner = CountingRunner(str(tmp_path / "calls.txt"))
    out = tmp_path / "sweep"
    sweep.run_sweep(_cfg(), str(out), runner=runner, check_data=False)
    before = _snapshot(out)
    summary = sweep.run_sweep(_cfg(), str(out), runner=runner, check_data=False)
    assert (summary.skipped, summary.ran) == (N_SMALL, 0)
    assert len(runner.calls()) == N_SMALL
    assert _snapshot(out) == before
    # More seeds: only the new ones run.
    summary = sweep.run_sweep(_cfg(seeds=4), str(out), runner=runner, check_data=False)
    assert (summary.skipped, summary.ran) == (N_SMALL, 6)
    assert sorted({line.split()[2] for line in runner.calls()[N_SMALL:]}) == ["3"]


def test_failed_runs_redone_only_with_retry(tmp_path):
    out = tmp_path / "sweep"
    failing = CountingRunner(str(tmp_path / "a.txt"), fail_seeds=(1,))
    summary = sweep.run_sweep(_cfg(), str(out), runner=failing, check_data=False)
    assert summary.counts == {"ok": 12, "diverged": 0, "failed": 6, "claimed-elsewhere": 0}
    rec = next(r for r in RunStore(out).records() if r["status"] == "failed")
    assert rec["error"] == "RuntimeError: boom at seed 1" and "Traceback" in rec["traceback"]
    assert rec["config"]["seed"] == 1
    fixed = CountingRunner(str(tmp_path / "b.txt"))
    assert sweep.run_sweep(_cfg(), str(out), runner=fixed, check_data=False).ran == 0
    assert fixed.calls() == []
    summary = sweep.run_sweep(_cfg(), str(out), runner=fixed, check_data=False, retry_failed=True)
    assert summary.ran == 6 and summary.counts["ok"] == 6
    assert {line.split()[2] for line in fixed.calls()} == {"1"}


def test_corrupt_file_is_redone(tmp_path):
    cfg = _cfg()
    sweep.run_sweep(cfg, str(tmp_path), runner=fake_runner, check_data=False)
    rid = run_id(config.expand(cfg)[4])
    RunStore(tmp_path).path(rid).write_text('{"status": "ok", "metr')
    assert RunStore(tmp_path).state(rid) == "corrupt"
    summary = sweep.run_sweep(cfg, str(tmp_path), runner=fake_runner, check_data=False)
    assert summary.ran == 1 and RunStore(tmp_path).state(rid) == "ok"


def test_seed_batches_group_seeds_of_one_width(tmp_path):
    runner = CountingRunner(str(tmp_path / "calls.txt"))
    cfg = _cfg(execution__seed_batch=2, execution__seed_batch_max_width=16)
    sweep.run_sweep(cfg, str(tmp_path / "s"), runner=runner, check_data=False)
    sizes = {}
    for line in runner.calls():
        width, _, _, size, _ = line.split()
        sizes.setdefault(int(width), set()).add(int(size))
    # 3 seeds in batches of at most 2 for widths <= 16; width 32 runs alone.
    assert sizes == {8: {1, 2}, 16: {1, 2}, 32: {1}}
    assert _table(tmp_path / "s").equals(_table_of_plain_sweep(tmp_path))


def _table_of_plain_sweep(tmp_path):
    out = tmp_path / "plain"
    if not out.exists():
        sweep.run_sweep(_cfg(), str(out), runner=fake_runner, check_data=False)
    return _table(out)


def test_local_pool_matches_in_process(tmp_path):
    runner = CountingRunner(str(tmp_path / "calls.txt"))
    summary = sweep.run_sweep(_cfg(), str(tmp_path / "pool"), runner=runner, workers=2,
                              check_data=False)
    assert summary.counts["ok"] == N_SMALL
    pids = {line.split()[4] for line in runner.calls()}
    assert str(os.getpid()) not in pids and 1 <= len(pids) <= 2
    assert _table(tmp_path / "pool").equals(_table_of_plain_sweep(tmp_path))


def test_executor_is_pluggable(tmp_path):
    class Reversed:
        used = False

        def map_unordered(self, fn, tasks):
            Reversed.used = True
            for t in reversed(list(tasks)):
                yield fn(t)

        def shutdown(self):
            raise AssertionError("a caller-owned executor is not shut down by run_sweep")

    sweep.run_sweep(_cfg(), str(tmp_path / "r"), runner=fake_runner, check_data=False,
                    executor=Reversed())
    assert Reversed.used and _table(tmp_path / "r").equals(_table_of_plain_sweep(tmp_path))


def test_claim_seam(tmp_path):
    class OddOnly(RunStore):
        def claim(self, rid):
            return int(rid, 16) % 2 == 1

    store = OddOnly(tmp_path)
    summary = sweep.run_sweep(_cfg(), str(tmp_path), runner=fake_runner, check_data=False,
                              store=store)
    odd = {r for r in (run_id(c) for c in config.expand(_cfg())) if int(r, 16) % 2}
    assert set(store.run_ids()) == odd
    assert summary.counts["claimed-elsewhere"] == N_SMALL - len(odd)


@pytest.mark.parametrize("kwargs,match", [
    ({"device": "tpu"}, "`device` must be 'cpu' or 'cuda', got 'tpu'"),
    ({"workers": 0}, "`workers` must be >= 1, got 0"),
], ids=["device", "workers"])
def test_bad_arguments_write_nothing(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sweep.run_sweep(_cfg(), str(tmp_path / "x"), runner=fake_runner, check_data=False,
                        **kwargs)
    assert not (tmp_path / "x").exists()


def test_a_directory_grows_by_grid_but_keeps_one_protocol(tmp_path):
    """More widths, α or seeds into a sweep's directory: accepted, the manifest lists every
    run. Another protocol (steps, lr_factor, logging, ...) or kind: refused before anything is
    written, since the report fits all runs of a directory together."""
    out = tmp_path / "sweep"
    sweep.run_sweep(_cfg(), str(out), runner=fake_runner, check_data=False)
    sweep.run_sweep(_cfg(seeds=4, training__alphas=[-1]), str(out), runner=fake_runner,
                    check_data=False)
    manifest = RunStore(out).read_manifest()
    first = [run_id(c) for c in config.expand(_cfg())]
    grown = [run_id(c) for c in config.expand(_cfg(seeds=4))]
    assert manifest["run_ids"][:N_SMALL] == first and set(manifest["run_ids"]) <= set(grown)
    assert len(manifest["run_ids"]) == N_SMALL + 3  # seed 3 at α = -1, three widths
    assert manifest["kind"] == "a2" and manifest["config"]["seeds"] == [0, 1, 2, 3]
    before = (out / "sweep.json").read_text(), _snapshot(out)
    for overrides, field in (({"training__steps": 30}, "training.steps: 20 -> 30"),
                             ({"training__lr_factor": "sqrt(n)"}, "training.lr_factor: '1' -> "),
                             ({"logging__every": 2}, "logging.every: 5 -> 2")):
        with pytest.raises(ValueError, match=f"holds a sweep of another protocol \\({field}"):
            sweep.run_sweep(_cfg(**overrides), str(out), runner=fake_runner, check_data=False)
    assert ((out / "sweep.json").read_text(), _snapshot(out)) == before
    a1 = tmp_path / "a1"
    RunStore(a1).write_manifest({"kind": "a1", "config": {}})
    with pytest.raises(ValueError, match="holds a sweep of another kind \\('a1'"):
        sweep.run_sweep(_cfg(), str(a1), runner=fake_runner, check_data=False)
    assert not (a1 / "runs").exists()


@pytest.mark.parametrize("where", ["out", "runs"])
def test_out_dir_that_is_a_file_is_an_error(tmp_path, where):
    out = tmp_path / "x"
    if where == "out":
        out.write_text("")
    else:
        out.mkdir()
        (out / "runs").write_text("")
    with pytest.raises(ValueError, match=r"`--out` .* is a file, not a directory"):
        sweep.run_sweep(_cfg(), str(out), runner=fake_runner, check_data=False)
    assert where == "out" or sorted(p.name for p in out.iterdir()) == ["runs"]


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "a.json"
    atomic_write_json(path, {"v": 1})

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_json(path, {"v": 2})
    assert read_json(path) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_atomic_write_json_safe(tmp_path):
    path = atomic_write_json(tmp_path / "b.json", {"x": float("nan"), "y": (1, float("inf"))})
    assert json.loads(path.read_text()) == {"x": None, "y": [1, None]}


def test_run_id_is_a_stable_hash():
    """sha256 of canonical JSON (sorted keys, no spaces): a fixed value, key order irrelevant."""
    import hashlib

    cfg = {"seed": 1, "model": {"width": 8, "depth": 2}, "training": {"lr": 0.1, "alpha": -0.5}}
    canonical = '{"model":{"depth":2,"width":8},"seed":1,"training":{"alpha":-0.5,"lr":0.1}}'
    assert run_id(cfg) == hashlib.sha256(canonical.encode()).hexdigest()[:16] == "3f1189bb2dd361cc"
    assert run_id(dict(reversed(cfg.items()))) == run_id(cfg)
    assert run_id({**cfg, "seed": 2}) != run_id(cfg)


_CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from weakcorr import config, sweep
    from tests.sweep._fake import CountingRunner
    cfg = config.load({cfg!r})
    sweep.run_sweep(cfg, {out!r}, runner=CountingRunner({log!r}, delay_s=0.1),
                    check_data=False)
""")


def test_sigkill_mid_sweep_then_resume(tmp_path):
    raw = {**SMALL, "seeds": 4}
    total = 3 * 2 * 4
    out = tmp_path / "killed"
    log = tmp_path / "calls.txt"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = _CHILD.format(root=root, cfg=raw, out=str(out), log=str(log))
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            done = list((out / "runs").glob("*.json")) if (out / "runs").exists() else []
            if len(done) >= 4 or proc.poll() is not None:
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        stderr = proc.stderr.read().decode()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, stderr
    store = RunStore(out)
    n_done = len(store.run_ids())
    assert 4 <= n_done < total
    for rid in store.run_ids():  # every file there is complete JSON of a finished run
        assert store.state(rid) == "ok"
    before = _snapshot(out)

    resumed = CountingRunner(str(tmp_path / "resumed.txt"))
    summary = sweep.run_sweep(config.load(raw), str(out), runner=resumed, check_data=False)
    assert (summary.skipped, summary.ran) == (n_done, total - n_done)
    assert len(resumed.calls()) == total - n_done
    after = _snapshot(out)
    assert {k: after[k] for k in before} == before  # finished runs were not rewritten
    assert not list((out / "runs").glob(".*.tmp"))  # the killed writer's temp file is cleaned

    plain = tmp_path / "plain"
    sweep.run_sweep(config.load(raw), str(plain), runner=CountingRunner(str(tmp_path / "p.txt")),
                    check_data=False)
    assert _table(out).equals(_table(plain))
