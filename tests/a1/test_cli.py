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
               training={"steps": 4, "eval_every": 1, "seeds": 2})
    cfg = _write(tmp_path / "a1.yaml", raw)
    out = tmp_path / "out"
    assert cli.main(["a1", cfg, "--out", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    obj = json.loads(captured.out)
    assert obj["sweep"]["total"] == 3 and obj["sweep"]["counts"]["ok"] == 3
    (line,) = obj["verdicts"]
    assert line.startswith("digits, depth 1, erf: C(f, f_lin) ~ n^") and "Thm 3.1 (Eq. 14)" in line
    assert (out / "report.md").exists() and (out / "figures" / "fig1_c2_digits.png").exists()
    # Review A #14: training.seeds > the number of seeds was truncated without a word.
    assert ("note: `training.seeds` (2) is more than the 1 seed of `seeds`, so only 1 seed is "
            "trained") in captured.err
    # --report-only needs no CONFIG.
    (out / "report.md").unlink()
    assert cli.main(["a1", "--out", str(out), "--report-only", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["verdicts"] == [line]
    assert (out / "report.md").exists()


def test_a1_without_config_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["a1", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("weakcorr a1: error: `CONFIG|PRESET` is missing") and "\n" not in err
    assert "--report-only" in err and not (tmp_path / "o").exists()


def _a2_dir(root, kind):
    """A fake App. A.2 sweep directory (what `weakcorr sweep` writes), with its report."""
    (root / "runs").mkdir(parents=True)
    manifest = {"config": {"name": "demo", "training": {"alphas": [0]}}, "run_ids": ["r1"]}
    if kind is not None:
        manifest["kind"] = kind
    (root / "sweep.json").write_text(json.dumps(manifest))
    (root / "runs" / "r1.json").write_text(json.dumps({"status": "ok", "run_id": "r1",
                                                       "metrics": {"mse_test": 0.1}}))
    (root / "report.md").write_text("# Sweep report\n")
    (root / "summary.json").write_text("{}")
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("kind", ["a2", None])
@pytest.mark.parametrize("report_only", [True, False])
def test_a1_refuses_an_a2_sweep_directory(tmp_path, capsys, kind, report_only):
    """Review A #2: `a1 --report-only` replaced an A.2 report by an empty A.1 one (rc 0), and
    `a1 CONFIG` added its runs to the A.2 directory and overwrote its sweep.json."""
    out = tmp_path / "a2"
    before = _a2_dir(out, kind)
    cfg = _write(tmp_path / "a1.yaml", tiny(model={"widths": [4, 8], "depths": [1]}, seeds=1))
    args = ["a1", "--out", str(out), "--report-only"] if report_only else ["a1", cfg, "--out",
                                                                          str(out)]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"weakcorr a1: error: `--out` {str(out)!r} is an App. A.2 sweep "
                          "directory") and f"use `weakcorr report {out}`" in err
    assert "\n" not in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_a1_refuses_an_a1_directory_of_another_protocol(tmp_path, capsys):
    """Review A #1: a second `a1` with other steps into the same --out was accepted, overwrote
    sweep.json, and the report fitted both protocols together ('4 of 2 runs present')."""
    from weakcorr import _a1

    raw = tiny(model={"widths": [4, 8], "depths": [1], "activations": ["erf"]}, seeds=1,
               training={"steps": 4})
    out = tmp_path / "o"
    out.mkdir()
    manifest = {"kind": "a1", "config": _a1.to_dict(_a1.from_dict(raw)), "run_ids": []}
    (out / "sweep.json").write_text(json.dumps(manifest))
    cfg = _write(tmp_path / "a1.yaml", raw)
    assert cli.main(["a1", cfg, "--out", str(out), "--set", "training.steps=6",
                     "--set", "data.n_test=5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"weakcorr a1: error: `--out` {str(out)!r} holds an A.1 sweep of "
                          "another protocol (data.n_test: 4 -> 5; training.steps: 4 -> 6)")
    assert ("only datasets, data.data_dir, model.widths, model.depths, model.activations and "
            "seeds may") in err
    assert json.loads((out / "sweep.json").read_text()) == manifest
    assert sorted(p.name for p in out.iterdir()) == ["sweep.json"]


@pytest.mark.parametrize("where,msg", [
    ("file", "{out}': '{out}' is a file, not a directory; pass a new or existing directory"),
    ("under", "{out}': '{parent}' is a file, so no directory can be made under it"),
])
def test_a1_and_diagnose_out_that_is_or_is_under_a_file(tmp_path, capsys, monkeypatch, where,
                                                         msg):
    """Review A #7: a FileExistsError / NotADirectoryError traceback; `diagnose` only failed
    after all its training and correlations."""
    from weakcorr import _diagnose

    (tmp_path / "f").write_text("x")
    out = tmp_path / "f" if where == "file" else tmp_path / "f" / "sub"
    want = msg.format(out=out, parent=tmp_path / "f")
    cfg = _write(tmp_path / "a1.yaml", tiny(model={"widths": [4, 8], "depths": [1]}, seeds=1))
    for args in (["a1", cfg], ["a1", "--report-only"]):
        assert cli.main([*args, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("weakcorr a1: error: `--out` '") and want in err, err

    def no_work(*args, **kwargs):
        raise AssertionError("diagnose ran before its --out was checked")

    monkeypatch.setattr(_diagnose, "diagnose", no_work)
    assert cli.main(["diagnose", "--dataset", "digits", "--n-train", "16", "--n-test", "8",
                     "--width", "4", "8", "16", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("weakcorr diagnose: error: `--out` '") and want in err
    assert (tmp_path / "f").read_text() == "x"


def test_a1_fails_before_writing_when_every_dataset_is_skipped(tmp_path, capsys):
    """Review A #9: with only mnist and no data.data_dir, `a1` left a directory with just
    sweep.json and said 'no run files'."""
    cfg = _write(tmp_path / "a1.yaml", tiny(datasets=["mnist"], model={"widths": [4, 8]}))
    out = tmp_path / "o"
    assert cli.main(["a1", cfg, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("weakcorr a1: error: `datasets` ['mnist']: none can be loaded")
    assert "mnist: `data.data_dir` is not set" in err and "\n" not in err
    assert not out.exists()


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
    (["--width", "8", "16"], ("`--width` must give at least 3 distinct positive widths (width "
                              "exponents), got 8 16")),
    (["--seeds", "3"], "`--seeds` must be >= 5 (quantile exponents over seeds), got 3"),
    (["--activation", "swish"], "`--activation` must be one of relu, gelu, erf"),
    (["--steps", "0"], "`--steps` must be >= 1, got 0"),
    (["--lr", "nan"], "`--lr` must be a finite number > 0, got nan"),
    (["--lr-exponent", "nan"], "`--lr-exponent` must be a finite number (lr = η0 · n^ALPHA)"),
    (["--r", "nan"], "`--r` must be a finite number (r(n) = n^RHO), got nan"),
    (["--lr-exponent", "1000"], "`--lr-exponent`: the learning rate at width 32 would be inf"),
    (["--r", "-1000"], "`--r`: the learning rate at width 32 would be 0.0"),
    (["--device", "cuda"], "`--device` is 'cuda' but CUDA is not available here; use --device"),
])
def test_diagnose_bad_input(tmp_path, capsys, monkeypatch, args, msg):
    import torch

    from weakcorr import _diagnose

    def no_work(*args, **kwargs):
        raise AssertionError("diagnose ran with a bad flag")

    monkeypatch.setattr(_diagnose, "diagnose", no_work)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
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
