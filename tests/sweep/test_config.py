"""Sweep configs: presets, grid expansion, lr = lr0 n^α r(n), and every validation message."""

from __future__ import annotations

import copy
import math
import re

import pytest

from weakcorr import config

BASE = {
    "name": "t",
    "model": {"widths": [8, 16], "depth": 2, "activation": "gelu"},
    "data": {"name": "teacher", "n_train": 64, "n_test": 32},
    "training": {"steps": 5, "batch_size": 16, "lr0": 0.1, "alphas": [0, -0.5, -1]},
    "seeds": 3,
    "logging": {"every": 2},
}


def _with(path: str, value: object) -> dict:
    raw = copy.deepcopy(BASE)
    node = raw
    *parents, last = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return raw


_DELETE = object()

# (field path, bad value, fragments the message must contain)
BAD = [
    ("training.alphas", [0, -0.5, "x"], ["`training.alphas[2]`", "'x' (str)", "number"]),
    ("training.alphas", [], ["`training.alphas`", "non-empty list"]),
    ("training.alphas", [0, 0], ["`training.alphas`", "repeated"]),
    ("training.steps", 0, ["`training.steps`", "0 (int)", ">= 1"]),
    ("training.steps", _DELETE, ["`training.steps` is missing", "steps: 250"]),
    ("training.lr0", -1, ["`training.lr0`", "-1 (int)", "> 0"]),
    ("training.lr0", float("nan"), ["`training.lr0`", "finite"]),
    ("training.batch_size", 100, ["`training.batch_size`", "n_train = 64", "100"]),
    ("training.loss", "hinge", ["`training.loss`", "'mse'", "'hinge' (str)"]),
    ("training.dtype", "float16", ["`training.dtype`", "'float32', 'float64'", "'float16'"]),
    ("training.lr_factor", "__import__('os')", ["`training.lr_factor`", "only numbers", "`n`"]),
    ("training.lr_factor", "n -", ["`training.lr_factor`", "cannot parse"]),
    ("training.lr_factor", "n - 12", ["`training.lr_factor`", "> 0", "-4.0 at n = 8"]),
    ("training.lr_factor", "log(n - 8)", ["`training.lr_factor`", "n = 8"]),
    ("training.momentum", 0.9, ["unknown key `training.momentum`", "valid keys: steps, "
                                "batch_size, lr0, alphas, lr_factor"]),
    ("model.widths", [8, "wide"], ["`model.widths[1]`", "'wide' (str)", "integer"]),
    ("model.widths", [8, 0], ["`model.widths[1]`", ">= 1"]),
    ("model.widths", {"start": 8, "stop": 64}, ["`model.widths.per_doubling` is missing"]),
    ("model.widths", {"start": 8, "stop": 4, "per_doubling": 2}, ["`model.widths.stop`", ">= 8"]),
    ("model.activation", "swish", ["`model.activation`", "'relu', 'gelu'", "'swish'"]),
    ("model.parameterization", "sp", ["`model.parameterization`", "'standard'", "'sp'"]),
    ("model.depth", 1.5, ["`model.depth`", "1.5 (float)", "integer"]),
    ("model.bias", "yes", ["`model.bias`", "true or false"]),
    ("model.width", 8, ["unknown key `model.width`", "valid keys: widths, depth"]),
    ("data.name", "imagenet", ["`data.name`", "'mnist5k'", "'imagenet'"]),
    ("data.n_train", _DELETE, ["`data.n_train` is missing"]),
    ("data.data_dir", 3, ["`data.data_dir`", "string or null"]),
    ("seeds", 0, ["`seeds`", ">= 1"]),
    ("seeds", [0, 0], ["`seeds`", "repeated"]),
    ("seeds", {"count": 2, "stop": 3}, ["unknown key `seeds.stop`", "valid keys: start, count"]),
    ("logging.every", 0, ["`logging.every`", ">= 1"]),
    ("logging.verbose", True, ["unknown key `logging.verbose`", "every, eval_every, probe_ntk"]),
    ("execution.seed_batch", 0, ["`execution.seed_batch`", ">= 1"]),
    ("optimizer", "adam", ["unknown key `optimizer`", "valid keys: name, description, model"]),
    ("model", _DELETE, ["section `model` is missing"]),
    # lr = lr0 n^alpha r(n) must be finite and > 0 at every (width, alpha) of the grid
    ("training.alphas", [0, 1000], ["`training.alphas[1]`", "= 1000", "lr", "= inf",
                                    "width n = 8", "alpha nearer 0"]),
    ("training.alphas", [-1000], ["`training.alphas[0]`", "= -1000", "lr", "= 0 at width n = 8",
                                  "finite and > 0"]),
    ("training.lr_factor", "(-n) ** 0.5", ["`training.lr_factor`", "not a real number",
                                           "n = 8", "sqrt(n) / 32"]),
    ("training.loss", "cross_entropy", ["`training.loss`", "`data.name`", "'teacher'",
                                        "regression targets", "use training.loss: mse"]),
    ("seeds", 10**20, ["`seeds`", "<= 100000", "100000000000000000000 (int)"]),
    ("seeds", [0, 2**63], ["`seeds[1]`", "<= 9223372036854775807",
                           "9223372036854775808 (int)"]),
    ("seeds", {"start": 2**63, "count": 1}, ["`seeds.start`", "<= 9223372036854775807"]),
    ("seeds", {"start": 2**63 - 1, "count": 2}, ["`seeds.count`",
                                                 "reaches seed 9223372036854775808",
                                                 "lower seeds.start or seeds.count"]),
    ("seeds", {"count": 10**20}, ["`seeds.count`", "<= 100000"]),
    ("model.widths", {"start": 8, "stop": 16, "per_doubling": 100},
     ["`model.widths.per_doubling` = 100", "101 widths", "only 9 distinct", "at most 5"]),
    ("model.widths", {"start": 8, "stop": 16, "per_doubling": 10**9},
     ["`model.widths`", "about 1000000001 widths", "more than 10000", "smaller per_doubling"]),
]


