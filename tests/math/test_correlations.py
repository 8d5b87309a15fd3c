"""weakcorr.correlations against brute-force float64 derivative tensors and closed forms.

References: full gradient / Hessian / third-derivative tensors built with
torch.autograd.functional (reverse mode, explicit tensors) on models with <= 60
parameters and contracted by Eq. 11; a model linear in θ (C^{0,d>=2} = 0); the
quadratic model of App. G.5.2 (Eq. 200) with its analytic C^{0,2}; explicit Hessians
for the Hessian/gradient ratio; subordinate norms of the explicit tensors.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.autograd.functional import hessian, jacobian

import weakcorr.correlations as C
import weakcorr.functional as F
from tests.conftest import TOL, tiny_tanh_mlp
from weakcorr import _correlations
from weakcorr.tensornorm import subordinate_norm

RTOL, ATOL = TOL[torch.float64]
LR = 0.37


def _close(actual, expected, rtol=RTOL):
    scale = expected.abs().max().clamp_min(1e-300)
    torch.testing.assert_close(actual, expected, rtol=0, atol=rtol * float(scale))


# --- brute-force references -------------------------------------------------------------------


def _flat(fm, x):
    return lambda vec: fm(F.unflatten(vec, fm.params), x)


class _Reference:
    """Explicit float64 derivative tensors of one model, built once per (input row, output).

    Gradients: jacobian (reverse mode); Hessians: autograd.functional.hessian; third
    derivatives: a vectorized jacobian of the Hessian built with create_graph.
    """

    def __init__(self, fm, X):
        self.fm, self.X, self.theta = fm, X, F.flatten(fm.params)
        self._cache = {}

    def _get(self, key, build):
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def jac(self, b):  # [d_y, N]
        f = _flat(self.fm, self.X[b : b + 1])
        return self._get(("J", b), lambda: jacobian(lambda v: f(v)[0], self.theta, vectorize=True))

    def derivative(self, b, i, k):  # [N]*k
        f = _flat(self.fm, self.X[b : b + 1])
        if k == 1:
            return self.jac(b)[i]
        if k == 2:
            return self._get(("H", b, i), lambda: hessian(lambda v: f(v)[0, i], self.theta))
        assert k == 3
        return self._get(("T3", b, i), lambda: jacobian(
            lambda v: hessian(lambda u: f(u)[0, i], v, create_graph=True), self.theta,
            vectorize=True,
        ))

    def tensor(self, rows0, rows, lr, D=0):
        """C^{D,d} of Eq. 11 by explicit contraction: [B] + [d_y]*(d+1) + [N]*D."""
        d = len(rows)
        out = []
        for b, b0 in enumerate(rows0):
            per_output = []
            for i0 in range(self.fm.output_dim):
                T = self.derivative(b0, i0, D + d)
                for r in rows:  # contract the leading parameter axis; its output axis goes last
                    T = torch.tensordot(T, self.jac(r[b]), dims=([0], [1]))
                per_output.append(T.movedim(tuple(range(D, D + d)), tuple(range(d))))
            out.append(torch.stack(per_output))
        return torch.stack(out) * lr ** (D / 2 + d) / (math.factorial(D) * math.factorial(d))


@pytest.fixture(scope="module")
def fm():
    return F.functional(tiny_tanh_mlp(3, 3, 2, seed=0))  # 32 parameters, d_y = 2


@pytest.fixture(scope="module")
def X():
    return torch.randn(3, 3, generator=torch.Generator().manual_seed(1234), dtype=torch.float64)


@pytest.fixture(scope="module")
def ref(fm, X):
    return _Reference(fm, X)


# --- tensor ------------------------------------------------------------------------------------


# Input tuples as rows of X: the same input everywhere, or distinct inputs per position.
ROWS = {"same-inputs": ([0, 1], [[0, 1]] * 3), "distinct-inputs": ([0, 1], [[1, 2], [2, 0], [1, 1]])}


@pytest.mark.parametrize("d", [1, 2, 3], ids=["d1", "d2", "d3"])
@pytest.mark.parametrize("rows", list(ROWS.values()), ids=list(ROWS))
def test_tensor_matches_brute_force(fm, X, ref, d, rows):
    rows0, rows_k = rows[0], rows[1][:d]
    got = C.tensor(fm, X[rows0], [X[r] for r in rows_k], lr=LR)
    assert got.shape == (2, *([2] * (d + 1)))
    _close(got, ref.tensor(rows0, rows_k, LR))


def test_tensor_d1_is_the_ntk(fm, X, ref):
    got = C.tensor(fm, X[[0, 1]], [X[[2, 2]]], lr=LR)
    for b in range(2):
        _close(got[b], LR * ref.jac(b) @ ref.jac(2).T)  # Eq. 9, 12


def test_tensor_mixed_inputs_are_symmetric_in_the_directions(fm, X):
    x0, x1, x2 = X[[0, 1]], X[[1, 2]], X[[2, 2]]
    a = C.tensor(fm, x0, [x1, x2], lr=LR)
    b = C.tensor(fm, x0, [x2, x1], lr=LR)
    _close(a, b.transpose(2, 3))


# --- diagonal ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["generic", "mlp"])
@pytest.mark.parametrize("d", [1, 2, 3], ids=["d1", "d2", "d3"])
def test_diagonal_matches_brute_force(fm, X, ref, d, method):
    got = C.diagonal(fm, X, d=d, lr=LR, method=method)
    rows = list(range(X.shape[0]))
    full = ref.tensor(rows, [rows] * d, LR)
    expected = torch.stack(
        [torch.stack([full[(b, *([i] * (d + 1)))] for i in range(2)]) for b in range(X.shape[0])]
    )
    _close(got, expected)


@pytest.mark.parametrize(
    "activation", [nn.Tanh, nn.GELU, nn.Sigmoid, nn.SiLU], ids=["tanh", "gelu", "sigmoid", "silu"]
)
def test_mlp_method_equals_generic_up_to_order_5(gen, activation):
    torch.manual_seed(1)
    act = activation()  # the same module object twice: a repeated child must still count
    model = nn.Sequential(nn.Linear(4, 6), act, nn.Linear(6, 5), act, nn.Linear(5, 3)).double()
    fm = F.functional(model)
    X = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    a = C.diagonal(fm, X, orders=(1, 2, 3, 4, 5), lr=LR, method="generic")
    b = C.diagonal(fm, X, orders=(1, 2, 3, 4, 5), lr=LR, method="mlp")
    for k in a:
        _close(b[k], a[k], rtol=1e-12)


@pytest.mark.parametrize("parameterization", ["standard", "ntk", "mup"])
def test_mlp_method_handles_weakcorr_models_with_multipliers(gen, parameterization):
    from weakcorr import models

    model = models.mlp(4, [6, 5], 3, activation="gelu", parameterization=parameterization,
                       output_scale=0.7, seed=0, dtype=torch.float64)
    fm = F.functional(model)
    X = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    a = C.diagonal(fm, X, orders=(1, 2, 3), lr=LR, method="generic")
    b = C.diagonal(fm, X, orders=(1, 2, 3), lr=LR, method="mlp")
    for k in a:
        _close(b[k], a[k], rtol=1e-12)
    p_generic, p_mlp = (
        C.paper_estimate(fm, X, d=2, lr=LR, params_per_layer=4, method=m,
                         generator=torch.Generator().manual_seed(3))
        for m in ("generic", "mlp")
    )
    assert p_mlp == pytest.approx(p_generic, rel=1e-12)


def test_orders_reuse_one_nested_call_and_match_single_orders(fm, X):
    both = C.diagonal(fm, X, orders=(3, 2), lr=LR)
    assert sorted(both) == [2, 3]
    _close(both[2], C.diagonal(fm, X, d=2, lr=LR))
    _close(both[3], C.diagonal(fm, X, d=3, lr=LR))


def test_chunking_and_progress_do_not_change_values(fm, X):
    calls = []
    small = C.diagonal(fm, X, d=2, lr=LR, max_memory_gb=1e-9, method="generic",
                       progress=lambda done, total: calls.append((done, total)))
    _close(small, C.diagonal(fm, X, d=2, lr=LR, method="generic"))
    assert len(calls) == X.shape[0] * 2 and calls[-1] == (6, 6)
    T_small = C.tensor(fm, X[:2], [X[:2], X[1:]], lr=LR, max_memory_gb=1e-9)
    _close(T_small, C.tensor(fm, X[:2], [X[:2], X[1:]], lr=LR))


def test_params_argument_is_used(fm, X, gen):
    theta = F.add(fm.params, F.scale(F.random_unit(fm.params, generator=gen), 0.5))
    moved = F.functional(tiny_tanh_mlp(3, 3, 2, seed=0))
    for name, p in moved.module.named_parameters():
        p.data.copy_(theta[name])
    moved = F.functional(moved.module)
    _close(C.diagonal(fm, X, d=2, lr=LR, params=theta), C.diagonal(moved, X, d=2, lr=LR))


def test_float32_inputs_are_cast_to_the_model_dtype(fm, X):
    _close(C.diagonal(fm, X.float(), d=2, lr=LR),
           C.diagonal(fm, X.float().double(), d=2, lr=LR))


# --- closed forms ------------------------------------------------------------------------------


class _LinearInTheta(nn.Module):
    """f_i(x) = Σ_a θ_a φ_{ia}(x) with a fixed nonlinear feature map φ."""

    def __init__(self, d_in=3, n=7, d_y=2):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.theta = nn.Parameter(torch.randn(n, generator=g, dtype=torch.float64))
        self.register_buffer("P", torch.randn(d_y, n, d_in, generator=g, dtype=torch.float64))

    def forward(self, x):
        return torch.tanh(torch.einsum("ian,bn->bia", self.P, x)) @ self.theta


@pytest.mark.parametrize("d", [2, 3], ids=["d2", "d3"])
def test_model_linear_in_params_has_no_higher_correlations(gen, d):
    fm = F.functional(_LinearInTheta())
    X = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    assert float(C.diagonal(fm, X, d=1, lr=LR).abs().min()) > 0
    assert float(C.diagonal(fm, X, d=d, lr=LR).abs().max()) == 0.0
    assert float(C.tensor(fm, X, [X.flip(0)] * d, lr=LR).abs().max()) == 0.0


class _Quadratic(nn.Module):
    """Eq. 200 (App. G.5.2): z_i(x) = θ·f_i(x) + (θ·g_i(x))², g_i = A f_i, per output i."""

    def __init__(self, n=6, d_in=3, d_y=2, rotation=False):
        super().__init__()
        gen = torch.Generator().manual_seed(5)
        self.theta = nn.Parameter(torch.randn(n, generator=gen, dtype=torch.float64))
        self.register_buffer("P", torch.randn(d_y, n, d_in, generator=gen, dtype=torch.float64))
        if rotation:  # a 90° rotation in each coordinate plane (antisymmetric: f·Af = 0)
            A = torch.zeros(n, n, dtype=torch.float64)
            for k in range(0, n, 2):
                A[k, k + 1], A[k + 1, k] = -1.0, 1.0
        else:
            A = torch.randn(n, n, generator=gen, dtype=torch.float64) / math.sqrt(n)
        self.register_buffer("A", A)

    def features(self, x):  # f: [B, d_y, n], g: [B, d_y, n]
        f = torch.sin(torch.einsum("ian,bn->bia", self.P, x))
        return f, f @ self.A.T

    def forward(self, x):
        f, g = self.features(x)
        return f @ self.theta + (g @ self.theta) ** 2


def _quadratic_c2(model, theta, x0, x1, x2, lr):
    """Analytic C^{0,2}: ∇z_i = f_i + 2(g_i·θ) g_i, ∇²z_i = 2 g_i g_iᵀ, so
    C^{0,2}_{i0;i1,i2} = η²/2 · 2 (g_{i0}(x0)·∇z_{i1}(x1)) (g_{i0}(x0)·∇z_{i2}(x2))."""
    _, g0 = model.features(x0)
    grads = []
    for x in (x1, x2):
        f, g = model.features(x)
        grads.append(f + 2 * (g @ theta)[..., None] * g)  # [B, d_y, n]
    a = torch.einsum("bin,bjn->bij", g0, grads[0])
    c = torch.einsum("bin,bkn->bik", g0, grads[1])
    return lr**2 * torch.einsum("bij,bik->bijk", a, c)


@pytest.mark.parametrize("at_zero", [False, True], ids=["theta-random", "theta-zero"])
def test_quadratic_model_matches_its_analytic_c2(gen, at_zero):
    model = _Quadratic()
    if at_zero:
        model.theta.data.zero_()  # the paper's initialisation
    fm = F.functional(model)
    x0, x1, x2 = (torch.randn(3, 3, generator=gen, dtype=torch.float64) for _ in range(3))
    expected = _quadratic_c2(model, model.theta.detach(), x0, x1, x2, LR)
    _close(C.tensor(fm, x0, [x1, x2], lr=LR), expected)
    diag = torch.diagonal(torch.diagonal(_quadratic_c2(model, model.theta.detach(), x0, x0, x0, LR),
                                         dim1=2, dim2=3), dim1=1, dim2=2)
    _close(C.diagonal(fm, x0, d=2, lr=LR), diag)
    assert float(C.diagonal(fm, x0, d=3, lr=LR).abs().max()) <= 1e-13 * float(diag.abs().max())


def test_quadratic_model_with_rotation_decorrelates_at_zero(gen):
    """App. G.5.2: with A a 90° rotation and θ0 = 0, g·f = 0, so C^{0,2}(x;x,x) = 0."""
    model = _Quadratic(rotation=True)
    model.theta.data.zero_()
    fm = F.functional(model)
    X = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    diag = C.diagonal(fm, X, d=2, lr=LR)
    assert float(diag.abs().max()) <= 1e-15
    assert float(C.tensor(fm, X, [X.flip(0), X], lr=LR).abs().max()) > 1e-3


# --- norms -------------------------------------------------------------------------------------


def test_norm_D0_d1_is_the_largest_singular_value_of_the_ntk(fm, X, ref):
    res = C.norm(fm, X[:1], [X[1:2]], D=0, lr=LR)
    ntk = LR * ref.jac(0) @ ref.jac(1).T
    expected = float(torch.linalg.eigvalsh(ntk @ ntk.T).max().sqrt())
    assert res.converged and res.value == pytest.approx(expected, rel=1e-12)


def test_norm_D0_d2_equals_norm_of_brute_force_tensor(fm, X, ref, gen):
    res = C.norm(fm, X[:1], [X[1:2], X[2:3]], D=0, lr=LR, generator=gen, tol=1e-12)
    T = ref.tensor([0], [[1], [2]], LR)[0]
    ref = subordinate_norm(T, restarts=32, tol=1e-13, generator=torch.Generator().manual_seed(9))
    assert res.value == pytest.approx(ref.value, rel=1e-9)
    assert res.upper_bound == pytest.approx(ref.upper_bound, rel=1e-12)


NORM_CASES = [  # (D, d, matrix_free, relative tolerance)
    (1, 1, None, 1e-9),
    (1, 2, None, 1e-9),
    (1, 2, True, 1e-8),
    pytest.param(1, 1, True, 1e-5, marks=pytest.mark.slow),  # slow HOPM convergence here
    pytest.param(2, 1, None, 1e-8, marks=pytest.mark.slow),
]


@pytest.mark.parametrize(
    "D,d,matrix_free,rtol", NORM_CASES,
    ids=["D1d1-reduced", "D1d2-reduced", "D1d2-matrix-free", "D1d1-matrix-free",
         "D2d1-matrix-free"],
)
def test_norm_with_parameter_indices_matches_explicit_tensor(fm, X, ref, D, d, matrix_free, rtol):
    """D >= 1 vs subordinate_norm of the explicit brute-force tensor [d_y]*(d+1) + [N]*D
    (for D = 1, d = 1 the form is [d_y, d_y, N])."""
    rows = [[1], [2]][:d]
    T = ref.tensor([0], rows, LR, D=D)[0]
    assert T.shape == (2,) * (d + 1) + (fm.n_params,) * D
    explicit = subordinate_norm(T, restarts=16, tol=1e-13, generator=torch.Generator().manual_seed(2))
    tol = 1e-13 if not matrix_free else (1e-9 if rtol < 1e-6 else 1e-8)
    res = C.norm(fm, X[:1], [X[r] for r in rows], D=D, lr=LR, restarts=2, tol=tol,
                 max_iter=5000, matrix_free=matrix_free,
                 generator=torch.Generator().manual_seed(4))
    assert res.converged
    assert res.value == pytest.approx(explicit.value, rel=rtol)
    frobenius = float(T.norm())
    if D == 2:
        assert res.upper_bound is None
    elif matrix_free:
        assert res.upper_bound == pytest.approx(frobenius, rel=1e-10)
    else:  # the reduced tensor has the same unfolding spectra as the explicit one
        assert res.upper_bound == pytest.approx(explicit.upper_bound, rel=1e-9)
    assert res.value <= frobenius * (1 + 1e-12)


# --- paper estimator ---------------------------------------------------------------------------


@pytest.mark.parametrize("d", [2, 3], ids=["d2", "d3"])
@pytest.mark.parametrize("normalization", ["rms", "n_inputs"])
def test_paper_estimate_with_all_parameters_is_the_exact_full_sum(fm, X, d, normalization):
    got = C.paper_estimate(fm, X, d=d, lr=LR, params_per_layer=10_000, normalization=normalization,
                           generator=torch.Generator().manual_seed(0))
    diag = C.diagonal(fm, X, d=d, lr=LR)
    S = math.sqrt(X.shape[0]) if normalization == "rms" else X.shape[0]
    expected = float(diag.pow(2).sum().div(2).sqrt()) / fm.n_params**d / S
    assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("method", ["generic", "mlp"])
@pytest.mark.parametrize("d", [2, 3], ids=["d2", "d3"])
def test_paper_estimate_sampled_matches_explicit_entries(fm, X, ref, d, method):
    per_layer = 5
    got = C.paper_estimate(fm, X, d=d, lr=LR, params_per_layer=per_layer, method=method,
                           generator=torch.Generator().manual_seed(11))
    masks, n_sampled = _correlations.sample_layer_masks(
        fm.params, per_layer, torch.Generator().manual_seed(11)
    )
    assert n_sampled == 3 * per_layer
    idx = F.flatten(masks).nonzero().squeeze(1)
    total = 0.0
    for b in range(X.shape[0]):
        J = ref.jac(b)
        for i in range(2):
            T = ref.derivative(b, i, d)
            for axis in range(d):  # the entries on the sampled indices only
                T = T.index_select(axis, idx)
            g = J[i, idx]
            for _ in range(d):
                T = T @ g
            total += float(T / n_sampled**d) ** 2
    expected = LR**d / math.factorial(d) * math.sqrt(total / 2) / math.sqrt(X.shape[0])
    assert got == pytest.approx(expected, rel=1e-11)


def test_sampled_layers_group_weight_and_bias(fm):
    masks, n = _correlations.sample_layer_masks(fm.params, 5, torch.Generator().manual_seed(0))
    assert n == 15
    for layer in ("0", "2", "4"):
        assert float(masks[f"{layer}.weight"].sum() + masks[f"{layer}.bias"].sum()) == 5


# --- Hessian / gradient ratio ------------------------------------------------------------------


@pytest.mark.parametrize("output", [0, 1, None], ids=["out0", "out1", "max"])
def test_hessian_gradient_ratio_matches_explicit_hessian(fm, X, ref, output):
    x = X[:1]
    J = ref.jac(0)
    ratios = [
        float(torch.linalg.matrix_norm(ref.derivative(0, i, 2), ord=2)) / float(J[i].norm())
        for i in range(2)
    ]
    expected = max(ratios) if output is None else ratios[output]
    got = C.hessian_gradient_ratio(fm, x, output=output, generator=torch.Generator().manual_seed(0))
    assert got == pytest.approx(expected, rel=1e-8)


# --- bad input ---------------------------------------------------------------------------------


class _Flat(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2).double()

    def forward(self, x):
        return self.lin(x)[:, None]  # 3-D output: not allowed ([B] outputs are d_y = 1)


class _Sqrt(nn.Module):
    """f(x) = sqrt(|w x|) with w = 0: the derivatives at θ0 are infinite."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(2, 3, dtype=torch.float64))

    def forward(self, x):
        return (x @ self.w.T).abs().sqrt()


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda fm, X: C.diagonal(fm, X, d=0, lr=LR), r"`d` must be >= 1, got 0"),
        (lambda fm, X: C.diagonal(fm, X, d=1.5, lr=LR), r"`d` must be an integer"),
        (lambda fm, X: C.tensor(fm, X, [], lr=LR), r"`len\(xs\)` must be >= 1, got 0"),
        (lambda fm, X: C.norm(fm, X[:1], [X[:1]], D=-1, lr=LR), r"`D` must be >= 0, got -1"),
        (lambda fm, X: C.norm(fm, X[:1], [X[:1]] * 2, D=5, lr=LR),
         r"`D \+ d` must be <= 6, got D \+ d = 7.*allow_high_order=True"),
        (lambda fm, X: C.diagonal(fm, X, d=7, lr=LR), r"`D \+ d` must be <= 6"),
        (lambda fm, X: C.tensor(fm, X, [X[:2]], lr=LR),
         r"`xs\[0\]` has batch size 2 but `x0` has 3"),
        (lambda fm, X: C.norm(fm, X, [X[:1]], D=1, lr=LR), r"`x0` must be a single input.*got batch size 3"),
        (lambda fm, X: C.diagonal(fm, X, d=2, lr=0.0), r"`lr` must be > 0.*got 0.0"),
        (lambda fm, X: C.diagonal(fm, X, d=2, lr=float("nan")), r"`lr` must be a finite number"),
        (lambda fm, X: C.diagonal(fm, X, d=2, lr=LR, method="jax"), r"`method` must be one of"),
        (lambda fm, X: C.diagonal(fm, X, lr=LR), r"exactly one of `d` and `orders`"),
        (lambda fm, X: C.diagonal(fm, X, orders=(), lr=LR), r"`orders` must be a non-empty"),
        (lambda fm, X: C.diagonal(fm, X, d=2, lr=LR, max_memory_gb=0), r"`max_memory_gb` must be"),
        (lambda fm, X: C.diagonal(fm, X, d=2, lr=LR, params={"w": X}), r"`params` must be a dict"),
        (lambda fm, X: C.diagonal(fm.params, X, d=2, lr=LR),
         r"`fm` must be a weakcorr FunctionalModel or an nn.Module, got dict"),
        (lambda fm, X: C.paper_estimate(fm, X, d=2, lr=LR, generator=None, normalization="x"),
         r"`normalization` must be one of"),
        (lambda fm, X: C.paper_estimate(fm, X, d=2, lr=LR, generator=None, params_per_layer=0),
         r"`params_per_layer` must be >= 1"),
        (lambda fm, X: C.hessian_gradient_ratio(fm, X[:1], output=5), r"`output` must be < d_y = 2"),
    ],
    ids=["d0", "d-float", "no-xs", "D-neg", "D+d>6", "d>6", "batch-mismatch", "norm-batch",
         "lr0", "lr-nan", "method", "d-and-orders", "orders-empty", "memory", "params-keys",
         "not-functional", "normalization", "per-layer", "output-index"],
)
def test_bad_input_raises_a_helpful_value_error(fm, X, call, match):
    with pytest.raises(ValueError, match=match):
        call(fm, X)


