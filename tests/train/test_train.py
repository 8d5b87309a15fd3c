"""paired_sgd against the function-space recursion (Eq. 8), determinism, divergence, JSON."""

from __future__ import annotations

import copy
import dataclasses
import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import weakcorr.functional as F
from weakcorr import models, train
from weakcorr.train import RunResult, kernel_dynamics, paired_sgd


@dataclasses.dataclass
class Toy:
    X_train: torch.Tensor
    Y_train: torch.Tensor
    labels_train: torch.Tensor
    X_test: torch.Tensor
    Y_test: torch.Tensor
    labels_test: torch.Tensor


def toy_data(n_train=40, n_test=12, d_in=5, d_out=3, seed=0, dtype=torch.float64) -> Toy:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_test, d_in, generator=g, dtype=dtype)
    lab = torch.randint(0, d_out, (n_train + n_test,), generator=g)
    y = nn.functional.one_hot(lab, d_out).to(dtype)
    return Toy(x[:n_train], y[:n_train], lab[:n_train], x[n_train:], y[n_train:], lab[n_train:])


def tiny(seed=0, width=8, param="standard"):
    return models.mlp(5, [width, width], 3, activation="tanh", parameterization=param, seed=seed,
                      dtype=torch.float64)


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_flin_matches_kernel_dynamics(loss):
    """Eq. 30 and loss metrics of paired_sgd against Eq. 8 (f_lin) and torch.optim (f)."""
    data, model = toy_data(), tiny()
    steps, bs, lr = 20, 8, 0.3
    res = paired_sgd(model, data, lr=lr, steps=steps, batch_size=bs, seed=3, loss=loss)
    order = train._batch_order(len(data.X_train), bs, steps, 3, "cpu")
    batches = [(data.X_train[i], data.Y_train[i]) for i in order]
    fm = F.functional(model)
    x_eval = torch.cat([data.X_train, data.X_test])
    f_kernel = kernel_dynamics(fm, batches, x_eval, lr=lr, loss=loss)
    # Eq. 30 / loss metrics of paired_sgd against those computed from Eq. 8 and a torch.optim run.
    theta = _train_network(model, batches, lr, loss)
    with torch.no_grad():
        f_net = fm(theta, x_eval)
    n = len(data.X_train)
    mse_train = ((f_net[:n] - f_kernel[:n]) ** 2).sum(-1).mean().item()
    mse_test = ((f_net[n:] - f_kernel[n:]) ** 2).sum(-1).mean().item()
    assert res.metrics["mse_train"] == pytest.approx(mse_train, rel=1e-9)
    assert res.metrics["mse_test"] == pytest.approx(mse_test, rel=1e-9)
    lin_loss = train._loss_value(train.Loss(loss), f_kernel[n:], data.Y_test).item()
    assert res.metrics["loss_lin_test"] == pytest.approx(lin_loss, rel=1e-9)


def _train_network(model, batches, lr, loss):
    """Plain SGD written out with torch.optim (a second implementation of the network side)."""
    m = copy.deepcopy(model)  # keep the caller's model untouched
    opt = torch.optim.SGD(m.parameters(), lr=lr)
    lossf = nn.MSELoss() if loss == "mse" else nn.CrossEntropyLoss()
    for xb, yb in batches:
        opt.zero_grad()
        target = yb if loss == "mse" else yb.argmax(-1)
        lossf(m(xb), target).backward()
        opt.step()
    return {k: v.detach() for k, v in m.named_parameters()}


def test_flin_outputs_match_kernel_dynamics_directly():
    """The linear model's final outputs themselves (not only the Eq. 30 metric) agree with Eq. 8."""
    data, model = toy_data(seed=1), tiny(seed=1)
    steps, bs, lr = 50, 10, 0.5
    order = train._batch_order(len(data.X_train), bs, steps, 0, "cpu")
    batches = [(data.X_train[i], data.Y_train[i]) for i in order]
    fm = F.functional(model)
    theta0_leaf = {k: v.clone().requires_grad_(True) for k, v in fm.params.items()}
    delta = F.zeros_like(fm.params)
    for xb, yb in batches:  # the trainer's own linear step, exercised directly
        f0, jd = train._primal_and_tangent(fm, theta0_leaf, delta, xb)
        r = train._loss_grad(train.Loss.MSE, f0.detach() + jd, yb)
        g = torch.autograd.grad(f0, list(theta0_leaf.values()), grad_outputs=r)
        delta = {k: d - lr * gi for (k, d), gi in zip(delta.items(), g, strict=True)}
    _, lin = train._outputs(fm, fm.params, fm.params, delta, data.X_test)
    ref = kernel_dynamics(fm, batches, data.X_test, lr=lr)
    torch.testing.assert_close(lin, ref, rtol=1e-9, atol=1e-12)


