"""weakcorr.tensornorm: the subordinate norm (Eq. 32) against closed forms and invariants."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from weakcorr.tensornorm import (
    alternating_maximization,
    partial_contraction,
    subordinate_norm,
    symmetric_spectral_norm,
)


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _unit(n, seed):
    v = _randn(n, seed=seed)
    return v / v.norm()


# --- rank <= 2: exact -------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(4, 4), (3, 7), (9, 2), (1, 5)], ids=["4x4", "3x7", "9x2", "1x5"])
def test_matrix_norm_is_the_largest_singular_value(shape):
    M = _randn(*shape, seed=1)
    expected = float(torch.linalg.eigvalsh(M.T @ M).max().sqrt())  # independent of the SVD
    res = subordinate_norm(M)
    assert res.converged and res.iterations == 0
    assert res.value == pytest.approx(expected, rel=1e-12)
    assert res.upper_bound == pytest.approx(expected, rel=1e-12)


def test_power_method_on_a_matrix_reaches_the_largest_singular_value():
    """The matrix-free engine (used by correlations.norm) on a matrix, vs eigvalsh."""
    M = _randn(6, 5, seed=2)
    value, vs, converged, _ = alternating_maximization(
        lambda vs, k: partial_contraction(M, vs, k), [_unit(6, 3), _unit(5, 4)],
        tol=1e-14, max_iter=10_000,
    )
    assert converged
    assert value == pytest.approx(float(torch.linalg.eigvalsh(M.T @ M).max().sqrt()), rel=1e-10)
    assert float(vs[0] @ M @ vs[1]) == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize("ratio", [0.9, 0.99, 0.995])
def test_converged_means_within_tol_of_the_maximum_on_slow_runs(ratio):
    """Singular values 1 and ``ratio``: the value rises by factors ~ratio² per sweep, so a run
    stopped at its first rise below tol would sit ~ratio²/(1 - ratio²) tol short (50x at 0.99).
    A run that says converged is within a few tol of the largest singular value, 1."""
    Q1 = torch.linalg.qr(_randn(7, 7, seed=6)).Q
    Q2 = torch.linalg.qr(_randn(5, 5, seed=7)).Q
    M = Q1[:, :5] @ torch.diag(torch.tensor([1.0, ratio, 0.5, 0.3, 0.1],
                                            dtype=torch.float64)) @ Q2.T
    tol = 1e-8
    value, _, converged, sweeps = alternating_maximization(
        lambda vs, k: partial_contraction(M, vs, k), [_unit(7, 8), _unit(5, 9)],
        tol=tol, max_iter=100_000)
    assert converged and sweeps > 5
    assert 0.0 <= 1.0 - value <= 3 * tol


def test_scalars_and_vectors():
    assert subordinate_norm(torch.tensor(-2.5, dtype=torch.float64)).value == 2.5
    assert subordinate_norm(torch.tensor([3.0, -4.0])).value == pytest.approx(5.0)


def test_size_one_axes_are_dropped():
    M = _randn(3, 4, seed=5)
    assert subordinate_norm(M.reshape(1, 3, 1, 4)).value == pytest.approx(
        subordinate_norm(M).value, rel=1e-14
    )


# --- rank >= 3: power method ------------------------------------------------------------------


def test_rank_one_tensor_norm_is_the_product_of_norms():
    """Lemma C.1 [iii]: ‖a⊗b⊗c‖ = ‖a‖‖b‖‖c‖, and then the Frobenius norm is tight."""
    a, b, c = _randn(3, seed=1), _randn(4, seed=2), _randn(5, seed=3)
    T = torch.einsum("i,j,k->ijk", a, b, c)
    res = subordinate_norm(T, generator=torch.Generator().manual_seed(0))
    expected = float(a.norm() * b.norm() * c.norm())
    assert res.converged
    assert res.value == pytest.approx(expected, rel=1e-12)
    assert res.upper_bound == pytest.approx(expected, rel=1e-12)


def test_outer_product_of_matrices_multiplies_norms():
    """Lemma C.1 [iii] on a rank-4 tensor: ‖M1 ⊗ M2‖ = σ1(M1) σ1(M2)."""
    M1, M2 = _randn(3, 4, seed=6), _randn(2, 5, seed=7)
    T = torch.einsum("ij,kl->ijkl", M1, M2)
    res = subordinate_norm(T, generator=torch.Generator().manual_seed(1))
    expected = float(torch.linalg.svdvals(M1)[0] * torch.linalg.svdvals(M2)[0])
    assert res.value == pytest.approx(expected, rel=1e-9)


def _symmetrize(T):
    perms = [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]
    return sum(T.permute(p) for p in perms) / 6


@pytest.mark.parametrize("noise", [0.0, 0.05], ids=["exact", "noisy"])
def test_planted_rank_one_component_is_recovered(noise):
    n, lam = 8, 3.0
    v = _unit(n, seed=11)
    planted = lam * torch.einsum("i,j,k->ijk", v, v, v)
    E = _symmetrize(_randn(n, n, n, seed=12))
    E = E / subordinate_norm(E, restarts=32, generator=torch.Generator().manual_seed(3)).upper_bound
    T = planted + noise * E  # ‖noise·E‖ <= noise, so |‖T‖ - λ| <= noise
    res = subordinate_norm(T, restarts=8, generator=torch.Generator().manual_seed(2))
    assert res.converged
    if noise == 0.0:
        assert res.value == pytest.approx(lam, rel=1e-12)
    else:
        assert lam - noise <= res.value <= lam + noise
        # the maximiser is close to the planted direction: T(v, v, v) is within noise of the top
        assert float(partial_contraction(T, [v, v, v], 0) @ v) >= res.value - 2 * noise


def test_norm_is_invariant_under_orthogonal_maps_of_a_mode():
    T = _randn(3, 4, 5, seed=21)
    Q, _ = torch.linalg.qr(_randn(4, 4, seed=22))
    a = subordinate_norm(T, generator=torch.Generator().manual_seed(0)).value
    b = subordinate_norm(torch.einsum("ijk,jl->ilk", T, Q), generator=torch.Generator().manual_seed(0)).value
    assert a == pytest.approx(b, rel=1e-8)


@settings(max_examples=25, deadline=None)
@given(
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=4),
    seed=st.integers(0, 2**16),
)
def test_norm_lies_between_largest_entry_and_frobenius(shape, seed):
    """Unit basis vectors give every entry, so max|T| <= ‖T‖ <= upper_bound <= ‖T‖_F."""
    T = _randn(*shape, seed=seed)
    res = subordinate_norm(T, restarts=4, generator=torch.Generator().manual_seed(seed))
    frobenius = float(T.norm())
    assert float(T.abs().max()) <= res.value * (1 + 1e-12)
    assert res.value <= res.upper_bound * (1 + 1e-12)
    assert res.upper_bound <= frobenius * (1 + 1e-12)


# --- symmetric operators (Lanczos) ------------------------------------------------------------


@pytest.mark.parametrize("n", [5, 60], ids=["krylov-exhausted", "n60"])
def test_lanczos_spectral_norm_matches_eigvalsh(n):
    A = _randn(n, n, seed=31)
    A = A + A.T
    res = symmetric_spectral_norm(lambda v: A @ v, n, dtype=torch.float64,
                                  generator=torch.Generator().manual_seed(0), tol=1e-12)
    assert res.converged
    assert res.value == pytest.approx(float(torch.linalg.eigvalsh(A).abs().max()), rel=1e-9)


def test_lanczos_warns_when_not_converged():
    A = torch.diag(torch.linspace(1.0, 1.0 + 1e-3, 200, dtype=torch.float64))
    with pytest.warns(RuntimeWarning, match="did not converge"):
        res = symmetric_spectral_norm(lambda v: A @ v, 200, dtype=torch.float64, max_iter=3,
                                      tol=1e-15, generator=torch.Generator().manual_seed(0))
    assert not res.converged and res.value <= 1.0 + 1e-3


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "T,kwargs,match",
    [
        ([[1.0]], {}, r"`T` must be a real floating-point torch.Tensor, got list"),
        (torch.ones(2, 2, dtype=torch.int64), {}, r"`T` must be .*got torch.int64"),
        (torch.tensor([[1.0, math.nan]]), {}, r"`T` contains inf or NaN"),
        (torch.ones(2, 2, 2), {"restarts": 0}, r"`restarts` must be >= 1, got 0"),
    ],
    ids=["list", "int", "nan", "restarts"],
)
def test_bad_input(T, kwargs, match):
    with pytest.raises(ValueError, match=match):
        subordinate_norm(T, **kwargs)
