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
