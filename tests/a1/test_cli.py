"""`weakcorr a1` and `weakcorr diagnose` from the command line: runs, resume, bad input."""

from __future__ import annotations

import json

import pytest
import yaml

from weakcorr import cli

from ._tiny import tiny


def _write(path, raw):
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_a1_runs_and_reports(tmp_path, capsys):
    raw = tiny(model={"widths": [4, 8, 16], "depths": [1], "activations": ["erf"]}, seeds=1,
               training={"steps": 4, "eval_every": 1})
    cfg = _write(tmp_path / "a1.yaml", raw)
    out = tmp_path / "out"
    assert cli.main(["a1", cfg, "--out", str(out), "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["sweep"]["total"] == 3 and obj["sweep"]["counts"]["ok"] == 3
    (line,) = obj["verdicts"]
    assert line.startswith("digits, depth 1, erf: C(f, f_lin) ~ n^") and "Thm 3.1 (Eq. 14)" in line
    assert (out / "report.md").exists() and (out / "figures" / "fig1_c2_digits.png").exists()


@pytest.mark.parametrize("args,msg", [
    (["--set", "model.depth=2"], "unknown key `model.depth` in `model`; valid keys: widths, depths"),
    (["--set", "training.steps=0"], "`training.steps` must be an integer >= 1, got 0"),
    (["--workers", "0"], "`--workers` must be >= 1, got 0"),
    (["--device", "tpu"], "`--device` must be cpu or cuda, got 'tpu'"),
])
def test_a1_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys, args, msg):
    cfg = _write(tmp_path / "a1.yaml", tiny())
    out = tmp_path / "out"
    assert cli.main(["a1", cfg, "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("weakcorr a1: error: ") and msg in err and "\n" not in err
    assert not out.exists()


def test_a1_missing_config_and_empty_report_dir(tmp_path, capsys):
    assert cli.main(["a1", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "no A.1 preset of that name; presets: paper-a1, a1-demo" in capsys.readouterr().err
    assert cli.main(["a1", "paper-a1", "--out", str(tmp_path), "--report-only"]) == 2
    assert "no run files in" in capsys.readouterr().err


def test_diagnose_cli_tiny(tmp_path, capsys):
    args = ["diagnose", "--dataset", "digits", "--width", "4", "8", "16", "--seeds", "5",
            "--steps", "4", "--n-train", "16", "--n-test", "8", "--n-inputs", "4",
            "--batch-size", "0", "--activation", "erf", "--parameterization", "ntk",
            "--lr", "1", "--depth", "1", "--quiet", "--out", str(tmp_path / "d")]
    assert cli.main(args) == 0
    text = capsys.readouterr().out
    for claim in ("Linearization (Eq. 15", "Theorem 3.1", "Theorem 3.2", "Corollary 4.1"):
        assert claim in text
    assert (tmp_path / "d" / "diagnose.md").exists()


@pytest.mark.parametrize("args,msg", [
    (["--width", "8", "16"], "`widths` must hold at least 3 distinct positive widths"),
    (["--seeds", "3"], "`seeds` must give at least 5 distinct seeds"),
    (["--activation", "swish"], "`--activation` must be one of relu, gelu, erf"),
    (["--steps", "0"], "`--steps` must be >= 1, got 0"),
])
def test_diagnose_bad_input(tmp_path, capsys, args, msg):
    out = tmp_path / "d"
    base = ["diagnose", "--dataset", "digits", "--n-train", "16", "--n-test", "8",
            "--out", str(out)]
    assert cli.main([*base, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("weakcorr diagnose: error: ") and msg in err and "\n" not in err
    assert not out.exists()


@pytest.mark.slow
def test_a1_demo_preset_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["a1", "a1-demo", "--out", str(out), "--quiet", "--set", "seeds=2",
                     "--set", "training.steps=30", "--set", "model.widths=[8, 16, 32]"]) == 0
    text = capsys.readouterr().out
    assert "24 runs (0 already done, 24 run now: 24 ok" in text
    summary = json.loads((out / "summary.json").read_text())
    fits = {(f["depth"], f["activation"], f["quantity"]): f for f in summary["fits"]}
    # NTK parameterization: the exact C^{0,2} decays with width for every net.
    for depth in (1, 2):
        for act in ("relu", "erf"):
            assert fits[(depth, act, "c2_exact")]["slope"] < -0.4
