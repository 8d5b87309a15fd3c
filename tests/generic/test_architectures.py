"""Every supported architecture through every math entry point, against brute-force float64
references computed by reverse-mode torch.autograd (explicit Jacobians, nested
``torch.autograd.grad`` with ``create_graph``), never the library's nested ``torch.func.jvp``:

CNN (Conv2d, pooling, Flatten), ResNet blocks (GroupNorm, LayerNorm-style GroupNorm(1), eval
BatchNorm), transformer encoder (nn.MultiheadAttention, nn.TransformerEncoderLayer, SDPA) in
eval and train mode, a ViT with a scalar [B] output, a hand-written F.scaled_dot_product_attention
block, an embedding + causal attention model with tied output weights, a tied-weights MLP.
"""

from __future__ import annotations

import copy
import math
import types

import pytest
import torch
from torch.autograd.functional import jacobian

import weakcorr as wc
import weakcorr.correlations as C
import weakcorr.functional as F
from tests.generic._zoo import ARCHITECTURES
from weakcorr.linearize import linearize
from weakcorr.ntk import empirical_ntk
from weakcorr.tensornorm import subordinate_norm
from weakcorr.train import paired_sgd

LR = 0.3
RTOL = 1e-9
NAMES = list(ARCHITECTURES)


def _close(actual, expected, rtol=RTOL):
    scale = float(expected.abs().max().clamp_min(1e-300))
    torch.testing.assert_close(actual, expected, rtol=0, atol=rtol * scale)


@pytest.fixture(params=NAMES, ids=NAMES)
def arch(request):
    model, x = ARCHITECTURES[request.param](0)
    return request.param, model, wc.functional(model), x


def _jac(fm, x):
    """[B, d_y, N] by reverse mode (torch.autograd.functional.jacobian on flat θ)."""
    theta = F.flatten(fm.params)
    return jacobian(lambda vec: fm(F.unflatten(vec, fm.params), x), theta)


def _reverse_chain(fm, x_row, i, dirs):
    """[∇f_i, ∇²f_i[d1], ...]: d/dθ of f_i(θ)(x_row) contracted with each direction in turn,
    by nested torch.autograd.grad (reverse-over-reverse-...). Returns the scalars and the last
    gradient vector."""
    theta = F.flatten(fm.params).clone().requires_grad_(True)
    s = fm(F.unflatten(theta, fm.params), x_row[None])[0, i]
    values = []
    for d in dirs:
        (g,) = torch.autograd.grad(s, theta, create_graph=True)
        s = g @ d
        values.append(s)
    (g,) = torch.autograd.grad(s, theta, create_graph=False, allow_unused=True)
    return [float(v.detach()) for v in values], (torch.zeros_like(theta) if g is None else g)


def test_diagonal_orders_2_3(arch):
    name, _, fm, x = arch
    out = C.diagonal(fm, x, orders=(2, 3), lr=LR, method="generic")
    J = _jac(fm, x)
    ref2, ref3 = torch.empty_like(out[2]), torch.empty_like(out[3])
    for b in range(x.shape[0]):
        for i in range(J.shape[1]):
            g = J[b, i]
            vals, _ = _reverse_chain(fm, x[b], i, [g, g, g])
            ref2[b, i], ref3[b, i] = vals[1] * LR**2 / 2, vals[2] * LR**3 / 6
    _close(out[2], ref2)
    _close(out[3], ref3)
    assert float(ref2.abs().max()) > 0, "a test that cannot fail: C^{0,2} is identically 0"


def test_tensor_c02(arch):
    _, _, fm, x = arch
    x0, x1, x2 = x[:2], x[1:3], x[[2, 0]]
    T = C.tensor(fm, x0, [x1, x2], lr=LR)
    J1, J2 = _jac(fm, x1), _jac(fm, x2)
    ref = torch.empty_like(T)
    d_y = J1.shape[1]
    for b in range(2):
        for i0 in range(d_y):
            for i1 in range(d_y):
                _, hg = _reverse_chain(fm, x0[b], i0, [J1[b, i1]])  # H_{i0} g_{i1}
                ref[b, i0, i1] = (J2[b] @ hg) * LR**2 / 2
    _close(T, ref)


