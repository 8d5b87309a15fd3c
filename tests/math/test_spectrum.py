"""weakcorr.ntk.spectrum: Lanczos on NTK-vector products against a dense eigendecomposition of
the kernel built by empirical_ntk (float64), and the critical lr against GD on that kernel."""

from __future__ import annotations

import math

import pytest
import torch

from weakcorr import limits
from weakcorr.functional import functional
from weakcorr.models import mlp
from weakcorr.ntk import empirical_ntk, spectrum

D = torch.float64


def _dense(net, x):
    k = empirical_ntk(net, x, implementation="jacobian")
    n, d = k.shape[0], k.shape[2]
    return k.permute(0, 2, 1, 3).reshape(n * d, n * d)


@pytest.mark.parametrize("act,param", [("tanh", "ntk"), ("relu", "standard"), ("gelu", "mup")])
def test_top_k_against_dense_eigh(act, param):
    net = mlp(5, [24, 24], 3, activation=act, parameterization=param, seed=1, dtype=D)
    x = torch.randn(10, 5, dtype=D, generator=torch.Generator().manual_seed(0))
    dense = torch.linalg.eigvalsh(_dense(net, x)).flip(0)
    s = spectrum(net, x, k=5)
    assert s.converged
    torch.testing.assert_close(s.eigenvalues, dense[:5], rtol=1e-9, atol=1e-12 * float(dense[0]))
    assert bool((s.residuals <= 1e-8 * dense[0]).all())
    # Ritz vectors are eigenvectors of the dense kernel
    k = _dense(net, x)
    v = s.eigenvectors.reshape(5, -1)
    torch.testing.assert_close(v @ k, s.eigenvalues[:, None] * v, rtol=0, atol=1e-7 * float(dense[0]))
    # critical lr: N·d_y / λ_max
    assert s.critical_lr == pytest.approx(30 / float(dense[0]), rel=1e-10)


def test_full_space_condition_number():
    # 6 inputs × 2 outputs = 12 < #params: Lanczos to the whole space gives κ exactly.
    net = mlp(4, 16, 2, activation="erf", parameterization="ntk", seed=0, dtype=D)
    x = torch.randn(6, 4, dtype=D, generator=torch.Generator().manual_seed(1))
    dense = torch.linalg.eigvalsh(_dense(net, x))
    s = spectrum(net, x, k=3, max_iter=12)
    assert s.n_iterations == 12
    assert s.condition_number == pytest.approx(float(dense[-1] / dense[0]), rel=1e-6)
    assert s.lambda_min >= float(dense[0]) * (1 - 1e-6)


def test_singular_kernel_has_infinite_condition_number():
    net = torch.nn.Linear(2, 1, dtype=D)  # 3 parameters, 5 outputs: Θ has rank <= 3
    s = spectrum(net, torch.randn(5, 2, dtype=D), k=2)
    assert s.lambda_min == 0.0 and math.isinf(s.condition_number)


def test_critical_lr_separates_stable_from_divergent_gd():
    net = mlp(3, [16], 2, activation="tanh", parameterization="ntk", seed=2, dtype=D)
    x = torch.randn(8, 3, dtype=D, generator=torch.Generator().manual_seed(2))
    y = torch.randn(8, 2, dtype=D, generator=torch.Generator().manual_seed(3))
    s = spectrum(net, x, k=1)
    k = empirical_ntk(net, x)
    with torch.no_grad():
        f0 = net(x)
    res = {}
    for factor in (0.98, 1.02):
        fx, _ = limits.gd_mse(k, y, lr=factor * s.critical_lr, steps=400, fx_train_0=f0)
        res[factor] = float((fx - y).norm())
    assert res[0.98] < float((f0 - y).norm()) < res[1.02]


def test_bad_input():
    fm = functional(torch.nn.Linear(2, 1))
    x = torch.randn(3, 2)
    with pytest.raises(ValueError, match=r"`k` must be an integer in \[1, B·d_y = 3\]"):
        spectrum(fm, x, k=4)
    with pytest.raises(ValueError, match="`tol` must be a number > 0"):
        spectrum(fm, x, k=1, tol=0)
    with pytest.raises(ValueError, match="`max_iter` must be an integer >= k"):
        spectrum(fm, x, k=2, max_iter=1)
