"""`weakcorr a1` with a family of your own: --model / model.factory, --no-flatten."""

from __future__ import annotations

import pytest

from weakcorr import _a1, cli

FAM = "tests.factory.families"
SMALL = ["--set", "datasets=[digits]", "--set", "model.widths=[2, 3]", "--set", "seeds=1",
         "--set", "training.steps=3", "--set", "correlations.hessian_iters=2",
         "--set", "data.n_train=8", "--set", "data.n_test=4"]


def test_model_replaces_the_mlps_and_mlp_configs_keep_their_protocol():
    cfg = _a1.load_config("a1-demo", ["datasets=[digits]"], model=f"{FAM}:cnn",
                          model_kwargs={"channels": 1}, flatten=False)
    runs = _a1.expand(cfg)
    assert len(runs) == len(cfg.model.widths) * len(cfg.seeds)
    assert runs[0]["model"] == {"width": 8, "factory": f"{FAM}:cnn", "kwargs": {"channels": 1},
                                "source_sha256": cfg.model.source_sha256}
    assert runs[0]["data"]["flatten"] is False
    assert _a1.from_dict(_a1.to_dict(cfg)) == cfg
    mlp = _a1.to_dict(_a1.load_config("a1-demo"))
    assert "factory" not in mlp["model"] and "flatten" not in mlp["data"]
    assert all("flatten" not in r["data"] and "factory" not in r["model"]
               for r in _a1.expand(_a1.load_config("a1-demo")))


@pytest.mark.parametrize("raw,needle", [
    ({"model": {"widths": [2], "factory": f"{FAM}:cnn", "depths": [1]}},
     "`model.depths` sets the built-in MLP, but `model.factory` gives the family"),
    ({"model": {"widths": [2], "kwargs": {"a": 1}}}, "`model.kwargs` needs `model.factory`"),
    ({"model": {"widths": [2]}, "data": {"flatten": False}},
     "`data.flatten` false needs `model.factory`"),
    ({"model": {"widths": [2], "factory": "x"}}, "`model.factory` must be MODULE:FUNCTION"),
], ids=["mlp-field", "kwargs-alone", "flatten-mlp", "unparsable"])
def test_bad_model_fields(raw, needle):
    with pytest.raises(ValueError) as err:
        _a1.from_dict(raw)
    assert needle in str(err.value)


@pytest.mark.parametrize("extra,needle", [
    (["--model", "weakcorr_no_such_mod:f"], "`--model`: no module named"),
    (["--model", f"{FAM}:three_args"], "cannot be called as make_model(width, seed)"),
    (["--model", f"{FAM}:not_a_module"], "must return an nn.Module, got dict at width 2"),
    (["--model", f"{FAM}:cnn"], "on dataset 'digits' at width 2 fails on the data's inputs of "
                                "shape (64,)"),
    (["--model-kwargs", "a=1"], "`--model-kwargs` needs `--model`"),
], ids=["unimportable", "signature", "non-module", "wrong-input", "kwargs-alone"])
def test_a1_refuses_bad_families_before_any_run(tmp_path, capsys, extra, needle):
    out = tmp_path / "a1"
    assert cli.main(["a1", "a1-demo", "--out", str(out), *SMALL, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("weakcorr a1: error: ") and needle in err and "\n" not in err, err
    assert not (out / "runs").exists()


@pytest.mark.slow
def test_a1_with_a_cnn_family_end_to_end_and_an_edited_factory(tmp_path, capsys):
    src = tmp_path / "fam.py"
    src.write_text((__import__("pathlib").Path(__file__).parent / "families.py").read_text())
    out = tmp_path / "a1"
    argv = ["a1", "a1-demo", "--out", str(out), *SMALL, "--model", f"{src}:cnn",
            "--model-kwargs", "channels=1", "--no-flatten"]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "2 ok" in text and (out / "report.md").exists()
    assert any((out / "figures").glob("fig1_c2_*.png"))
    src.write_text(src.read_text() + "# edited\n")
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "another protocol" in err and "source_sha256" in err, err