@pytest.mark.parametrize("path,value,fragments", BAD,
                         ids=[f"{p}={v!r}"[:40] if v is not _DELETE else f"{p}-missing"
                              for p, v, _ in BAD])
def test_bad_config_names_the_field(path, value, fragments):
    with pytest.raises(ValueError) as info:
        config.from_dict(_with(path, value))
    msg = str(info.value)
    for frag in fragments:
        assert frag in msg, msg
    assert "\n" not in msg


def test_grid_expansion_order_and_lr():
    cfg = config.from_dict(_with("training.lr_factor", "sqrt(n) / 4"))
    runs = config.expand(cfg)
    assert len(runs) == 2 * 3 * 3
    keys = [(r["training"]["alpha"], r["model"]["width"], r["seed"]) for r in runs]
    assert keys == [(a, w, s) for a in (0.0, -0.5, -1.0) for w in (8, 16) for s in (0, 1, 2)]
    for r in runs:
        n, a = r["model"]["width"], r["training"]["alpha"]
        assert r["training"]["lr"] == pytest.approx(0.1 * n**a * math.sqrt(n) / 4, rel=1e-14)
        assert r["data"]["name"] == "teacher" and r["logging"]["every"] == 2
        assert "widths" not in r["model"] and "alphas" not in r["training"]


def test_run_configs_are_json_and_distinct():
    from weakcorr.results import run_id

    runs = config.expand(config.from_dict(BASE))
    assert len({run_id(r) for r in runs}) == len(runs)


@pytest.mark.parametrize("expr,n,want", [
    ("1", 7, 1.0), ("2 * sqrt(n) - 1", 16, 7.0), ("n ** -0.5", 4, 0.5), ("-(-n) / 8", 4, 0.5),
    ("log(exp(n))", 3, 3.0), ("(n + 2) * (n - 2)", 3, 5.0), ("1e-3 * n", 1000, 1.0),
], ids=["one", "sqrt", "pow", "unary", "log-exp", "parens", "sci"])
def test_expression_evaluator(expr, n, want):
    assert config.evaluate_expression(expr, n) == pytest.approx(want, rel=1e-14)


