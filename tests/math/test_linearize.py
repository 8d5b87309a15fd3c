"""linearize and taylor: exactness for models linear in θ, brute-force Jacobians, error orders."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.autograd.functional import jacobian

import weakcorr.functional as F
from tests.conftest import TOL, tiny_tanh_mlp
from weakcorr import models
from weakcorr.linearize import linearize, taylor

RTOL, ATOL = TOL[torch.float64]


class LinearInTheta(nn.Module):
    """Nonlinear in x, linear in θ: f(x) = W tanh(x) + b + a·sin(x)_0."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.a = nn.Parameter(torch.randn(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(torch.tanh(x)) + self.a * torch.sin(x[:, :1])


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), scale=st.floats(1e-3, 1e3))
def test_linear_in_theta_is_its_own_linearization(seed, scale):
    torch.manual_seed(seed)
    fm = F.functional(LinearInTheta().double())
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 3, generator=g, dtype=torch.float64)
    theta = F.add(fm.params, F.scale(F.random_unit(fm.params, generator=g), scale))
    want = fm(theta, x)
    torch.testing.assert_close(linearize(fm)(theta, x), want, rtol=RTOL, atol=ATOL * scale)
    torch.testing.assert_close(taylor(fm, 2)(theta, x), want, rtol=RTOL, atol=ATOL * scale)


