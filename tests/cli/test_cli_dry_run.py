"""`weakcorr sweep --dry-run` (cost before a run) and the progress lines of a non-TTY sweep."""

from __future__ import annotations

import json
import math
import types

import pytest

from weakcorr import _dryrun, config
from weakcorr._commands import sweep as sweep_cmd
from weakcorr.cli import main

TINY = ["model.widths=[8,16]", "seeds=2", "training.steps=4", "training.alphas=[0,-1]",
        "data.n_train=256", "data.n_test=64"]


def test_run_flops_counts_the_paired_steps_by_hand():
    """12·B·P per step (f: 2+4, f_lin: 2+4), 4·n·P for the final metrics, 4·n_test·P per eval."""
    cfg = config.load("demo", [*TINY, "logging.eval_every=2"])
    run = config.expand(cfg)[0]  # 784 -> 8 -> 8 -> 10
    p = 784 * 8 + 8 * 8 + 8 * 10
    want = 12 * 128 * p * 4 + 4 * 64 * p * 2 + 4 * (256 + 64) * p
    assert _dryrun.run_flops(run, 784, 10) == want


def test_memory_column_is_the_pre_flight_estimate_of_a_seed_batch():
    from weakcorr import _memory

    cfg = config.load("demo", TINY)
    d = _dryrun.dry_run(cfg, calibrate=False)
    runs = {r["model"]["width"]: r for r in config.expand(cfg)}
    k = min(cfg.execution.seed_batch, 2) if 16 <= cfg.execution.seed_batch_max_width else 1
    assert [p["mib_per_run"] for p in d.per_width] == [
        _memory.estimate_run_bytes(runs[w], 784, 10, seeds=k) / 2**20 for w in (8, 16)]
    assert math.isnan(d.expected_wall_s) and d.calibration == ()


def test_dry_run_counts_runs_writes_nothing_and_sees_finished_runs(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", "demo", "--out", str(out), "--dry-run", "--json",
                 *[a for kv in TINY for a in ("--set", kv)]]) == 0
    d = json.loads(capsys.readouterr().out)
    assert (d["total"], d["done"], d["to_run"]) == (8, 0, 8) and not out.exists()
    assert [c["width"] for c in d["calibration"]] == [8, 16]
    assert d["expected_wall_s"] > 0 and d["gflops_per_s"] > 0
    assert main(["sweep", "demo", "--out", str(out), "--quiet",
                 *[a for kv in TINY[:1] + ["seeds=1", *TINY[2:]] for a in ("--set", kv)]]) == 0
    capsys.readouterr()
    assert main(["sweep", "demo", "--out", str(out), "--dry-run",
                 *[a for kv in TINY for a in ("--set", kv)]]) == 0
    text = capsys.readouterr().out
    assert "runs: 8 (2 widths x 2 alphas x 2 seeds); 4 already done, 4 to run" in text
    assert "expected wall time:" in text and "calibration on cpu" in text


def test_non_tty_progress_prints_periodic_lines_with_eta(capsys):
    now = [100.0]
    update = sweep_cmd.progress_lines("demo", every_s=30, clock=lambda: now[0])
    event = types.SimpleNamespace
    update(event(done=2, total=10, outcome=None, elapsed_s=0.0))
    for i, t in enumerate((10, 20, 40, 45), start=3):  # a line once 30 s have passed
        now[0] = 100 + t
        update(event(done=i, total=10, outcome=types.SimpleNamespace(status="ok"), elapsed_s=t))
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["sweep demo: 5/10 runs (3 ok), 40 s, ETA 67 s"]
    now[0] = 160
    update(event(done=10, total=10, outcome=types.SimpleNamespace(status="failed"), elapsed_s=60))
    assert capsys.readouterr().err.strip() == "sweep demo: 10/10 runs (1 failed, 4 ok), 60 s, ETA 0 s"


@pytest.mark.parametrize("flag", ["--quiet", "--json"])
def test_quiet_and_json_have_no_progress_lines(flag):
    args = types.SimpleNamespace(quiet=flag == "--quiet", json=flag == "--json")
    assert sweep_cmd.progress_bar(args, "demo")[0] is None


def test_count_progress_lines_for_diagnose_and_correlations(capsys):
    now = [0.0]
    update = sweep_cmd.count_progress("diagnose", "networks", every_s=30, clock=lambda: now[0])
    for done, t in ((1, 10), (2, 31), (3, 40), (4, 70), (4, 71)):
        now[0] = t
        update(done, 4)
    assert capsys.readouterr().err.splitlines() == [
        "diagnose: 2/4 networks, 31 s, ETA 31 s", "diagnose: 4/4 networks, 70 s, ETA 0 s"]