def test_high_order_is_allowed_on_request(fm, X):
    d7 = C.diagonal(fm, X[:1], d=7, lr=LR, allow_high_order=True)
    assert d7.shape == (1, 2) and bool(torch.isfinite(d7).all())


def test_non_2d_output_is_rejected(X):
    fm = F.functional(_Flat())
    with pytest.raises(ValueError, match=r"`fm` must map a batch .* to outputs \[B, d_y\].*shape \(1, 1, 2\)"):
        C.diagonal(fm, X, d=2, lr=LR)


def test_non_finite_derivatives_are_rejected(X):
    fm = F.functional(_Sqrt())
    with pytest.raises(ValueError, match=r"C\^\(0,2\) diagonal is not finite.*`X` and `params`"):
        C.diagonal(fm, X, d=2, lr=LR)


def test_auto_method_picks_mlp_for_mlps_and_generic_otherwise(fm):
    assert C._check_method("auto", fm) is C.DiagonalMethod.MLP
    quad = F.functional(torch.nn.Bilinear(2, 2, 1).double())
    assert C._check_method("auto", quad) is C.DiagonalMethod.GENERIC


def test_mlp_method_rejects_other_modules(X):
    fm = F.functional(_Quadratic())
    with pytest.raises(ValueError, match=r"`method=.mlp.` needs a weakcorr.models.MLP.*method=.generic."):
        C.diagonal(fm, X, d=2, lr=LR, method="mlp")


