"""Seeds trained together (stacked weights, hand-written batched passes) equal paired_sgd per seed
(its autograd implementation, the reference)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from weakcorr import _vmap_train, data, models, train

TOL = {torch.float64: dict(rtol=1e-9, atol=1e-12), torch.float32: dict(rtol=2e-4, atol=1e-6)}


def _compare(batched, sequential, tol):
    assert batched.status == sequential.status
    assert batched.diverged_step == sequential.diverged_step
    assert batched.seed == sequential.seed
    assert set(batched.metrics) == set(sequential.metrics)
    for key, want in sequential.metrics.items():
        got = batched.metrics[key]
        if want is None:
            assert got is None, key
        else:
            torch.testing.assert_close(got, want, **tol, msg=key)
    assert [e["step"] for e in batched.logs] == [e["step"] for e in sequential.logs]
    for eb, es in zip(batched.logs, sequential.logs, strict=True):
        assert set(eb) == set(es)
        for key in es:
            if es[key] is not None:
                torch.testing.assert_close(eb[key], es[key], **tol, msg=f"{key} at {es['step']}")


CASES = [
    dict(act="gelu", param="standard", dtype=torch.float64, loss="mse", bias=True, depth=2),
    dict(act="tanh", param="ntk", dtype=torch.float64, loss="cross_entropy", bias=True, depth=1),
    dict(act="relu", param="mup", dtype=torch.float64, loss="mse", bias=False, depth=3),
    dict(act="gelu", param="standard", dtype=torch.float32, loss="mse", bias=True, depth=2),
    # Hidden layers wider than 32: their products take the untransposed path of _layer (the
    # 12-wide cases above run every layer, as the 10 outputs do, as (w·hᵀ)ᵀ).
    dict(act="gelu", param="ntk", dtype=torch.float64, loss="mse", bias=True, depth=2, width=40),
]


@pytest.mark.parametrize("case", CASES, ids=["gelu-std-f64", "tanh-ntk-xent", "relu-mup-nobias",
                                             "gelu-std-f32", "gelu-ntk-f64-wide"])
def test_matches_paired_sgd_per_seed(case):
    # Cross-entropy on one-hot labels (digits); MSE on the teacher's regression targets.
    name = "digits" if case["loss"] == "cross_entropy" else "teacher"
    ds = data.load(name, n_train=48, n_test=20, seed=1, dtype=case["dtype"])
    seeds = [3, 0, 7]
    kw = dict(lr=0.2, steps=13, batch_size=8, loss=case["loss"], log_every=4)

    def build(s):
        return models.mlp(ds.X_train.shape[1], [case.get("width", 12)] * case["depth"],
                          ds.Y_train.shape[1],
                          activation=case["act"], parameterization=case["param"],
                          bias=case["bias"], output_scale=1.5, seed=s, dtype=case["dtype"])

    batched = _vmap_train.paired_sgd_seeds([build(s) for s in seeds], ds, seeds=seeds, **kw)
    for s, res in zip(seeds, batched, strict=True):
        want = train.paired_sgd(build(s), ds, seed=s, implementation="autograd", **kw)
        _compare(res, want, TOL[case["dtype"]])
        assert res.config["seed"] == s and res.config["seed_batch"] == 3


@pytest.mark.parametrize("cache", [True, False], ids=["theta0-cached", "theta0-per-batch"])
def test_inputs_zero_on_the_training_set(monkeypatch, cache):
    """Features that are 0 on every training example (MNIST's border pixels) are left out of
    training; the test set, nonzero there, must still see θ0's weights on them. One seed
    diverges (its θ and Δ are restored after every update) and one has a scaled init."""
    if not cache:
        monkeypatch.setattr(_vmap_train, "CACHE_BYTES", 0)
    ds = data.load("teacher", n_train=48, n_test=20, seed=1, dtype=torch.float64, d_in=40)
    dead = torch.tensor([0, 5, 6, *range(20, 40)])  # 17 live, padded to 32: 8 left out
    x_train = ds.X_train.clone()
    x_train[:, dead] = 0.0
    assert (ds.X_test[:, dead] != 0).all()
    ds = dataclasses.replace(ds, X_train=x_train)
    kw = dict(lr=0.2, steps=12, batch_size=8, log_every=5)

    def build(s, scale):
        m = models.mlp(40, [12, 12], 10, activation="gelu", seed=s, dtype=torch.float64,
                       output_scale=3.0)
        with torch.no_grad():
            for p in m.parameters():
                p.mul_(scale)
        return m

    nets = _vmap_train._PairedMLPs([build(0, 1.0)], ds.X_train, torch.device("cpu"),
                                   torch.float64)
    assert nets.live is not None and len(nets.live) == 32
    assert set(range(40)) - set(nets.live.tolist()) <= set(dead.tolist())
    specs = [(0, 1.0), (1, 3.0), (2, 1.0)]
    got = _vmap_train.paired_sgd_seeds([build(s, c) for s, c in specs], ds,
                                       seeds=[s for s, _ in specs], **kw)
    statuses = []
    for (s, c), res in zip(specs, got, strict=True):
        want = train.paired_sgd(build(s, c), ds, seed=s, implementation="autograd", **kw)
        _compare(res, want, TOL[torch.float64])
        statuses.append(want.status)
    assert statuses == ["ok", "diverged", "ok"]


def test_one_seed_diverges_others_continue():
    """Output scale 3, lr 0.2: the init scaled by 3 diverges at step 3, the plain one does not."""
    import copy

    ds = data.load("teacher", n_train=48, n_test=20, seed=1, dtype=torch.float64)
    kw = dict(lr=0.2, steps=12, batch_size=8, log_every=5)
    mild, wild = (models.mlp(16, [12, 12], 10, activation="relu", seed=s, dtype=torch.float64,
                             output_scale=3.0) for s in (0, 0))
    with torch.no_grad():
        for p in wild.parameters():
            p.mul_(3.0)
    kw_seq = dict(implementation="autograd", **kw)
    mild_seq = train.paired_sgd(copy.deepcopy(mild), ds, seed=0, **kw_seq)
    wild_seq = train.paired_sgd(copy.deepcopy(wild), ds, seed=1, **kw_seq)
    assert (mild_seq.status, wild_seq.status) == ("ok", "diverged")
    got = _vmap_train.paired_sgd_seeds([mild, wild], ds, seeds=[0, 1], **kw)
    _compare(got[0], mild_seq, TOL[torch.float64])
    _compare(got[1], wild_seq, TOL[torch.float64])
    assert got[1].diverged_step == wild_seq.diverged_step and len(got[0].logs) == 4


def test_supports():
    a = models.mlp(4, [8], 2, activation="gelu", seed=0)
    assert _vmap_train.supports([a, models.mlp(4, [8], 2, activation="gelu", seed=1)])
    assert not _vmap_train.supports([a, models.mlp(4, [9], 2, activation="gelu", seed=1)])
    assert not _vmap_train.supports([a, models.mlp(4, [8], 2, activation="tanh", seed=1)])
    assert not _vmap_train.supports([torch.nn.Sequential(torch.nn.Linear(4, 2))])
    with pytest.raises(ValueError, match="same-shaped weakcorr MLPs"):
        _vmap_train.paired_sgd_seeds([a], data.load("teacher", n_train=8, n_test=2),
                                     seeds=[0, 1], lr=0.1, steps=1, batch_size=2)


def test_fitted_features_pad_to_aligned_rows():
    x = torch.zeros(5, 40)
    x[0, [1, 3, 39]] = 1.0
    got = _vmap_train._fitted_features(x)
    assert len(got) == 16 and {1, 3, 39} <= set(got.tolist())
    assert got.tolist() == sorted(got.tolist())
    assert _vmap_train._fitted_features(torch.ones(5, 40)) is None  # nothing to leave out
    assert _vmap_train._fitted_features(torch.ones(5, 20) * (torch.arange(20) < 17)) is None
    assert _vmap_train._fitted_features(torch.zeros(5, 40)) is None  # degenerate: keep all


@pytest.mark.parametrize("logging", [{"every": 4, "eval_every": 3},
                                     {"every": 4, "probe_ntk": True}],
                         ids=["eval_every", "probe_ntk"])
def test_sweep_seed_groups_with_test_evaluation_or_ntk_probe(logging):
    """A sweep's seed group with eval_every trains together and logs Eq. 30 on the test set as
    one seed at a time does; with probe_ntk (not supported together) it falls back to one seed
    at a time. Both used to fail every run of the group."""
    from weakcorr import config, experiments

    cfg = config.load({
        "name": "group", "model": {"widths": [12], "depth": 2},
        "data": {"name": "teacher", "n_train": 48, "n_test": 20},
        "training": {"steps": 11, "batch_size": 8, "lr0": 0.2, "alphas": [0],
                     "dtype": "float64"},
        "seeds": 3, "logging": logging})
    runs = config.expand(cfg)
    group = experiments.run_group(runs)
    for got, run_cfg in zip(group, runs, strict=True):
        want = experiments.run(run_cfg)
        assert got["status"] == want["status"] == "ok", got.get("error")
        assert got["train_config"].get("seed_batch") == (3 if "eval_every" in logging else None)
        assert got["metrics"] == pytest.approx(want["metrics"], rel=1e-9, abs=1e-12)
        assert [e["step"] for e in got["logs"]] == [e["step"] for e in want["logs"]]
        for a, b in zip(got["logs"], want["logs"], strict=True):
            assert a == pytest.approx(b, rel=1e-9, abs=1e-12)
    probe = "kernel_change" if "probe_ntk" in logging else "mse_test"
    assert [e["step"] for e in group[0]["logs"] if probe in e] == (
        [0, 3, 6, 9, 10] if probe == "mse_test" else [0, 4, 8, 10])
