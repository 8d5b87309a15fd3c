"""A.1 config: presets load, round trip, and every bad field is named with the fix."""

from __future__ import annotations

import pytest

from weakcorr import _a1

from ._tiny import tiny


def test_presets_load_and_paper_values():
    cfg = _a1.load_config("paper-a1")
    assert cfg.model.widths == (8, 16, 32, 64, 128, 256, 512, 1024)
    assert cfg.model.depths == (1, 2, 3)
    assert cfg.model.activations == ("relu", "erf", "sigmoid", "gelu")
    assert (cfg.model.parameterization, cfg.model.sigma_w, cfg.model.sigma_b) == ("ntk", 1.0, 0.05)
    assert (cfg.data.n_train, cfg.data.n_test, cfg.training.lr, cfg.training.steps) == (
        160, 32, 1.0, 1000)
    assert cfg.correlations.params_per_layer == 60
    assert set(cfg.datasets) == {"mnist5k", "mnist", "fashion-mnist", "cifar10"}
    assert _a1.load_config("a1-demo").name == "a1-demo"


def test_round_trip():
    cfg = _a1.load_config("paper-a1", ["training.steps=7", "seeds=[3, 5]"])
    assert _a1.from_dict(_a1.to_dict(cfg)) == cfg
    assert cfg.seeds == (3, 5) and cfg.training.steps == 7


def test_shares_the_sweep_config_rules():
    """Widths, seeds and scalars follow config's rules: {start, count} seeds, integral floats."""
    cfg = _a1.from_dict(tiny(seeds={"start": 2, "count": 2}, data={"n_train": 8.0}))
    assert cfg.seeds == (2, 3) and cfg.data.n_train == 8
    with pytest.raises(ValueError, match=r"`model.widths.per_doubling` is missing"):
        _a1.from_dict(tiny(model={"widths": {"start": 8, "stop": 32}}))


def test_expand_orders_by_width_and_trains_first_seeds():
    cfg = _a1.from_dict(tiny(seeds=3, training={"seeds": 2}))
    runs = _a1.expand(cfg)
    assert len(runs) == 3 * 2 * 2 * 3
    widths = [r["model"]["width"] for r in runs]
    assert widths == sorted(widths)
    trained = {r["seed"] for r in runs if r["training"]}
    assert trained == {0, 1}


@pytest.mark.parametrize("raw,match", [
    (tiny(bogus=1), r"unknown key `bogus` at the top level; valid keys: name, description"),
    (tiny(model={"depth": 2}), r"unknown key `model.depth` in `model`; valid keys: widths, depths"),
    (tiny(training={"step": 2}), r"unknown key `training.step` in `training`; valid keys: steps"),
    (tiny(model={"widths": [8, 0]}), r"`model.widths\[1\]` must be an integer >= 1, got 0"),
    (tiny(model={"widths": [8, 8]}), r"`model.widths` must be a list without repeated widths"),
    (tiny(model={"activations": ["relu", "swish"]}),
     r"`model.activations\[1\]` must be one of relu, gelu, erf, sigmoid, tanh, got 'swish'"),
    (tiny(model={"parameterization": "xavier"}), r"`model.parameterization` must be one of"),
    (tiny(model={"sigma_w": 0}), r"`model.sigma_w` must be a finite number > 0, got 0"),
    (tiny(datasets=["imagenet"]), r"`datasets\[0\]` must be one of mnist5k"),
    (tiny(training={"lr": -1.0}), r"`training.lr` must be a finite number > 0, got -1.0"),
    (tiny(training={"steps": 0}), r"`training.steps` must be an integer >= 1, got 0"),
    (tiny(seeds=0), r"`seeds` must be an integer >= 1, got 0"),
    (tiny(data={"n_train": 2}), r"`data.n_train` must be >= 3 for the distinct-input norm"),
    (tiny(dtype="float16"), r"`dtype` must be one of float32, float64, got 'float16'"),
    ({"datasets": ["digits"]}, r"`model.widths` is missing"),
    (tiny(correlations=[1]), r"`correlations` must be a mapping with keys lr, params_per_layer"),
    (tiny(datasets=["mnist5k", "teacher"], training={"loss": "cross_entropy"}),
     r"`training.loss` 'cross_entropy' does not apply to `datasets` entry 'teacher'"),
], ids=lambda v: v if isinstance(v, str) and len(v) < 30 else None)
def test_bad_fields_are_named(raw, match):
    with pytest.raises(ValueError, match=match):
        _a1.from_dict(raw)


@pytest.mark.parametrize("override,match", [
    ("training.steps", r"`--set` takes key=value"),
    ("trainin.steps=3", r"unknown key `trainin` in --set"),
    ("seeds.count=3", r"only data, model, correlations, training have sub-keys"),
    ("training.steps=[", r"not valid YAML"),
    ("training.steps=abc", r"`training.steps` must be an integer >= 1, got 'abc'"),
])
def test_bad_overrides(override, match):
    with pytest.raises(ValueError, match=match):
        _a1.load_config("a1-demo", [override])


def test_missing_config_names_presets(tmp_path):
    with pytest.raises(FileNotFoundError, match="presets: paper-a1, a1-demo"):
        _a1.load_config(str(tmp_path / "nope.yaml"))


def test_file_datasets_skipped_without_data_dir(tmp_path):
    cfg = _a1.from_dict(tiny(datasets=["digits", "mnist", "cifar10"]))
    ok, skipped = _a1.resolve_datasets(cfg)
    assert ok == ["digits"] and set(skipped) == {"mnist", "cifar10"}
    cfg = _a1.from_dict(tiny(datasets=["digits", "mnist"], data={"data_dir": str(tmp_path)}))
    ok, skipped = _a1.resolve_datasets(cfg)
    assert ok == ["digits"] and "mnist" in skipped


def test_scientific_notation_and_duplicate_keys(tmp_path):
    """A.1 configs read YAML 1.2 floats (1e-1) and reject repeated keys, as sweep configs do."""
    cfg = _a1.load_config("a1-demo", ["training.lr=1e-1", "correlations.lr=5E-1",
                                      "training.steps=2e1"])
    assert (cfg.training.lr, cfg.correlations.lr, cfg.training.steps) == (0.1, 0.5, 20)
    path = tmp_path / "c.yaml"
    path.write_text("datasets: [digits]\nmodel: {widths: [4, 8]}\ntraining: {lr: 1e-2}\n")
    assert _a1.load_config(str(path)).training.lr == 0.01
    path.write_text("datasets: [digits]\nmodel: {widths: [4, 8]}\nmodel: {widths: [16]}\n")
    with pytest.raises(ValueError, match=r"has the key `model` twice \(lines 2 and 3\)"):
        _a1.load_config(str(path))