@pytest.mark.parametrize("expr", ["__import__('os').system('true')", "n.real", "m + 1",
                                  "sqrt(n, 2)", "[n]", "n if n else 1", "abs(n)", "'n'"],
                         ids=["import", "attr", "name", "two-args", "list", "ifexp", "abs", "str"])
def test_expression_evaluator_rejects(expr):
    with pytest.raises(ValueError, match="may use only numbers|cannot parse"):
        config.evaluate_expression(expr, 4)


PAPER_WIDTHS = (2048, 2435, 2896, 3444, 4096, 4871, 5793, 6889, 8192, 9741, 11585, 13777, 16384,
                19484)  # Eq. 28


def test_geometric_widths_four_per_doubling():
    got = config.geometric_widths(2048, 19484, 4)
    assert len(got) == len(PAPER_WIDTHS)
    assert all(abs(g - p) <= 1 for g, p in zip(got, PAPER_WIDTHS))  # the paper lists 9741
    assert config.geometric_widths(64, 1024, 4)[:5] == (64, 76, 91, 108, 128)


@pytest.mark.parametrize("name", ["paper-a2", "cpu", "demo"], ids=str)
def test_presets_load(name):
    cfg = config.load(name)
    assert cfg.name == name
    assert cfg.model.activation == "gelu" and cfg.model.parameterization == "standard"
    assert cfg.model.depth == 2 and cfg.training.lr0 == 0.1 and cfg.training.batch_size == 128
    assert cfg.training.loss == "mse" and cfg.logging.every == 10


def test_paper_preset_is_the_paper_protocol():
    cfg = config.load("paper-a2")
    assert cfg.model.widths == PAPER_WIDTHS
    assert cfg.training.alphas == (0.0, -0.25, -0.5, -0.75, -1.0)
    assert cfg.training.steps == 250 and len(cfg.seeds) == 100
    assert (cfg.data.name, cfg.data.n_train, cfg.data.n_test) == ("mnist", 60000, 10000)
    assert len(config.expand(cfg)) == 7000


def test_cpu_preset_protocol():
    cfg = config.load("cpu")
    assert cfg.model.widths[0] == 64 and cfg.model.widths[-1] == 1024 and len(cfg.model.widths) == 17
    assert (cfg.data.name, cfg.data.n_train, cfg.data.n_test) == ("mnist5k", 4000, 1000)
    assert cfg.training.alphas == (0.0, -0.25, -0.5, -0.75, -1.0) and len(cfg.seeds) >= 5
    assert cfg.training.steps == 250


def test_overrides():
    cfg = config.load("demo", ["training.alphas=[0, -1]", "seeds=2", "model.widths=[8]",
                               "data.data_dir=~/x"])
    assert cfg.training.alphas == (0.0, -1.0) and cfg.seeds == (0, 1) and cfg.model.widths == (8,)
    assert not cfg.data.data_dir.startswith("~")


@pytest.mark.parametrize("item,fragments", [
    ("training.stepz=3", ["unknown key `training.stepz`", "valid keys: steps"]),
    ("trainin.steps=3", ["unknown section `trainin`", "model, data, training"]),
    ("steps=3", ["unknown key `steps`", "valid keys: name"]),
    ("training", ["key=value"]),
    ("training.steps.x=1", ["`training.steps` has no sub-keys"]),
    ("training.steps=[1", ["not valid YAML"]),
    ("training.steps=-3", ["`training.steps`", "-3 (int)"]),
], ids=["key", "section", "top", "no-eq", "deep", "yaml", "value"])
def test_bad_overrides(item, fragments):
    with pytest.raises(ValueError) as info:
        config.load("demo", [item])
    for frag in fragments:
        assert frag in str(info.value), str(info.value)