def test_same_seed_same_metrics_and_json_round_trip():
    data = toy_data()
    a = paired_sgd(tiny(), data, lr=0.1, steps=12, batch_size=8, seed=5, log_every=4, probe_ntk=True)
    b = paired_sgd(tiny(), data, lr=0.1, steps=12, batch_size=8, seed=5, log_every=4, probe_ntk=True)
    assert a.metrics == b.metrics and a.status == "ok"
    assert [e["step"] for e in a.logs] == [0, 4, 8, 11]
    assert {"loss_f", "loss_lin", "discrepancy", "param_distance", "kernel_change"} <= set(a.logs[-1])
    assert a.logs[0]["discrepancy"] == 0.0 and a.logs[-1]["kernel_change"] > 0
    again = RunResult.from_json(a.to_json())
    assert again == RunResult.from_dict(json.loads(json.dumps(a.to_dict())))
    assert again.metrics == a.metrics and again.config["seed"] == 5
    c = paired_sgd(tiny(), data, lr=0.1, steps=12, batch_size=8, seed=6)
    assert c.metrics != a.metrics


def test_linear_model_trains_identically():
    """For a model linear in θ, f and f_lin coincide all along training."""
    data = toy_data()
    model = nn.Linear(5, 3, dtype=torch.float64)
    res = paired_sgd(model, data, lr=0.5, steps=20, batch_size=8, seed=0)
    assert res.metrics["mse_test"] < 1e-25 and res.metrics["loss_f_test"] == pytest.approx(
        res.metrics["loss_lin_test"], rel=1e-12)


def test_huge_lr_diverges_without_raising():
    res = paired_sgd(tiny(param="ntk"), toy_data(), lr=1e5, steps=50, batch_size=8, seed=0)
    assert res.status == "diverged" and res.diverged_step is not None and res.diverged_step < 50
    json.loads(res.to_json())  # non-finite values became null


def test_full_batch_eval_every_and_network_only():
    data = toy_data()
    res = paired_sgd(tiny(), data, lr=0.2, steps=6, batch_size=1, seed=0, full_batch=True,
                     eval_every=2, log_every=3)
    assert res.config["batch_size"] == len(data.X_train)
    assert [e["step"] for e in res.logs if "mse_test" in e] == [0, 2, 4, 5]
    solo = paired_sgd(tiny(), data, lr=0.2, steps=3, batch_size=4, seed=0, linearized=False)
    assert solo.metrics["mse_test"] is None and solo.metrics["loss_f_test"] is not None


def test_progress_is_called():
    calls = []
    paired_sgd(tiny(), toy_data(), lr=0.1, steps=3, batch_size=8, seed=0,
               progress=lambda s, n: calls.append((s, n)))
    assert calls == [(1, 3), (2, 3), (3, 3)]


IMPLEMENTATION_CASES = {
    "tanh-std-mse-eval": (dict(activation="tanh"), dict(loss="mse", eval_every=3)),
    "relu-ntk-nobias-xent": (dict(activation="relu", parameterization="ntk", bias=False),
                             dict(loss="cross_entropy")),
    "gelu-mup-scaled-fullbatch": (dict(activation="gelu", parameterization="mup",
                                       output_scale=2.0), dict(full_batch=True, lr=0.1)),
}


@pytest.mark.parametrize("case", list(IMPLEMENTATION_CASES), ids=list(IMPLEMENTATION_CASES))
def test_mlp_implementation_equals_autograd(case):
    """Every pass hand-written ("mlp", the default on CPU) against autodiff for θ ("autograd"):
    logs, metrics, both trained models, progress calls and the recorded config."""
    model_kw, train_kw = IMPLEMENTATION_CASES[case]
    model = models.mlp(5, [8, 6], 3, seed=1, dtype=torch.float64, **model_kw)
    kw = dict(lr=0.3, steps=11, batch_size=8, seed=2, log_every=4, return_params=True,
              extra_config={"width": 8}) | train_kw
    calls = []
    got = paired_sgd(model, toy_data(seed=2), progress=lambda s, n: calls.append((s, n)), **kw)
    want = paired_sgd(model, toy_data(seed=2), implementation="autograd", **kw)
    assert calls == [(s, 11) for s in range(1, 12)]
    assert got.config == want.config | {"implementation": "mlp"}
    assert got.config["width"] == 8 and want.config["implementation"] == "autograd"
    assert got.status == want.status == "ok" and got.seed == want.seed
    assert got.metrics == pytest.approx(want.metrics, rel=1e-9, abs=1e-12)
    assert [e["step"] for e in got.logs] == [e["step"] for e in want.logs]
    assert len(want.logs) == (7 if "eval_every" in train_kw else 4)  # + Eq. 30 at 3, 6, 9
    for a, b in zip(got.logs, want.logs, strict=True):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12)
    for which in ("theta", "theta_lin"):
        assert set(got.params[which]) == set(want.params[which])
        for k, v in want.params[which].items():
            torch.testing.assert_close(got.params[which][k], v, rtol=1e-9, atol=1e-12, msg=k)