def test_linearize_matches_brute_force_jacobian(gen):
    fm = F.functional(tiny_tanh_mlp())
    x = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    delta = F.random_unit(fm.params, generator=gen)
    theta = F.add(fm.params, delta)
    theta0 = F.flatten(fm.params)
    jac = jacobian(lambda v: fm(F.unflatten(v, fm.params), x), theta0)  # [B, d_y, N]
    want = fm(fm.params, x) + jac @ F.flatten(delta)
    torch.testing.assert_close(linearize(fm)(theta, x), want, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(taylor(fm, 1)(theta, x), want, rtol=RTOL, atol=ATOL)


def test_taylor_second_order_matches_brute_force_hessian(gen):
    fm = F.functional(tiny_tanh_mlp(3, 3, 2))
    x = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    delta = F.random_unit(fm.params, generator=gen)
    theta0, v = F.flatten(fm.params), F.flatten(delta)
    want = linearize(fm)(F.add(fm.params, delta), x).clone()
    for b in range(2):
        for i in range(2):
            h = torch.autograd.functional.hessian(
                lambda t, b=b, i=i: fm(F.unflatten(t, fm.params), x)[b, i], theta0)
            want[b, i] += 0.5 * v @ h @ v
    torch.testing.assert_close(taylor(fm, 2)(F.add(fm.params, delta), x), want,
                               rtol=RTOL, atol=ATOL)


def _error_slope(f_approx, fm, x, direction, scales):
    errs = []
    for t in scales:
        theta = F.add(fm.params, F.scale(direction, t))
        errs.append((fm(theta, x) - f_approx(theta, x)).abs().max().item())
    logs = torch.tensor([[math.log(t), 1.0] for t in scales], dtype=torch.float64)
    y = torch.tensor([math.log(e) for e in errs], dtype=torch.float64)
    return torch.linalg.lstsq(logs, y.unsqueeze(1)).solution[0, 0].item()


@pytest.mark.parametrize("order,slope", [(1, 2.0), (2, 3.0), (3, 4.0)], ids=["lin", "taylor2", "taylor3"])
def test_error_shrinks_with_the_right_power(order, slope, gen):
    """f(θ0 + tΔ) − f_k(θ0 + tΔ) = O(t^{k+1}): log-log slope over t in [1e-3, 1e-1]."""
    model = models.mlp(3, [8, 8], 2, activation="gelu", seed=0, dtype=torch.float64)
    fm = F.functional(model)
    x = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    direction = F.random_unit(fm.params, generator=gen)
    approx = linearize(fm) if order == 1 else taylor(fm, order)
    scales = [10 ** (-3 + 0.25 * k) for k in range(9)] if order < 3 else [
        10 ** (-1.5 + 0.25 * k) for k in range(7)]
    assert _error_slope(approx, fm, x, direction, scales) == pytest.approx(slope, abs=0.1)


def test_expansion_point_is_frozen(gen):
    fm = F.functional(tiny_tanh_mlp())
    f_lin = linearize(fm)
    x = torch.randn(3, 3, generator=gen, dtype=torch.float64)
    before = f_lin(fm.params, x)
    theta0 = {k: v.clone() for k, v in fm.params.items()}
    fm.params = F.add(fm.params, F.random_unit(fm.params, generator=gen))
    torch.testing.assert_close(f_lin(theta0, x), before, rtol=0, atol=0)


def test_linearization_is_differentiable(gen):
    """Gradient of a loss of f_lin in θ is J(θ0)ᵀ r, the vjp at θ0."""
    fm = F.functional(tiny_tanh_mlp())
    x = torch.randn(3, 3, generator=gen, dtype=torch.float64)
    theta = {k: (v + 0.3).requires_grad_(True) for k, v in fm.params.items()}
    r = torch.randn(3, 2, generator=gen, dtype=torch.float64)
    (linearize(fm)(theta, x) * r).sum().backward()
    want = F.vjp(fm, fm.params, x, r)
    for k in want:
        torch.testing.assert_close(theta[k].grad, want[k], rtol=RTOL, atol=ATOL)


def test_bad_input():
    fm = F.functional(tiny_tanh_mlp())
    with pytest.raises(ValueError, match=r"`order` must be an integer >= 1, got 0"):
        taylor(fm, 0)
    with pytest.raises(ValueError, match=r"`order` must be an integer >= 1, got 1.5"):
        taylor(fm, 1.5)
    with pytest.raises(TypeError, match=r"`fm` must be a weakcorr FunctionalModel, got Linear"):
        linearize(nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"`params` must have the model's parameter names; "
                                         r"missing \['0.bias'\]"):
        params = dict(fm.params)
        del params["0.bias"]
        linearize(fm)(params, torch.zeros(1, 3, dtype=torch.float64))


# --- linearize and taylor return FunctionalModels: the transforms compose ----------------------

from weakcorr import correlations as C  # noqa: E402
from weakcorr.functional import FunctionalModel  # noqa: E402
from weakcorr.ntk import empirical_ntk  # noqa: E402

COMPOSE_MODELS = {
    "mlp-gelu": lambda: models.mlp(3, [5, 5], 2, activation="gelu", seed=1, dtype=torch.float64),
    "sequential-tanh": tiny_tanh_mlp,
    "linear-in-theta": lambda: LinearInTheta().double(),
}


@pytest.mark.parametrize("name", list(COMPOSE_MODELS))
def test_ntk_of_the_linearization_is_the_ntk_at_theta0(name, gen):
    """Θ of f_lin at θ0 = Θ of f (J_lin = J(θ0)); reference: fm's explicit-Jacobian kernel."""
    torch.manual_seed(0)
    fm = F.functional(COMPOSE_MODELS[name]())
    x = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    want = empirical_ntk(fm, x, implementation="jacobian")
    lin = linearize(fm)
    assert isinstance(lin, FunctionalModel) and isinstance(taylor(fm, 2), FunctionalModel)
    for impl in ("auto", "jacobian", "vp"):
        torch.testing.assert_close(empirical_ntk(lin, x, implementation=impl), want,
                                   rtol=RTOL, atol=ATOL)
    # away from θ0 the linearization's kernel stays Θ(θ0); the network's moves
    moved = F.add(fm.params, F.random_unit(fm.params, generator=gen))
    torch.testing.assert_close(empirical_ntk(lin, x, params=moved), want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", list(COMPOSE_MODELS))
def test_higher_derivatives_of_an_expansion_vanish_exactly(name, gen):
    torch.manual_seed(0)
    fm = F.functional(COMPOSE_MODELS[name]())
    x = torch.randn(3, 3, generator=gen, dtype=torch.float64)
    zeros = torch.zeros(3, 2, dtype=torch.float64)
    assert torch.equal(C.diagonal(linearize(fm), x, d=2, lr=0.5), zeros)
    second = taylor(fm, 2)
    assert torch.equal(C.diagonal(second, x, d=3, lr=0.5), zeros)
    # and the orders the expansion keeps equal the model's at θ0 (generic nested jvps)
    torch.testing.assert_close(C.diagonal(second, x, d=2, lr=0.5),
                               C.diagonal(fm, x, d=2, lr=0.5, method="generic"),
                               rtol=RTOL, atol=ATOL)


def test_expansions_refuse_the_structural_fast_paths():
    """The structured NTK and Taylor mode read the module, whose forward pass is f, not f_lin."""
    from weakcorr import _mlp

    fm = F.functional(models.mlp(3, 4, 2, activation="tanh", seed=0, dtype=torch.float64))
    lin = linearize(fm)
    assert isinstance(_mlp.recognise(fm.module), tuple)
    assert "evaluates something other than its module" in _mlp.recognise_fm(lin)
    with pytest.raises(ValueError, match="`implementation`='structured' needs"):
        empirical_ntk(lin, torch.zeros(2, 3, dtype=torch.float64), implementation="structured")
    with pytest.raises(ValueError, match="`method='mlp'` needs .*evaluates something other"):
        C.diagonal(lin, torch.zeros(2, 3, dtype=torch.float64), d=2, lr=0.5, method="mlp")


def test_linearizing_twice_changes_nothing(gen):
    fm = F.functional(tiny_tanh_mlp())
    x = torch.randn(3, 3, generator=gen, dtype=torch.float64)
    theta = F.add(fm.params, F.random_unit(fm.params, generator=gen))
    torch.testing.assert_close(linearize(linearize(fm))(theta, x), linearize(fm)(theta, x),
                               rtol=RTOL, atol=ATOL)
    assert repr(linearize(fm)).startswith("TaylorModel(order=1, base=FunctionalModel(Sequential")
