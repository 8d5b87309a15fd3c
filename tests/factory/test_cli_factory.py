"""--model MODULE:FUNCTION, --model-kwargs and --no-flatten on the command line."""

from __future__ import annotations

import json

import pytest

from weakcorr import cli

FAM = "tests.factory.families"
TINY = ["--dataset", "digits", "--n-train", "16", "--n-test", "8", "--width", "2", "3", "4",
        "--seeds", "5", "--steps", "2", "--n-inputs", "2", "--batch-size", "0"]


def _error(capsys, argv):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


@pytest.mark.parametrize("extra,needle", [
    (["--model", "weakcorr_no_such_mod:f"], "`--model`: no module named 'weakcorr_no_such_mod'"),
    (["--model", "nocolon"], "`--model` must be MODULE:FUNCTION or path/to/file.py:FUNCTION"),
    (["--model", f"{FAM}:three_args"], "`--model` 'tests.factory.families:three_args' has the "
                                       "signature (width: 'int', seed: 'int', depth: 'int')"),
    (["--model", f"{FAM}:mlp", "--model-kwargs", "depth=3"], "with keyword arguments ['depth']"),
    (["--model", f"{FAM}:mlp", "--model-kwargs", "depth"], "`--model-kwargs` takes KEY=VALUE"),
    (["--model", f"{FAM}:not_a_module"], "`--model` 'tests.factory.families:not_a_module' must "
                                         "return an nn.Module, got dict at width 2"),
    (["--model", f"{FAM}:mlp", "--model-kwargs", "d_in=5"], "at width 2 fails on the data's "
                                                             "inputs of shape (64,)"),
    (["--model", f"{FAM}:mlp", "--depth", "3"], "`--depth` sets the built-in MLP, but `--model`"),
    (["--model-kwargs", "a=1"], "`--model-kwargs` needs `--model`"),
    (["--no-flatten"], "`--no-flatten` needs `--model`"),
], ids=["unimportable", "unparsable", "signature", "unknown-kwarg", "bad-kwarg", "non-module",
        "wrong-input", "mlp-flag", "kwargs-alone", "no-flatten-alone"])
def test_diagnose_refuses_bad_models_before_any_work(capsys, monkeypatch, extra, needle):
    from weakcorr import _diagnose

    def no_work(*a, **k):
        raise AssertionError("diagnose ran")

    monkeypatch.setattr(_diagnose, "diagnose", no_work)
    err = _error(capsys, ["diagnose", *TINY, *extra])
    assert err.startswith("weakcorr diagnose: error: ") and needle in err, err


@pytest.mark.slow
def test_diagnose_cnn_family_end_to_end(tmp_path, capsys):
    out = tmp_path / "diag"
    argv = ["diagnose", *TINY, "--model", f"{FAM}:cnn", "--model-kwargs", "channels=1",
            "--no-flatten", "--out", str(out), "--json"]
    assert cli.main(argv) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["settings"]["model"] == f"{FAM}:cnn"
    assert res["settings"]["model_kwargs"] == {"channels": 1}
    ms = res["measurements"]
    assert len(ms) == 15 and all(m["status"] == "ok" for m in ms)
    assert all(m["c02"] > 0 and m["error"] > 0 for m in ms)
    assert (out / "diagnose.md").exists() and (out / "figures" / "scaling.png").exists()


CORR = ["correlations", "--dataset", "digits", "--width", "2", "3", "--seeds", "1",
        "--n-inputs", "3"]


@pytest.mark.parametrize("extra,needle", [
    (["--model", "weakcorr_no_such_mod:f"], "`--model`: no module named 'weakcorr_no_such_mod'"),
    (["--model", f"{FAM}:three_args"], "cannot be called as make_model(width, seed)"),
    (["--model", f"{FAM}:not_a_module"], "must return an nn.Module, got dict at width 2"),
    (["--model", f"{FAM}:mlp", "--model-kwargs", "seed=3"], "`--model-kwargs` must not set"),
    (["--model", f"{FAM}:cnn"], "fails on the data's inputs of shape (64,)"),
    (["--model", f"{FAM}:mlp", "--activation", "tanh"], "`--activation` sets the built-in MLP"),
    (["--no-flatten"], "`--no-flatten` needs `--model`"),
    (["--model-kwargs", "a=1"], "`--model-kwargs` needs `--model`"),
], ids=["unimportable", "signature", "non-module", "seed-kwarg", "wrong-input", "mlp-flag",
        "no-flatten-alone", "kwargs-alone"])
def test_correlations_refuses_bad_models_before_any_work(tmp_path, capsys, monkeypatch, extra,
                                                         needle):
    from weakcorr import _corr_experiment

    def no_work(*a, **k):
        raise AssertionError("correlations computed")

    monkeypatch.setattr(_corr_experiment, "_compute", no_work)
    err = _error(capsys, [*CORR, *extra, "--out", str(tmp_path / "c")])
    assert err.startswith("weakcorr correlations: error: ") and needle in err, err
    assert not list((tmp_path).glob("c/*.json"))


@pytest.mark.slow
def test_correlations_of_a_cnn_family_and_an_edited_factory(tmp_path, capsys):
    import torch

    from weakcorr import _factory, correlations, data
    from weakcorr.functional import functional

    src = tmp_path / "fam.py"
    src.write_text((__import__("pathlib").Path(__file__).parent / "families.py").read_text())
    out = tmp_path / "corr"
    argv = [*CORR, "--model", f"{src}:cnn", "--model-kwargs", "channels=1", "--no-flatten",
            "--dtype", "float64", "--out", str(out), "--json"]
    assert cli.main(argv) == 0
    res = json.loads(capsys.readouterr().out)
    rec = json.loads((out / "corr_w3_s0.json").read_text())
    assert rec["config"]["factory"] == f"{src}:cnn" and rec["config"]["flatten"] is False
    assert rec["config"]["kwargs"] == {"channels": 1} and "depth" not in rec["config"]
    assert len(res["runs"]) == 2
    # the record is the C^{0,2} diagonal of the family's seed-0 member at width 3 on the
    # dataset's first inputs, unflattened
    x = data.load("digits", n_train=3, n_test=1, flatten=False).X_train.double()
    fam = _factory.load(f"{src}:cnn", {"channels": 1})
    fm = functional(_factory.make(fam, 3, 0).double())
    ref = correlations.diagonal(fm, x, orders=(2,), lr=1.0)[2]
    torch.testing.assert_close(torch.tensor(rec["metrics"]["C2"]["values"], dtype=torch.float64),
                               ref, rtol=1e-10, atol=0)
    src.write_text(src.read_text() + "# edited\n")
    err = _error(capsys, argv)
    assert "`--out`" in err and "holds records of other settings (--model (its source file's " \
                               "sha256)" in err


def test_diagnose_and_correlations_stop_at_a_failing_self_check(monkeypatch, capsys, tmp_path):
    from weakcorr import _checks

    def disagree(fm, x, **kw):
        raise ValueError("nested forward mode disagrees at model.0 (Conv2d)")

    monkeypatch.setattr(_checks, "check_derivatives", disagree)
    for argv in (["diagnose", *TINY, "--model", f"{FAM}:cnn", "--no-flatten"],
                 [*CORR, "--model", f"{FAM}:cnn", "--no-flatten", "--out", str(tmp_path / "c")]):
        err = _error(capsys, argv)
        assert "nested forward mode disagrees at model.0 (Conv2d)" in err
    assert not list(tmp_path.glob("c/*.json"))
