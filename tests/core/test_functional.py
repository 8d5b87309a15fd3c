"""weakcorr.functional against brute-force derivative tensors and finite differences."""

from __future__ import annotations

import pytest
import torch
from torch.autograd.functional import hessian, jacobian

import weakcorr.functional as F
from tests.conftest import tiny_tanh_mlp


def _flat_f(fm, x):
    """f as a function of the flat parameter vector (for brute-force references)."""
    return lambda vec: fm(F.unflatten(vec, fm.params), x)


def _third_derivative_contracted(fm, x, theta, v1, v2, v3):
    """∑ ∂³f/∂θa∂θc∂θe v1_a v2_c v3_e by reverse mode only: the full Hessian of each output
    (autograd.functional.hessian, create_graph), contracted with v1, v2, then one more gradient."""
    f = _flat_f(fm, x)
    out = torch.empty(x.shape[0], fm.output_dim, dtype=theta.dtype)
    for b in range(x.shape[0]):
        for i in range(fm.output_dim):
            th = theta.clone().requires_grad_(True)
            H = hessian(lambda v: f(v)[b, i], th, create_graph=True)
            (g,) = torch.autograd.grad(v1 @ H @ v2, th)
            out[b, i] = g @ v3
    return out


@pytest.fixture
def setup(gen):
    model = tiny_tanh_mlp(3, 3, 2)
    fm = F.functional(model)
    x = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    dirs = [F.random_unit(fm.params, generator=gen) for _ in range(3)]
    return fm, x, dirs


def test_functional_model_basics(tiny_model):
    fm = F.functional(tiny_model)
    assert fm.n_params == sum(p.numel() for p in tiny_model.parameters())
    assert fm.output_dim == 2
    x = torch.randn(5, 3, dtype=torch.float64)
    torch.testing.assert_close(fm(fm.params, x), tiny_model(x))
    # θ0 is a copy: changing the module does not change it.
    with torch.no_grad():
        next(tiny_model.parameters()).add_(1.0)
    assert not torch.allclose(fm(fm.params, x), tiny_model(x))


@pytest.mark.parametrize("k", [1, 2, 3], ids=lambda k: f"k={k}")
def test_directional_derivative_vs_brute_force(setup, k):
    fm, x, dirs = setup
    theta = F.flatten(fm.params)
    vs = [F.flatten(d) for d in dirs[:k]]
    got = F.directional_derivative(fm, fm.params, x, dirs[:k])
    f = _flat_f(fm, x)
    if k == 1:
        ref = torch.einsum("bia,a->bi", jacobian(f, theta), vs[0])
    elif k == 2:
        H = torch.stack([torch.stack([hessian(lambda v: f(v)[b, i], theta) for i in range(2)])
                         for b in range(x.shape[0])])
        ref = torch.einsum("biac,a,c->bi", H, vs[0], vs[1])
    else:
        ref = _third_derivative_contracted(fm, x, theta, *vs)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("k", [1, 2, 3], ids=lambda k: f"k={k}")
def test_directional_derivative_vs_finite_differences(setup, k):
    """Central differences of the (k-1)-th exact derivative along the last direction."""
    fm, x, dirs = setup
    h = 1e-5
    got = F.directional_derivative(fm, fm.params, x, dirs[:k])
    last = dirs[k - 1]

    def lower(p):
        return fm(p, x) if k == 1 else F.directional_derivative(fm, p, x, dirs[: k - 1])

    plus = lower(F.add(fm.params, F.scale(last, h)))
    minus = lower(F.sub(fm.params, F.scale(last, h)))
    fd = (plus - minus) / (2 * h)
    torch.testing.assert_close(got, fd, rtol=1e-6, atol=1e-8)


def test_repeated_direction_is_pure_derivative(setup):
    fm, x, dirs = setup
    v = dirs[0]
    # d^2/da^2 f(θ + a v) by a polynomial fit of exact values is noisy; use symmetry instead:
    # mixed derivatives are symmetric in their directions.
    a = F.directional_derivative(fm, fm.params, x, [dirs[0], dirs[1], v])
    b = F.directional_derivative(fm, fm.params, x, [v, dirs[1], dirs[0]])
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_linear_in_params_has_no_second_derivative(gen):
    fm = F.functional(torch.nn.Linear(4, 3, dtype=torch.float64))
    x = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    dirs = [F.random_unit(fm.params, generator=gen) for _ in range(2)]
    assert F.directional_derivative(fm, fm.params, x, dirs).abs().max() == 0


def test_jvp_vjp_are_adjoint(setup, gen):
    fm, x, dirs = setup
    out, jv = F.jvp(fm, fm.params, x, dirs[0])
    torch.testing.assert_close(out, fm(fm.params, x))
    c = torch.randn(out.shape, generator=gen, dtype=out.dtype)
    jtc = F.vjp(fm, fm.params, x, c)
    torch.testing.assert_close((jv * c).sum(), F.dot(dirs[0], jtc), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_dtypes_are_kept(dtype):
    fm = F.functional(tiny_tanh_mlp(dtype=dtype))
    x = torch.randn(2, 3, dtype=dtype)
    v = F.random_unit(fm.params, generator=torch.Generator().manual_seed(0))
    assert v["0.weight"].dtype == dtype
    assert F.directional_derivative(fm, fm.params, x, [v, v]).dtype == dtype


def test_tangent_algebra(gen):
    p = F.functional(tiny_tanh_mlp()).params
    u = F.random_unit(p, generator=gen)
    w = F.random_unit(p, generator=gen)
    torch.testing.assert_close(F.norm(u), torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(F.dot(F.add(u, w), u), 1 + F.dot(u, w))
    torch.testing.assert_close(F.norm(F.scale(u, -3.0)), torch.tensor(3.0, dtype=torch.float64))
    assert F.norm(F.sub(u, u)) == 0 and F.norm(F.zeros_like(u)) == 0
    torch.testing.assert_close(F.flatten(F.unflatten(F.flatten(u), u)), F.flatten(u))
    # Same generator seed → same direction.
    u1 = F.random_unit(p, generator=torch.Generator().manual_seed(7))
    u2 = F.random_unit(p, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(F.flatten(u1), F.flatten(u2))


def test_bad_input_messages(setup):
    fm, x, dirs = setup
    with pytest.raises(ValueError, match="`directions` must hold at least one"):
        F.directional_derivative(fm, fm.params, x, [])
    bad = dict(dirs[0])
    bad.pop("0.weight")
    with pytest.raises(ValueError, match=r"`directions\[0\]` must have the same keys"):
        F.directional_derivative(fm, fm.params, x, [bad])
    with pytest.raises(ValueError, match="`cotangent` must have the output's shape"):
        F.vjp(fm, fm.params, x, torch.zeros(3, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="`model` must be a torch.nn.Module"):
        F.functional(lambda x: x)
    with pytest.raises(ValueError, match="no trainable parameters"):
        F.functional(torch.nn.Flatten(0))
    conv = F.functional(torch.nn.Conv1d(1, 2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="must be 2-D"):
        conv.output(conv.params, torch.zeros(4, 1, 5, dtype=torch.float64))
