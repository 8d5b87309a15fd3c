"""The A.2 pipeline end to end through the CLI: sweep (real paired_sgd), resume, report, demo."""

from __future__ import annotations

import json

import pytest

from weakcorr import analysis
from weakcorr.cli import main

TINY = """\
name: tiny
model: {widths: [8, 16, 32], depth: 2, activation: gelu}
data: {name: teacher, n_train: 64, n_test: 32}
training: {steps: 12, batch_size: 16, lr0: 0.1, alphas: [0, -1]}
seeds: 3
logging: {every: 4}
execution: {seed_batch: 2, seed_batch_max_width: 16}
"""


def test_tiny_sweep_resume_and_report(tmp_path, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    out = tmp_path / "out"
    assert main(["sweep", str(cfg), "--out", str(out), "--quiet"]) == 0
    assert "18 runs (0 already done, 18 run now: 18 ok" in capsys.readouterr().out
    table = analysis.load_table(out)
    assert len(table) == 18 and (table["status"] == "ok").all()
    assert table["mse_test"].gt(0).all() and table["mse_test"].notna().all()
    # Seeds of widths <= 16 were trained together, width 32 one at a time; same schema.
    rec = json.loads(next((out / "runs").glob("*.json")).read_text())
    assert {"schema_version", "config", "seed", "device", "dtype", "metrics", "logs", "status",
            "run_id", "versions", "wall_time_s"} <= set(rec)
    assert [e["step"] for e in rec["logs"]] == [0, 4, 8, 11]
    assert main(["sweep", str(cfg), "--out", str(out), "--quiet", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["skipped"], summary["ran"]) == (18, 0)
    assert main(["report", str(out), "--n-boot", "200"]) == 0
    printed = capsys.readouterr().out
    assert "alpha=0: slope" in printed and "alpha=-1: slope" in printed
    assert (out / "report.md").exists() and (out / "figures" / "width_scaling.pdf").exists()


@pytest.mark.slow
def test_demo_command_on_tiny_settings(tmp_path, capsys):
    """`weakcorr demo` (the demo preset: MNIST-5k, GELU 784-n-n-10) with fewer steps/seeds."""
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--quiet", "--set", "training.steps=30", "--set",
            "seeds=2", "--set", "model.widths=[32, 64, 128]"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "18 runs (0 already done, 18 run now: 18 ok" in printed
    assert f"Fig. 4-style figure: {out / 'figures' / 'width_scaling.png'}" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sweep"] == "demo" and summary["runs"]["ok"] == 18
    assert summary["config"]["data"]["name"] == "mnist5k"
    slopes = {r["alpha"]: r["slope"] for r in summary["fits"]}
    assert set(slopes) == {0.0, -0.5, -1.0}
    # Smaller learning rates linearize faster with width (paper Fig. 4).
    assert slopes[-1.0] < slopes[-0.5] < slopes[0.0] < 0