# --- memory budget (slow) ----------------------------------------------------------------------

_MEMORY_SCRIPT = """
import torch
from torch import nn
import weakcorr.correlations as C, weakcorr.functional as F
from weakcorr._memory import peak_rss_bytes
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(784, 1024), nn.GELU(), nn.Linear(1024, 1024), nn.GELU(),
                      nn.Linear(1024, 10))
fm = F.functional(model)
X = torch.rand(160, 784, generator=torch.Generator().manual_seed(0))
base = peak_rss_bytes()
out = C.diagonal(fm, X, orders=(2, 3), lr=1.0, max_memory_gb={budget}, method="generic")
assert out[2].shape == (160, 10) and bool(torch.isfinite(out[3]).all())
print(base, peak_rss_bytes())
"""


@pytest.mark.slow
@pytest.mark.parametrize("budget", [4.0, 1.0], ids=["4GB", "1GB"])
def test_generic_diagonal_at_width_1024_stays_within_the_memory_budget(budget):
    """1.9 M parameters, 160 inputs x 10 outputs, orders (2, 3): peak RSS of the whole process
    below the budget (4 GB), and the chunked part within a 1 GB budget."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT.format(budget=budget)],
                         capture_output=True, text=True, check=True)
    base, peak = (int(v) for v in out.stdout.split())
    assert peak < budget * 1024**3
    assert peak - base < budget * 1024**3


def test_peak_rss_bytes_counts_own_allocations_not_the_parents_peak():
    """A child started by a process that touched 300 MB must not inherit that peak (ru_maxrss
    does on Linux, which made the memory-budget test fail inside a large pytest process);
    touching 200 MB in the child must raise it by about that much."""
    import subprocess
    import sys

    from weakcorr._memory import peak_rss_bytes

    ballast = torch.ones(300 * 2**20 // 8, dtype=torch.float64)  # 300 MB, touched
    script = ("import torch\nfrom weakcorr._memory import peak_rss_bytes\n"
              "a = peak_rss_bytes(); x = torch.ones(200 * 2**20 // 8, dtype=torch.float64)\n"
              "print(a, peak_rss_bytes())")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    before, after = (int(v) for v in out.stdout.split())
    assert peak_rss_bytes() >= ballast.numel() * 8
    if sys.platform.startswith("linux"):
        assert before < peak_rss_bytes() - 250 * 2**20  # not the parent's peak
    assert after - before >= 190 * 2**20


def test_correlation_functions_take_a_module_as_its_functional_model():
    """A plain nn.Module is converted at the edge (θ0 = its parameters): same numbers."""
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2)).double()
    x = torch.randn(3, 4, dtype=torch.float64)
    fm = F.functional(m)
    torch.testing.assert_close(C.diagonal(m, x, d=2, lr=0.1),
                               C.diagonal(fm, x, d=2, lr=0.1), rtol=0, atol=0)
    torch.testing.assert_close(C.tensor(m, x[:1], [x[1:2], x[2:]], lr=0.1),
                               C.tensor(fm, x[:1], [x[1:2], x[2:]], lr=0.1), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"`fm` must be a weakcorr FunctionalModel or an nn.Module"):
        C.diagonal("model", x, d=2, lr=0.1)