@settings(max_examples=20, deadline=None)
@given(depth=st.integers(1, 3), width=st.integers(1, 9), d_out=st.integers(1, 4),
       act=st.sampled_from(["gelu", "relu", "erf", "sigmoid", "tanh"]),
       param=st.sampled_from(["standard", "ntk", "mup"]), bias=st.booleans(),
       scale=st.sampled_from([1.0, 0.5, 2.0]), loss=st.sampled_from(["mse", "cross_entropy"]),
       n_train=st.integers(2, 20), batch=st.integers(1, 20), steps=st.integers(1, 7),
       eval_every=st.sampled_from([None, 1, 2, 5]), seed=st.integers(0, 3))
def test_mlp_implementation_equals_autograd_on_random_shapes(depth, width, d_out, act, param,
                                                             bias, scale, loss, n_train, batch,
                                                             steps, eval_every, seed):
    """Any MLP shape, batch size (down to 1) and step count: the two implementations agree."""
    model = models.mlp(4, [width] * depth, d_out, activation=act, parameterization=param,
                       bias=bias, output_scale=scale, seed=seed, dtype=torch.float64)
    data = toy_data(n_train=n_train, n_test=5, d_in=4, d_out=d_out, seed=seed)
    kw = dict(lr=0.2, steps=steps, batch_size=min(batch, n_train), seed=seed, loss=loss,
              log_every=2, eval_every=eval_every)
    got = paired_sgd(model, data, implementation="mlp", **kw)
    want = paired_sgd(model, data, implementation="autograd", **kw)
    assert (got.status, got.diverged_step) == (want.status, want.diverged_step)
    assert got.metrics == pytest.approx(want.metrics, rel=1e-8, abs=1e-12)
    assert len(got.logs) == len(want.logs)
    for a, b in zip(got.logs, want.logs, strict=True):
        assert a == pytest.approx(b, rel=1e-8, abs=1e-12)


def test_float32_updates_keep_float64_accuracy_on_two_threads():
    """θ's SGD step in the hand-written passes rounds once per step, on any thread count.

    With w.baddbmm_(gᵀ, h) (the sum over the batch added into θ inside the matmul), MKL with
    one seed on 2 threads rounded to 10-100 ulp of θ per step, and float32 MSE_test came out
    460x float64's here. Now it agrees within a few %."""
    from weakcorr import data

    ds = data.load("mnist5k", n_train=1000, n_test=200)
    kw = dict(lr=1e-3, steps=50, batch_size=128, full_batch=True, seed=0)
    want = paired_sgd(models.mlp(784, [64, 64], 10, activation="gelu", seed=0), ds,
                      implementation="autograd", dtype=torch.float64, **kw)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        got = paired_sgd(models.mlp(784, [64, 64], 10, activation="gelu", seed=0), ds,
                         implementation="mlp", **kw)
    finally:
        torch.set_num_threads(before)
    assert got.dtype == "float32" and want.dtype == "float64"
    assert got.metrics["mse_test"] == pytest.approx(want.metrics["mse_test"], rel=0.1)


def test_auto_implementation_and_its_fallbacks():
    """auto takes the hand-written passes for weakcorr MLPs on CPU and autodiff otherwise;
    asking for "mlp" where it does not apply is an error that says why."""
    data = toy_data()
    kw = dict(lr=0.1, steps=2, batch_size=8, seed=0)

    def used(model, **extra):
        return paired_sgd(model, data, **kw, **extra).config["implementation"]

    seq = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    assert used(tiny()) == "mlp"
    assert used(tiny(), probe_ntk=True) == "autograd"
    assert used(tiny(), eval_every=1) == "mlp"
    assert used(tiny(), linearized=False) == "autograd"
    assert used(seq) == "autograd"
    assert used(tiny(), implementation="autograd") == "autograd"
    with pytest.raises(ValueError, match=r"`implementation='mlp'` does not apply: the model is "
                                         r"not a weakcorr MLP .*, got Sequential; use "):
        paired_sgd(seq, data, implementation="mlp", **kw)
    with pytest.raises(ValueError, match=r"does not apply: probe_ntk=True"):
        paired_sgd(tiny(), data, implementation="mlp", probe_ntk=True, **kw)
    with pytest.raises(ValueError, match=r"does not apply: linearized=False"):
        paired_sgd(tiny(), data, implementation="mlp", linearized=False, **kw)


