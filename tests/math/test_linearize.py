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