@pytest.mark.parametrize("implementation", ["auto", "jacobian", "vp"])
def test_empirical_ntk(arch, implementation):
    name, _, fm, x = arch
    K = empirical_ntk(fm, x, x[[1, 2]], lr=LR, implementation=implementation)
    J, J2 = _jac(fm, x), _jac(fm, x[[1, 2]])
    _close(K, LR * torch.einsum("aiN,bjN->abij", J, J2))


def test_linearize(arch):
    _, _, fm, x = arch
    gen = torch.Generator().manual_seed(3)
    delta = F.scale(F.random_unit(fm.params, generator=gen), 0.1)
    out = linearize(fm)(F.add(fm.params, delta), x)
    ref = fm(fm.params, x) + _jac(fm, x) @ F.flatten(delta)
    _close(out, ref)


def test_norm_d1(arch):
    _, _, fm, x = arch
    x0, x1 = x[:1], x[1:2]
    res = C.norm(fm, x0, [x1], D=1, lr=LR, tol=1e-12, generator=torch.Generator().manual_seed(0))
    J1 = _jac(fm, x1)[0]
    d_y = J1.shape[0]
    rows = torch.stack([
        torch.stack([_reverse_chain(fm, x0[0], i0, [J1[i1]])[1] for i1 in range(d_y)])
        for i0 in range(d_y)
    ]) * LR**1.5  # [d_y, d_y, N]: C^{1,1} = η^{3/2} ∇²f_{i0}(x0)[∇f_{i1}(x1), e_α]
    ref = subordinate_norm(rows, restarts=8, tol=1e-12, generator=torch.Generator().manual_seed(1))
    assert math.isclose(res.value, ref.value, rel_tol=1e-7)


def test_paired_sgd_matches_explicit_jacobian_training(arch):
    """θ: plain SGD on a copy of the module (its own forward, native kernels); f_lin:
    Δ ← Δ − η J(θ0)ᵀ ∂L/∂f_lin with J(θ0) from torch.autograd.functional.jacobian."""
    name, model, fm, x = arch
    x_tr, x_te = x, ARCHITECTURES[name](1)[1]
    d_y = fm(fm.params, x[:1]).shape[1]
    y = torch.randn(x.shape[0], d_y, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    y_tr = y[:, 0] if name == "vit_scalar" else y  # [N] targets for the [B]-output model
    data = types.SimpleNamespace(
        X_train=x_tr, Y_train=y_tr, labels_train=torch.zeros(len(x), dtype=torch.long),
        X_test=x_te, Y_test=y_tr, labels_test=torch.zeros(len(x), dtype=torch.long))
    lr, steps = 0.5, 3
    run = paired_sgd(model, data, lr=lr, steps=steps, batch_size=len(x), seed=0, full_batch=True,
                     return_params=True, implementation="autograd")
    assert run.status == "ok"
    # reference θ: the module itself, torch.autograd, in place SGD on a copy
    ref = copy.deepcopy(model)
    yy = y_tr.reshape(len(x), -1)
    for _ in range(steps):
        loss = ((ref(x_tr).reshape(len(x), -1) - yy) ** 2).mean()
        grads = torch.autograd.grad(loss, list(ref.parameters()))
        with torch.no_grad():
            for p, g in zip(ref.parameters(), grads):
                p.sub_(lr * g)
    ref_theta = dict(ref.named_parameters())
    for k, v in run.params["theta"].items():
        _close(v, ref_theta[k].detach())
    # reference f_lin: explicit Jacobian
    J = _jac(fm, x_tr).reshape(-1, fm.n_params)
    f0 = fm(fm.params, x_tr).reshape(-1)
    delta = torch.zeros(fm.n_params, dtype=torch.float64)
    for _ in range(steps):
        r = 2 * (f0 + J @ delta - yy.reshape(-1)) / yy.numel()
        delta = delta - lr * J.T @ r
    _close(F.flatten(F.sub(run.params["theta_lin"], fm.params)), delta)
    f_te = ref(x_te).reshape(len(x_te), -1).detach()
    lin_te = fm(fm.params, x_te) + (_jac(fm, x_te) @ delta)
    mse = float(((f_te - lin_te) ** 2).sum(-1).mean())
    assert math.isclose(run.metrics["mse_test"], mse, rel_tol=1e-8)
    assert run.logs[0]["discrepancy"] == pytest.approx(0.0, abs=1e-24)
