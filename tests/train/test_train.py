"""paired_sgd against the function-space recursion (Eq. 8), determinism, divergence, JSON."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch
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
    """f_lin trained in parameter space (jvp + vjp at θ0) equals Eq. 8 with the explicit NTK."""
    data, model = toy_data(), tiny()
    steps, bs, lr = 50, 8, 0.3
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