def test_missing_file_lists_presets(tmp_path):
    with pytest.raises(FileNotFoundError, match="paper-a2"):
        config.load(str(tmp_path / "nope.yaml"))


def test_yaml_file_round_trip(tmp_path):
    import yaml

    cfg = config.load("cpu")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config.to_dict(cfg)))
    assert config.load(str(path)) == cfg


def test_bad_yaml_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: [unclosed\n")
    with pytest.raises(ValueError, match=re.escape(str(path)) + " is not valid YAML"):
        config.load(str(path))


def test_lr_overflow_at_the_widest_width():
    """lr0 n^alpha finite at n = 8 but inf at n = 16: named with the width and the lr0."""
    raw = _with("training.lr0", 1.0e306)
    raw["training"]["alphas"] = [0, 2]
    with pytest.raises(ValueError) as info:
        config.from_dict(raw)
    msg = str(info.value)
    for frag in ("`training.alphas[1]`", "= 2", "= inf at width n = 16", "lr0 = 1e+306"):
        assert frag in msg, msg


def test_cross_entropy_with_class_datasets_still_loads():
    cfg = config.load("demo", ["training.loss=cross_entropy"])
    assert cfg.training.loss == "cross_entropy" and cfg.data.name == "mnist5k"


@pytest.mark.parametrize("start", [1, 2, 3, 8, 32, 100, 2048])
def test_suggested_per_doubling_keeps_widths_distinct(start):
    raw = _with("model.widths", {"start": start, "stop": 2 * start, "per_doubling": 2 * start + 2})
    with pytest.raises(ValueError, match="repeats widths") as info:
        config.from_dict(raw)
    safe = int(re.search(r"at most (\d+) keeps", str(info.value)).group(1))
    widths = config.from_dict(_with("model.widths", {"start": start, "stop": 2 * start,
                                                     "per_doubling": safe})).model.widths
    assert len(widths) == safe + 1 and len(set(widths)) == len(widths)


@pytest.mark.parametrize("name,size", [("mnist5k", 5000), ("digits", 1797)])
def test_bundled_dataset_size_names_n_train_and_n_test(name, size):
    raw = _with("data", {"name": name, "n_train": size - 100, "n_test": 1000})
    with pytest.raises(ValueError) as info:
        config.from_dict(raw)
    msg = str(info.value)
    for frag in ("`data.n_train` + `data.n_test`", f"<= {size}", f"= {size + 900}",
                 "lower data.n_train or data.n_test"):
        assert frag in msg, msg
    assert "data.name" not in msg
    cfg = config.from_dict(_with("data", {"name": name, "n_train": size - 100, "n_test": 100}))
    assert cfg.data.n_train + cfg.data.n_test == size


# YAML 1.2 floats (PyYAML alone reads YAML 1.1, where 1e-3 is a string)
@pytest.mark.parametrize("item,get,want", [
    ("training.lr0=1e-3", lambda c: c.training.lr0, 1e-3),
    ("training.lr0=1.0e3", lambda c: c.training.lr0, 1e3),
    ("training.lr0=1e+3", lambda c: c.training.lr0, 1e3),
    ("training.lr0=1E-1", lambda c: c.training.lr0, 0.1),
    ("training.lr0=.5", lambda c: c.training.lr0, 0.5),
    ("training.alphas=[0, -2e-4, -1e0]", lambda c: c.training.alphas, (0.0, -2e-4, -1.0)),
    ("training.lr_factor=1e-3", lambda c: config.evaluate_expression(c.training.lr_factor, 5),
     1e-3),
    ("training.lr_factor='1e-3 * n'", lambda c: c.training.lr_factor, "1e-3 * n"),
    ("training.steps=1e1", lambda c: c.training.steps, 10),
    ("model.widths={start: 8, stop: 1.6e1, per_doubling: 1}", lambda c: c.model.widths, (8, 16)),
    ("seeds=3e0", lambda c: c.seeds, (0, 1, 2)),
], ids=["neg-exp", "dot-exp", "plus-exp", "upper", "leading-dot", "list", "factor", "quoted",
        "int-steps", "int-widths", "int-seeds"])
def test_scientific_notation_in_overrides(item, get, want):
    assert get(config.load("demo", [item])) == want


def test_scientific_notation_in_yaml_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {widths: [8, 16]}\ndata: {name: teacher, n_train: 6.4e1, n_test: 32}\n"
                    "training: {steps: 5, batch_size: 8, lr0: 1e-1, alphas: [0, -5E-1]}\n"
                    "seeds: 1\nname: '1e3'\n")
    cfg = config.load(str(path))
    assert cfg.training.lr0 == 0.1 and cfg.training.alphas == (0.0, -0.5)
    assert cfg.data.n_train == 64 and cfg.name == "1e3"