@pytest.mark.parametrize("kwargs,match", [
    (dict(lr=0.0), "`lr` must be a finite positive"),
    (dict(steps=0), "`steps` must be a positive integer"),
    (dict(batch_size=1000), "`batch_size` .* is larger than the training set"),
    (dict(loss="hinge"), "`loss` must be one of"),
], ids=["lr", "steps", "batch", "loss"])
def test_bad_input(kwargs, match):
    args = dict(lr=0.1, steps=3, batch_size=4, seed=0) | kwargs
    with pytest.raises(ValueError, match=match):
        paired_sgd(tiny(), toy_data(), **args)


def test_shape_mismatch_messages():
    with pytest.raises(ValueError, match="cannot take the data's inputs"):
        paired_sgd(models.mlp(7, 4, 3, activation="relu", dtype=torch.float64), toy_data(),
                   lr=0.1, steps=1, batch_size=4, seed=0)
    with pytest.raises(ValueError, match="set the model's d_out to 3"):
        paired_sgd(models.mlp(5, 4, 2, activation="relu", dtype=torch.float64), toy_data(),
                   lr=0.1, steps=1, batch_size=4, seed=0)
    bad = toy_data()
    bad.X_train[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        paired_sgd(tiny(), bad, lr=0.1, steps=1, batch_size=4, seed=0)


@pytest.mark.parametrize("param,bias,scale", [("standard", True, 1.0), ("ntk", False, 1.0),
                                              ("mup", True, 3.0)], ids=["standard", "ntk-nobias", "mup-scaled"])
@pytest.mark.parametrize("act", ["gelu", "relu", "sigmoid"])
def test_fused_mlp_pass_equals_autodiff(param, bias, scale, act):
    """The hand-written MLP linear pass (primal, tangent, pullback) against forward/reverse autodiff."""
    model = models.mlp(5, [7, 6], 3, activation=act, parameterization=param, bias=bias,
                       output_scale=scale, seed=0, dtype=torch.float64)
    fm = F.functional(model)
    assert train._is_plain_mlp(model, fm.params)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(9, 5, generator=g, dtype=torch.float64)
    delta = F.random_unit(fm.params, generator=g)
    r = torch.randn(9, 3, generator=g, dtype=torch.float64)
    f0, jd, pullback = train._mlp_linear_pass(model, fm.params, delta, x)
    out, ref_jd = F.jvp(fm, fm.params, x, delta)
    torch.testing.assert_close(f0, out, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(jd, ref_jd, rtol=1e-12, atol=1e-14)
    ref_g = F.vjp(fm, fm.params, x, r)
    for got, (k, want) in zip(pullback(r), ref_g.items(), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14, msg=k)


def test_generic_module_takes_the_autodiff_path():
    seq = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    assert not train._is_plain_mlp(seq, F.functional(seq).params)
    res = paired_sgd(seq, toy_data(), lr=0.1, steps=5, batch_size=8, seed=0)
    assert res.status == "ok" and res.metrics["mse_test"] > 0


@pytest.mark.parametrize("act", ["gelu", "relu", "sigmoid", "tanh", "erf"])
def test_closed_form_activation_derivatives_match_autodiff(act):
    model = models.mlp(2, 3, 1, activation=act, seed=0, dtype=torch.float64)
    z = torch.linspace(-5, 5, 201, dtype=torch.float64)
    phi, dphi = train._act_and_derivative(model, z)
    ref_phi, ref_dphi = torch.func.jvp(model.act, (z,), (torch.ones_like(z),))
    torch.testing.assert_close(phi, ref_phi, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(dphi, ref_dphi, rtol=1e-13, atol=1e-15)


def _capture_final(monkeypatch):
    """Record the final θ, θ0 and Δ that paired_sgd hands to its metrics."""
    seen = {}
    original = train._final_metrics

    def spy(fm, theta, theta0, delta, *args, **kwargs):
        seen.update(theta={k: v.detach().clone() for k, v in theta.items()},
                    theta0=dict(theta0), delta={k: v.clone() for k, v in delta.items()})
        return original(fm, theta, theta0, delta, *args, **kwargs)

    monkeypatch.setattr(train, "_final_metrics", spy)
    return seen


# name: (model, paired_sgd implementation): an MLP through both implementations (autograd with
# the fused linear pass; every pass hand-written) and a generic module through autodiff.
MODELS = {
    "mlp-fused": (lambda: tiny(seed=2), "autograd"),
    "mlp-handwritten": (lambda: tiny(seed=2), "mlp"),
    "sequential-autodiff": (lambda: nn.Sequential(
        nn.Linear(5, 8), nn.GELU(), nn.Linear(8, 3)).double(), "autograd"),
}


@pytest.mark.parametrize("name", list(MODELS), ids=list(MODELS))
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_paired_sgd_flin_outputs_equal_kernel_dynamics(name, loss):
    """The linear model paired_sgd trained (θ0 + Δ, via linearize) = Eq. 8, train and test."""
    from weakcorr.linearize import linearize

    torch.manual_seed(0)
    build, implementation = MODELS[name]
    model, data = build(), toy_data(seed=4)
    steps, bs, lr = 50, 8, 0.4
    res = paired_sgd(model, data, lr=lr, steps=steps, batch_size=bs, seed=11, loss=loss,
                     return_params=True, implementation=implementation)
    assert res.status == "ok" and res.config["implementation"] == implementation
    fm = F.functional(model)
    order = train._batch_order(len(data.X_train), bs, steps, 11, "cpu")
    targets = data.Y_train if loss == "mse" else data.labels_train  # CE: integer labels
    batches = [(data.X_train[i], targets[i]) for i in order]
    x_eval = torch.cat([data.X_train, data.X_test])
    want = kernel_dynamics(fm, batches, x_eval, lr=lr, loss=loss)
    got = linearize(fm)(res.params["theta_lin"], x_eval)
    moved = (want - fm(fm.params, x_eval)).abs().max()
    assert moved > 1e-2  # training moved f_lin: the comparison is not vacuous
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12 * moved.item())


def test_kernel_dynamics_memory_groups_change_nothing():
    data, model = toy_data(n_train=12, n_test=5, seed=5), tiny(seed=5)
    order = train._batch_order(len(data.X_train), 3, 6, 0, "cpu")
    batches = [(data.X_train[i], data.Y_train[i]) for i in order]
    fm = F.functional(model)
    whole = kernel_dynamics(fm, batches, data.X_test, lr=0.3)
    one_by_one = kernel_dynamics(fm, batches, data.X_test, lr=0.3, max_memory_gb=1e-9,
                                 implementation="structured")
    by_jacobian = kernel_dynamics(fm, batches, data.X_test, lr=0.3, implementation="jacobian")
    torch.testing.assert_close(by_jacobian, whole, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(one_by_one, whole, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(kernel_dynamics(fm, [], data.X_test, lr=0.3),
                               fm(fm.params, data.X_test))


def test_kernel_dynamics_linear_regression_closed_form():
    """f = Wx (no bias), one full batch, MSE: F_lin(1) = F(0) − η·(2/(B·d_y))·(x xᵀ + 0)·(F − y)."""
    model = nn.Linear(5, 3, bias=False, dtype=torch.float64)
    data = toy_data(n_train=6)
    fm = F.functional(model)
    x, y = data.X_train, data.Y_train
    f0 = fm(fm.params, x)
    want = f0 - 0.1 * (x @ x.T) @ (2 * (f0 - y) / y.numel())
    torch.testing.assert_close(kernel_dynamics(fm, [(x, y)], x, lr=0.1), want)


@pytest.mark.parametrize("kwargs,match", [
    (dict(loss="l1"), r"`loss` must be one of \['mse', 'cross_entropy'\], got 'l1'"),
    (dict(lr=-1.0), r"`lr` must be a finite positive number, got -1.0"),
    (dict(batches=[(torch.zeros(2, 4, dtype=torch.float64), torch.zeros(2, 3))]),
     r"`batches\[0\]` inputs have rows of shape \(4,\), `x_eval` \(5,\)"),
    (dict(batches=[(torch.zeros(2, 5, dtype=torch.float64), torch.zeros(2, 2))]),
     r"`batches\[0\]` targets must have shape \(2, 3\), got \(2, 2\)"),
    (dict(batches=[torch.zeros(2, 5)]), r"`batches\[0\]` must be a pair \(x, y\), got Tensor"),
], ids=["loss", "lr", "x-shape", "y-shape", "not-pair"])
def test_kernel_dynamics_bad_input(kwargs, match):
    args = dict(batches=[], lr=0.1) | kwargs
    with pytest.raises(ValueError, match=match):
        kernel_dynamics(tiny(), args.pop("batches"), toy_data().X_test, **args)


def test_kernel_change_probe_against_jacobian_ntk(monkeypatch):
    from weakcorr.ntk import empirical_ntk

    data, model = toy_data(), tiny(seed=3)
    seen = _capture_final(monkeypatch)
    res = paired_sgd(model, data, lr=0.5, steps=7, batch_size=8, seed=1, log_every=3,
                     probe_ntk=True)
    fm = F.functional(model)
    probe = data.X_train[:16]
    k0 = empirical_ntk(fm, probe, implementation="jacobian")
    k = empirical_ntk(fm, probe, params=seen["theta"], implementation="jacobian")
    want = (torch.linalg.norm(k - k0) / torch.linalg.norm(k0)).item()
    assert res.logs[-1]["step"] == 6
    assert res.logs[-1]["kernel_change"] == pytest.approx(want, rel=1e-9)


def test_diverged_run_keeps_logs_and_none_metrics():
    res = paired_sgd(tiny(param="ntk"), toy_data(), lr=1e6, steps=40, batch_size=8, seed=0,
                     log_every=1)
    assert res.status == "diverged" and res.error is None
    assert res.logs[-1]["step"] == res.diverged_step
    assert [e["step"] for e in res.logs] == list(range(res.diverged_step + 1))
    d = json.loads(res.to_json())
    assert d["status"] == "diverged" and set(d["metrics"]) >= {"mse_test", "c_train"}
    for value in d["metrics"].values():
        assert value is None or isinstance(value, float)


@pytest.mark.parametrize("implementation", ["autograd", "mlp"])
def test_metrics_keys_and_definitions(implementation):
    """Eq. 24 and Eq. 30 recomputed from the final parameters."""
    from weakcorr.linearize import linearize

    data, model = toy_data(), tiny()
    res = paired_sgd(model, data, lr=0.3, steps=10, batch_size=8, seed=2, return_params=True,
                     implementation=implementation)
    fm = F.functional(model)
    seen = {"theta": res.params["theta"], "theta0": fm.params,
            "delta": F.sub(res.params["theta_lin"], fm.params)}
    assert set(res.metrics) == {
        "mse_test", "mse_train", "c_test", "c_train", "loss_f_test", "loss_lin_test",
        "loss_f_train", "loss_lin_train", "acc_f_test", "acc_lin_test", "acc_f_train",
        "acc_lin_train", "param_distance", "param_distance_lin"}
    f = fm(seen["theta"], data.X_test)
    lin = linearize(fm)(res.params["theta_lin"], data.X_test)
    diff2 = ((f - lin) ** 2).sum()
    assert res.metrics["mse_test"] == pytest.approx((diff2 / len(f)).item(), rel=1e-12)
    assert res.metrics["c_test"] == pytest.approx((diff2.sqrt() / (3 * len(f))).item(), rel=1e-12)
    assert res.metrics["loss_f_test"] == pytest.approx(
        nn.functional.mse_loss(f, data.Y_test).item(), rel=1e-12)
    assert res.metrics["acc_lin_test"] == pytest.approx(
        (lin.argmax(-1) == data.labels_test).double().mean().item())
    assert res.metrics["param_distance"] == pytest.approx(
        F.norm(F.sub(seen["theta"], seen["theta0"])).item(), rel=1e-12)
    assert res.metrics["param_distance_lin"] == pytest.approx(F.norm(seen["delta"]).item(), rel=1e-12)


def test_run_result_schema():
    res = paired_sgd(tiny(), toy_data(), lr=0.1, steps=2, batch_size=8, seed=0)
    assert res.versions.keys() == {"weakcorr", "torch", "python"}
    assert res.dtype == "float64" and res.device == "cpu" and res.wall_time_s > 0
    assert {"lr", "steps", "batch_size", "seed", "loss", "log_every", "linearized", "probe_ntk",
            "full_batch", "n_params", "model", "n_train", "n_test"} <= set(res.config)
    d = res.to_dict()
    with pytest.raises(ValueError, match=r"unknown RunResult fields \['extra'\]"):
        RunResult.from_dict(d | {"extra": 1})
    with pytest.raises(ValueError, match=r"`schema_version` 2 is not supported"):
        RunResult.from_dict(d | {"schema_version": 2})
    with pytest.raises(ValueError, match=r"has no 'config' field"):
        RunResult.from_dict({k: v for k, v in d.items() if k != "config"})


_finite_or_not = st.floats(allow_nan=True, allow_infinity=True, width=64)


@settings(max_examples=25, deadline=None)
@given(metrics=st.dictionaries(st.sampled_from(["mse_test", "c_test", "acc_f_test"]),
                               st.one_of(st.none(), _finite_or_not)),
       losses=st.lists(_finite_or_not, max_size=4), seed=st.integers(0, 2**31),
       status=st.sampled_from(["ok", "diverged", "failed"]))
def test_run_result_json_round_trip(metrics, losses, seed, status):
    res = RunResult(config={"lr": 0.1, "seed": seed}, status=status, metrics=metrics,
                    logs=[{"step": i, "loss_f": v} for i, v in enumerate(losses)], seed=seed,
                    error="boom" if status == "failed" else None)
    again = RunResult.from_json(res.to_json())
    assert again == RunResult.from_dict(res.to_dict())
    for key, value in metrics.items():
        ok = value is not None and math.isfinite(value)
        assert again.metrics[key] == (value if ok else None)
    assert RunResult.from_json(again.to_json()) == again


def test_dtype_override_keeps_the_caller_model():
    model = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = paired_sgd(model, toy_data(), lr=0.1, steps=3, batch_size=8, seed=0,
                     dtype=torch.float32)
    assert res.dtype == "float32" and res.status == "ok"
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]) and v.dtype == torch.float64


@pytest.mark.parametrize("kwargs,match", [
    (dict(lr=-0.5), r"`lr` must be a finite positive number, got -0.5"),
    (dict(steps=2.5), r"`steps` must be a positive integer, got 2.5"),
    (dict(batch_size=0), r"`batch_size` must be a positive integer, got 0"),
    (dict(log_every=0), r"`log_every` must be a positive integer, got 0"),
    (dict(eval_every=-3), r"`eval_every` must be a positive integer, got -3"),
    (dict(batch_size=41), r"`batch_size` \(41\) is larger than the training set \(40\)"),
    (dict(loss="hinge"), r"`loss` must be one of \['mse', 'cross_entropy'\], got 'hinge'"),
    (dict(implementation="jax"),
     r"`implementation` must be one of \['auto', 'autograd', 'mlp'\], got 'jax'"),
], ids=["lr-negative", "steps-float", "batch-zero", "log-every", "eval-every", "batch-41", "loss-name",
        "implementation"])
def test_bad_input_messages(kwargs, match):
    args = dict(lr=0.1, steps=3, batch_size=4, seed=0) | kwargs
    with pytest.raises(ValueError, match=match):
        paired_sgd(tiny(), toy_data(), **args)


def test_primal_cache_changes_nothing_but_the_work(monkeypatch):
    """From the second epoch the θ0 forward pass is a lookup; results equal the uncached run."""
    data, model = toy_data(), tiny(seed=6)
    calls = []
    original = train._mlp_primal
    monkeypatch.setattr(train, "_mlp_primal", lambda *a: calls.append(1) or original(*a))
    kw = dict(lr=0.3, steps=25, batch_size=8, seed=4, log_every=5, implementation="autograd")
    cached = paired_sgd(model, data, **kw)
    n_fresh = calls.count(1)
    repeats = train._repeat_flags(train._batch_order(40, 8, 25, 4, "cpu"), 40)
    assert n_fresh == repeats.count(False) == 5  # one epoch of 5 batches, then lookups
    monkeypatch.setattr(train, "PRIMAL_CACHE_GB", 0.0)
    calls.clear()
    plain = paired_sgd(model, data, **kw)
    assert len(calls) == 0  # without the cache the fused pass does its own forward
    for key, value in plain.metrics.items():
        assert cached.metrics[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key
    for a, b in zip(cached.logs, plain.logs, strict=True):
        assert a == pytest.approx(b, rel=1e-12, abs=1e-15)


def test_repeat_flags():
    batches = [torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([1, 0]),
               torch.tensor([3, 4]), torch.tensor([4, 2])]
    assert train._repeat_flags(batches, 5) == [False, False, True, False, True]


@pytest.mark.slow
def test_wider_networks_stay_closer_to_their_linearization():
    """NTK parameterization, fixed lr: the Eq. 30 deviation and the kernel change shrink with
    width (paper Sec. 4.2 / Fig. 4); averaged over three seeds, 8x the width gives less than
    half the deviation."""
    data = toy_data(n_train=64, n_test=32, d_in=5, seed=7)
    dev, change = {}, {}
    for width in (16, 128):
        runs = [paired_sgd(models.mlp(5, [width, width], 3, activation="tanh",
                                      parameterization="ntk", seed=s, dtype=torch.float64),
                           data, lr=1.0, steps=60, batch_size=16, seed=s, probe_ntk=True,
                           log_every=59)
                for s in range(3)]
        assert all(r.status == "ok" for r in runs)
        dev[width] = sum(r.metrics["mse_test"] for r in runs) / 3
        change[width] = sum(r.logs[-1]["kernel_change"] for r in runs) / 3
    assert dev[128] < 0.5 * dev[16]
    assert change[128] < 0.5 * change[16]


@pytest.mark.slow
@pytest.mark.parametrize("implementation", ["autograd", "mlp"])
def test_paired_sgd_equals_kernel_dynamics_at_width_64_float64(implementation):
    """200 steps (5 epochs, cache active), GELU standard MLP: f_lin = Eq. 8 to 1e-9."""
    from weakcorr.linearize import linearize

    data = toy_data(n_train=40, n_test=20, d_in=5, seed=8)
    model = models.mlp(5, [64, 64], 3, activation="gelu", seed=8, dtype=torch.float64)
    res = paired_sgd(model, data, lr=0.2, steps=200, batch_size=8, seed=8, return_params=True,
                     implementation=implementation)
    fm = F.functional(model)
    order = train._batch_order(40, 8, 200, 8, "cpu")
    want = kernel_dynamics(fm, [(data.X_train[i], data.Y_train[i]) for i in order],
                           data.X_test, lr=0.2)
    got = linearize(fm)(res.params["theta_lin"], data.X_test)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_loss_gradient_matches_autograd_for_soft_targets():
    """C'(out) in closed form equals autograd, also for targets that do not sum to 1."""
    g = torch.Generator().manual_seed(0)
    out = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.rand(6, 4, generator=g, dtype=torch.float64) * 2
    for loss in train.Loss:
        (ref,) = torch.autograd.grad(train._loss_value(loss, out, y), out)
        torch.testing.assert_close(train._loss_grad(loss, out.detach(), y), ref, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", list(MODELS), ids=list(MODELS))
def test_return_params_gives_both_trained_models(name):
    """θ and θ0 + Δ come back: evaluated at the test inputs they reproduce the final metrics
    (Eq. 30 and both test losses), f_lin's matches Eq. 8, and nothing of it is serialised."""
    from weakcorr.linearize import linearize

    torch.manual_seed(0)
    build, implementation = MODELS[name]
    model, data = build(), toy_data(seed=4)
    steps, bs, lr = 30, 8, 0.4
    res = paired_sgd(model, data, lr=lr, steps=steps, batch_size=bs, seed=3, return_params=True,
                     implementation=implementation)
    fm = F.functional(model)
    f_te = fm(res.params["theta"], data.X_test)
    lin_te = linearize(fm)(res.params["theta_lin"], data.X_test)
    m = res.metrics
    assert ((f_te - lin_te) ** 2).sum(-1).mean().item() == pytest.approx(m["mse_test"], rel=1e-9)
    mse = torch.nn.functional.mse_loss
    assert mse(f_te, data.Y_test).item() == pytest.approx(m["loss_f_test"], rel=1e-9)
    assert mse(lin_te, data.Y_test).item() == pytest.approx(m["loss_lin_test"], rel=1e-9)
    order = train._batch_order(len(data.X_train), bs, steps, 3, "cpu")
    want = kernel_dynamics(fm, [(data.X_train[i], data.Y_train[i]) for i in order],
                           data.X_test, lr=lr)
    torch.testing.assert_close(lin_te, want, rtol=1e-9, atol=1e-12)
    assert "params" not in res.to_dict() and RunResult.from_json(res.to_json()) == res
    assert paired_sgd(model, data, lr=lr, steps=2, batch_size=bs, seed=3).params is None
    plain = paired_sgd(model, data, lr=lr, steps=2, batch_size=bs, seed=3, linearized=False,
                       return_params=True)
    assert plain.params["theta_lin"] is None and set(plain.params["theta"]) == set(fm.params)


def test_diverged_uses_the_size_of_a_negative_first_loss():
    """A first loss < 0 (cross-entropy on targets that are not probability vectors) is not a
    divergence threshold of 1e-6; losses >= 0 keep the 1e6 x first-loss rule."""
    assert not train._diverged({"loss_f": -0.4, "loss_lin": 0.3}, -0.5)
    assert not train._diverged({"loss_f": -4e5, "loss_lin": None}, -0.5)
    assert train._diverged({"loss_f": -6e5, "loss_lin": -0.5}, -0.5)
    assert train._diverged({"loss_f": 0.1, "loss_lin": 6e5}, -0.5)
    assert train._diverged({"loss_f": float("nan")}, -0.5)
    assert not train._diverged({"loss_f": 2e5, "loss_lin": 1e5}, 0.2)
    assert train._diverged({"loss_f": 2.1e5, "loss_lin": 1e5}, 0.2)
    assert train._diverged({"loss_f": 1.1e-6}, 0.0)  # 1e6 x the floor of 1e-12


@pytest.mark.parametrize("implementation", ["autograd", "mlp"])
def test_negative_cross_entropy_does_not_diverge_at_once(implementation):
    """Teacher targets (not probability vectors): batch losses of both signs, the first < 0."""
    from weakcorr import data as wc_data

    ds = wc_data.load("teacher", n_train=40, n_test=12, seed=0, d_in=5, d_out=3,
                      dtype=torch.float64)
    res = paired_sgd(tiny(), ds, lr=0.01, steps=10, batch_size=8, seed=0, loss="cross_entropy",
                     log_every=1, implementation=implementation)
    losses = [e["loss_f"] for e in res.logs]
    assert losses[0] < 0 < max(losses)
    assert res.status == "ok" and res.diverged_step is None
