"""Sweep YAML with `model: {factory, kwargs, widths}` and `data.flatten`: validation, run ids,
a sweep and its report end to end."""

from __future__ import annotations

import json

import pytest

from weakcorr import config, experiments, sweep
from weakcorr.results import run_id

FAMILY = '''import torch
from torch import nn


def cnn(width, seed, channels=1):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.Tanh(), nn.AvgPool2d(4),
                         nn.Flatten(), nn.Linear(width * 4, 10))
'''


def _raw(spec, **model):
    return {"name": "fam", "model": {"factory": spec, "widths": [2, 4, 8], **model},
            "data": {"name": "digits", "n_train": 16, "n_test": 8, "flatten": False},
            "training": {"steps": 3, "batch_size": 8, "lr0": 0.1, "alphas": [0]},
            "seeds": 2, "logging": {"every": 1}}


@pytest.fixture
def family(tmp_path):
    src = tmp_path / "fam.py"
    src.write_text(FAMILY)
    return src


def test_factory_config_round_trips_and_carries_the_source_hash(family):
    cfg = config.load(_raw(f"{family}:cnn", kwargs={"channels": 1}))
    assert cfg.model.factory == f"{family}:cnn" and dict(cfg.model.kwargs) == {"channels": 1}
    assert len(cfg.model.source_sha256) == 64 and cfg.data.flatten is False
    d = config.to_dict(cfg)
    assert d["model"] == {"widths": [2, 4, 8], "factory": f"{family}:cnn",
                          "kwargs": {"channels": 1}, "source_sha256": cfg.model.source_sha256}
    assert config.from_dict(d) == cfg
    run = config.expand(cfg)[0]
    assert run["model"] == {"width": 2, "factory": f"{family}:cnn", "kwargs": {"channels": 1},
                            "source_sha256": cfg.model.source_sha256}
    assert run["data"]["flatten"] is False


def test_an_edited_factory_is_a_new_protocol(family):
    ids = [run_id(c) for c in config.expand(config.load(_raw(f"{family}:cnn")))]
    again = [run_id(c) for c in config.expand(config.load(_raw(f"{family}:cnn")))]
    kw = [run_id(c) for c in config.expand(config.load(_raw(f"{family}:cnn",
                                                            kwargs={"channels": 1})))]
    stale = config.to_dict(config.load(_raw(f"{family}:cnn")))
    family.write_text(FAMILY + "# edited\n")
    edited = [run_id(c) for c in config.expand(config.load(_raw(f"{family}:cnn")))]
    assert ids == again
    assert not set(ids) & set(kw) and not set(ids) & set(edited)
    with pytest.raises(ValueError, match=r"^`model.source_sha256` is .* the factory was edited"):
        config.from_dict(stale)


def test_mlp_run_configs_keep_their_fields():
    """Older run ids stay the same: no factory or flatten keys in an MLP sweep's runs."""
    run = config.expand(config.load("demo"))[0]
    assert set(run["model"]) == {"width", "depth", "activation", "parameterization",
                                 "output_scale", "bias", "sigma_w", "sigma_b"}
    assert "flatten" not in run["data"]
    assert set(config.to_dict(config.load("demo"))["model"]) == set(run["model"]) - {
        "width"} | {"widths"}


@pytest.mark.parametrize("model,needle", [
    ({"factory": "no colon"}, "`model.factory` must be MODULE:FUNCTION"),
    ({"factory": "weakcorr_no_such_mod:f"}, "`model.factory`: no module named"),
    ({"factory": "{fam}:cnn", "depth": 3}, "`model.depth` sets the built-in MLP, but "
                                           "`model.factory` gives the family"),
    ({"factory": "{fam}:cnn", "kwargs": {"seed": 1}}, "`model.kwargs` must not set ['seed']"),
    ({"factory": "{fam}:cnn", "kwargs": [1]}, "`model.kwargs` must be a mapping"),
    ({"kwargs": {"a": 1}}, "`model.kwargs` needs `model.factory`"),
], ids=["unparsable", "unimportable", "mlp-field", "seed-kwarg", "kwargs-list", "no-factory"])
def test_bad_factory_fields_are_named(family, model, needle):
    model = {k: v.format(fam=family) if isinstance(v, str) else v for k, v in model.items()}
    raw = _raw("x:y")
    raw["model"] = {"widths": [2, 4], **model}
    with pytest.raises(ValueError) as err:
        config.load(raw)
    assert needle in str(err.value)


@pytest.mark.parametrize("body,needle", [
    ("def cnn(width, seed, depth):\n    pass\n", "cannot be called as make_model(width, seed)"),
    ("def cnn(width, seed):\n    return 3\n", "must return an nn.Module, got int at width 2"),
    ("import torch\ndef cnn(width, seed):\n    return torch.nn.Linear(3, 2)\n",
     "fails on the data's inputs of shape (1, 8, 8)"),
], ids=["signature", "non-module", "wrong-input"])
def test_sweep_checks_the_factory_before_any_run(tmp_path, body, needle):
    src = tmp_path / "bad.py"
    src.write_text(body)
    cfg = config.load(_raw(f"{src}:cnn"))
    with pytest.raises(ValueError) as err:
        sweep.run_sweep(cfg, str(tmp_path / "out"))
    assert str(err.value).startswith("`model.factory`") and needle in str(err.value)
    assert not (tmp_path / "out" / "runs").exists()


def test_a_run_refuses_a_factory_edited_after_configuration(family):
    cfg = config.load(_raw(f"{family}:cnn"))
    family.write_text(FAMILY + "# edited\n")
    rec = experiments.run(config.expand(cfg)[0])
    assert rec["status"] == "failed" and "changed since the sweep was configured" in rec["error"]


@pytest.mark.slow
def test_factory_sweep_and_report_end_to_end(family, tmp_path):
    from weakcorr import report

    cfg = config.load(_raw(f"{family}:cnn"))
    out = tmp_path / "sweep"
    summary = sweep.run_sweep(cfg, str(out))
    assert summary.ran == 6 and summary.counts.get("ok") == 6, summary
    recs = [json.loads(p.read_text()) for p in (out / "runs").glob("*.json")]
    assert len(recs) == 6 and all(r["status"] == "ok" for r in recs)
    assert all(r["metrics"]["mse_test"] > 0 for r in recs)
    rep = report.write_report(out, n_boot=50, progress=False)
    assert (out / "report.md").exists() and any((out / "figures").glob("*.png"))
    assert rep is not None