def test_scientific_notation_that_is_not_a_number_stays_a_string():
    with pytest.raises(ValueError, match=r"`training.lr0` must be a finite number > 0 \(e.g. "
                                         r"0.1\), got '1e' \(str\)"):
        config.load("demo", ["training.lr0=1e"])


@pytest.mark.parametrize("text,key,lines", [
    ("training: {steps: 5}\nmodel: {widths: [8]}\ntraining: {steps: 6}\n", "training", (1, 3)),
    ("model:\n  widths: [8]\n  depth: 2\n  depth: 3\n", "model.depth", (3, 4)),
    ("seeds: [{a: 1, a: 2}]\n", "seeds[0].a", (1, 1)),
], ids=["section", "nested", "in-list"])
def test_duplicate_yaml_keys_are_named(tmp_path, text, key, lines):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        config.load(str(path))
    msg = str(info.value)
    assert f"{path} has the key `{key}` twice (lines {lines[0]} and {lines[1]})" in msg, msg
    assert "keep one" in msg and "\n" not in msg


def test_duplicate_key_in_an_override_value():
    with pytest.raises(ValueError, match=r"--set .* has the key `start` twice"):
        config.load("demo", ["model.widths={start: 8, start: 16, stop: 32, per_doubling: 1}"])


def test_yaml_anchors_and_merge_keys_are_not_duplicates(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: &m {widths: [8, 16], depth: 2}\n"
                    "data: {name: teacher, n_train: 64, n_test: 32}\n"
                    "training: {<<: {steps: 4, batch_size: 8}, steps: 5, lr0: 0.1, alphas: [0]}\n"
                    "seeds: 1\ndescription: x\n")
    cfg = config.load(str(path))
    assert cfg.training.steps == 5 and cfg.training.batch_size == 8


def test_dotted_overrides_of_mapping_fields():
    """model.widths.KEY and seeds.KEY reach a {start, stop, per_doubling} / {start, count}."""
    cfg = config.load("demo", ["model.widths.stop=64", "model.widths.per_doubling=1",
                               "seeds={start: 3, count: 5}", "seeds.count=2"])
    assert cfg.model.widths == (32, 64) and cfg.seeds == (3, 4)
    with pytest.raises(ValueError, match=r"unknown key `model.widths.step` in `model.widths`; "
                                         r"valid keys: start, stop, per_doubling"):
        config.load("demo", ["model.widths.step=2"])


@pytest.mark.parametrize("items,fragments", [
    (["model.widths=[8, 16]", "model.widths.start=8"],
     ["`model.widths` is [8, 16] (list)", "start, stop, per_doubling",
      "--set 'model.widths={start: 64, stop: 1024, per_doubling: 4}'"]),
    (["seeds.count=2"], ["`seeds` is 4 (int)", "start, count",
                         "--set 'seeds={start: 0, count: 5}'"]),
    (["seeds.count.x=2"], ["`seeds.count` has no sub-keys"]),
    (["model.widths.start.x=2"], ["`model.widths.start` has no sub-keys"]),
    (["name.x=2"], ["`name` has no sub-keys", "name=VALUE"]),
], ids=["widths-list", "seeds-int", "seeds-deep", "widths-deep", "name"])
def test_dotted_overrides_of_mapping_fields_messages(items, fragments):
    with pytest.raises(ValueError) as info:
        config.load("demo", items)
    msg = str(info.value)
    for frag in fragments:
        assert frag in msg, msg
    assert "unknown section" not in msg


def test_expression_evaluator_rejects_complex_powers():
    with pytest.raises(ValueError, match=r"'\(-n\) \*\* 0.5' cannot be evaluated at n = 4: "
                                         r"\(-4\) \*\* 0.5 is not a real number"):
        config.evaluate_expression("(-n) ** 0.5", 4)
    assert config.evaluate_expression("(-n) ** 2", 4) == 16.0


def test_teacher_options_reach_the_data_and_stay_out_of_other_run_ids():
    """``data.options`` sizes the teacher (MNIST's shape for the no-reuse control of the Fig. 4
    ablations); configs without it keep their run configs, hence their run ids."""
    from weakcorr import experiments

    cfg = config.load("demo", ["data.name=teacher", "data.n_train=256", "data.n_test=8",
                               "data.options={d_in: 12, d_out: 3}", "model.widths=[8]", "seeds=1",
                               "training.alphas=[0]", "training.steps=2"])
    run = config.expand(cfg)[0]
    assert run["data"]["options"] == {"d_in": 12, "d_out": 3}
    ds = experiments.load_data(run["data"])
    assert ds.X_train.shape == (256, 12) and ds.Y_train.shape == (256, 3)
    assert "options" not in config.expand(config.load("demo"))[0]["data"]
    with pytest.raises(ValueError, match=r"`data.options` applies to data.name 'teacher' only"):
        config.load("demo", ["data.options={d_in: 3}"])
    with pytest.raises(ValueError, match=r"`data.options.noise` must be a number >= 0"):
        config.load("demo", ["data.name=teacher", "data.n_train=256", "data.options={noise: -1}"])


def test_fig4_presets_share_the_protocol_and_differ_where_they_say():
    """paper-widths-cpu is the A.2 protocol at the paper's first five widths on MNIST-5k; each
    ablation is the cpu preset at widths 256-1024 with 4 seeds, changed only where its name
    says (docs/fig4.md reads their slopes side by side)."""
    base = config.load("paper-widths-cpu")
    assert base.model.widths == (2048, 2435, 2896, 3444, 4096)
    assert config.load("paper-widths-cpu", ["model.widths.stop=19484"]).model.widths \
        == (2048, 2435, 2896, 3444, 4096, 4871, 5793, 6889, 8192, 9742, 11585, 13777, 16384, 19484)
    assert (base.training.steps, base.training.batch_size, base.training.lr0) == (250, 128, 0.1)
    assert base.training.alphas == (0, -0.25, -0.5, -0.75, -1) and len(base.seeds) == 4
    flat = config.to_dict(config.load("cpu", ["model.widths.start=256", "seeds=4"]))
    changed = {
        "ablation-one-epoch": {("training", "steps"): 31},
        "ablation-teacher-stream": {("data", "name"): "teacher", ("data", "n_train"): 32000,
                                    ("data", "options"): {"d_in": 784, "d_out": 10}},
        "ablation-teacher-reuse": {("data", "name"): "teacher",  # n_train 4000 as MNIST-5k
                                   ("data", "options"): {"d_in": 784, "d_out": 10}},
    }
    for name, diff in changed.items():
        other = config.to_dict(config.load(name))
        got = {(sec, k): v for sec in ("model", "data", "training", "logging")
               for k, v in other[sec].items() if flat[sec].get(k) != v}
        assert got == diff, name
    assert 31 * 128 <= 4000 < 32 * 128  # one epoch at most
    assert config.load("ablation-teacher-stream").data.n_train == 250 * 128  # no draw repeats
