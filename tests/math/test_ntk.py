"""empirical_ntk: every implementation against brute-force float64 Jacobians and closed forms."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.autograd.functional import jacobian

import weakcorr.functional as F
from tests.conftest import TOL
from weakcorr import models
from weakcorr.ntk import empirical_ntk, supports_structured

RTOL, ATOL = TOL[torch.float64]
IMPLS = ["jacobian", "vp", "structured", "auto"]


def brute_ntk(fm, x1, x2, lr=1.0, params=None):
    """η J(x1) J(x2)ᵀ with J from torch.autograd.functional.jacobian on the flat parameters."""
    params = fm.params if params is None else params
    theta = F.flatten(params)

    def jac(x):
        return jacobian(lambda v: fm(F.unflatten(v, params), x), theta)  # [B, d_y, N]

    return lr * torch.einsum("aim,bjm->abij", jac(x1), jac(x2))


def _seq(bias: bool) -> nn.Module:
    torch.manual_seed(0)
    inner = nn.Sequential(nn.Linear(6, 5, bias=bias), nn.GELU())
    return nn.Sequential(nn.Linear(4, 6, bias=bias), nn.Tanh(), inner,
                         nn.Linear(5, 3, bias=bias)).double()


def _shared_activation() -> nn.Module:
    """One Tanh module used twice: the chain must apply it at both places."""
    torch.manual_seed(0)
    act = nn.Tanh()
    return nn.Sequential(nn.Linear(4, 5), act, nn.Linear(5, 5), act, nn.Linear(5, 3)).double()


MODELS = {
    "seq-bias": lambda: _seq(True),
    "seq-shared-activation": _shared_activation,
    "seq-nobias": lambda: _seq(False),
    "seq-output-sigmoid": lambda: nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3),
                                                nn.Sigmoid()).double(),
    "linear": lambda: nn.Linear(4, 3).double(),
    "mlp-standard-erf": lambda: models.mlp(4, [6, 5], 3, activation="erf", seed=1,
                                           dtype=torch.float64),
    "mlp-ntk-nobias-relu": lambda: models.mlp(4, [6], 3, activation="relu", parameterization="ntk",
                                              bias=False, seed=2, dtype=torch.float64),
    "mlp-mup-scaled-sigmoid": lambda: models.mlp(4, [5, 6, 4], 3, activation="sigmoid",
                                                 parameterization="mup", output_scale=2.5,
                                                 sigma_b=0.3, seed=3, dtype=torch.float64),
}


class Residual(nn.Module):
    """Not a chain of affine maps and elementwise activations: only jacobian/vp apply."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(x + torch.tanh(self.a(x)))


@pytest.fixture
def inputs(gen):
    x1 = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    x2 = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    return x1, x2


@pytest.mark.parametrize("name", list(MODELS), ids=list(MODELS))
@pytest.mark.parametrize("impl", IMPLS, ids=IMPLS)
def test_all_implementations_match_brute_force(name, impl, inputs):
    fm = F.functional(MODELS[name]())
    assert supports_structured(fm)
    x1, x2 = inputs
    ref = brute_ntk(fm, x1, x2, lr=0.3)
    got = empirical_ntk(fm, x1, x2, lr=0.3, implementation=impl)
    assert got.shape == (5, 3, 3, 3)
    torch.testing.assert_close(got, ref, rtol=RTOL, atol=ATOL)
    same = empirical_ntk(fm, x1, implementation=impl)  # x2=None means x1
    torch.testing.assert_close(same, brute_ntk(fm, x1, x1), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("impl", ["jacobian", "vp", "auto"], ids=["jacobian", "vp", "auto"])
def test_generic_module(impl, inputs):
    torch.manual_seed(0)
    fm = F.functional(Residual().double())
    assert not supports_structured(fm)
    x1, x2 = inputs
    torch.testing.assert_close(empirical_ntk(fm, x1, x2, implementation=impl),
                               brute_ntk(fm, x1, x2), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("impl", ["jacobian", "vp", "auto"], ids=["jacobian", "vp", "auto"])
def test_tied_linear_is_not_a_chain(impl, inputs):
    """A Linear used twice (tied weights) is no chain of distinct layers: auto falls back."""
    torch.manual_seed(0)
    lin = nn.Linear(4, 4)
    fm = F.functional(nn.Sequential(lin, nn.Tanh(), lin, nn.Tanh(), nn.Linear(4, 3)).double())
    assert not supports_structured(fm)
    x1, x2 = inputs
    torch.testing.assert_close(empirical_ntk(fm, x1, x2, implementation=impl),
                               brute_ntk(fm, x1, x2), rtol=RTOL, atol=ATOL)


def test_kernel_at_other_params(inputs, gen):
    fm = F.functional(MODELS["mlp-standard-erf"]())
    theta = F.add(fm.params, F.scale(F.random_unit(fm.params, generator=gen), 3.0))
    x1, x2 = inputs
    ref = brute_ntk(fm, x1, x2, params=theta)
    for impl in IMPLS:
        torch.testing.assert_close(empirical_ntk(fm, x1, x2, params=theta, implementation=impl),
                                   ref, rtol=RTOL, atol=ATOL)
    assert not torch.allclose(ref, brute_ntk(fm, x1, x2))


@pytest.mark.parametrize("impl", IMPLS, ids=IMPLS)
@pytest.mark.parametrize("two_inputs", [False, True], ids=["x2=None", "x2"])
def test_trace_and_diagonal_options(impl, two_inputs, gen):
    fm = F.functional(MODELS["mlp-mup-scaled-sigmoid"]())
    x1 = torch.randn(4, 4, generator=gen, dtype=torch.float64)
    x2 = torch.randn(4, 4, generator=gen, dtype=torch.float64) if two_inputs else None
    full = brute_ntk(fm, x1, x1 if x2 is None else x2)
    kw = dict(implementation=impl)
    trace = empirical_ntk(fm, x1, x2, trace_outputs=True, **kw)
    diag = empirical_ntk(fm, x1, x2, diagonal_inputs=True, **kw)
    both = empirical_ntk(fm, x1, x2, diagonal_inputs=True, trace_outputs=True, **kw)
    assert trace.shape == (4, 4) and diag.shape == (4, 3, 3) and both.shape == (4,)
    # trace_outputs is the sum (not the mean) over the output index.
    torch.testing.assert_close(trace, full.diagonal(dim1=2, dim2=3).sum(-1), rtol=RTOL, atol=ATOL)
    pairs = full.diagonal(dim1=0, dim2=1).permute(2, 0, 1)  # [b, i, j] = Θ(x1_b, x2_b)
    torch.testing.assert_close(diag, pairs, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(both, pairs.diagonal(dim1=1, dim2=2).sum(-1), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("impl", ["jacobian", "vp", "structured"], ids=["jacobian", "vp", "structured"])
@pytest.mark.parametrize("opts", [{}, {"trace_outputs": True}, {"diagonal_inputs": True}],
                         ids=["full", "trace", "diagonal"])
@pytest.mark.parametrize("two_inputs", [False, True], ids=["x2=None", "x2"])
def test_chunking_changes_nothing(impl, opts, two_inputs, gen):
    """A tiny memory budget forces one example per chunk; the result must not change."""
    fm = F.functional(MODELS["seq-bias"]())
    x1 = torch.randn(7, 4, generator=gen, dtype=torch.float64)
    x2 = torch.randn(7, 4, generator=gen, dtype=torch.float64) if two_inputs else None
    whole = empirical_ntk(fm, x1, x2, implementation=impl, **opts)
    chunked = empirical_ntk(fm, x1, x2, implementation=impl, max_memory_gb=1e-9, **opts)
    torch.testing.assert_close(chunked, whole, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("diagonal", [False, True], ids=["full", "diagonal"])
def test_vp_pushes_at_most_vp_max_tangents_per_chunk(diagonal, gen, monkeypatch):
    """Large budgets must not mean huge vmapped jvps (slower, and 2 GB at width 1024)."""
    from weakcorr import _ntk

    seen = []
    real = _ntk.balanced_chunks
    monkeypatch.setattr(_ntk, "balanced_chunks", lambda n, c: seen.append(c) or real(n, c))
    monkeypatch.setattr(_ntk, "VP_MAX_TANGENTS", 6)
    fm = F.functional(MODELS["seq-bias"]())
    x = torch.randn(9, 4, generator=gen, dtype=torch.float64)
    ref = empirical_ntk(fm, x, implementation="jacobian", diagonal_inputs=diagonal)
    seen.clear()
    got = empirical_ntk(fm, x, implementation="vp", max_memory_gb=64, diagonal_inputs=diagonal)
    torch.testing.assert_close(got, ref, rtol=RTOL, atol=ATOL)
    d_y = fm.output_dim
    assert seen == [max(1, 6 // d_y)] and 9 // seen[0] >= 2  # several chunks, each capped


def test_symmetric_gram_blocks_are_exact(gen):
    """Inputs large enough for the blocked symmetric Gram (>= 512 rows of the δ matrix)."""
    fm = F.functional(nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 8)).double())
    x = torch.randn(70, 3, generator=gen, dtype=torch.float64)
    got = empirical_ntk(fm, x, implementation="structured")
    torch.testing.assert_close(got, empirical_ntk(fm, x, x.clone(), implementation="jacobian"),
                               rtol=RTOL, atol=ATOL)
    assert torch.equal(got, got.permute(1, 0, 3, 2))


@pytest.mark.parametrize("impl", IMPLS, ids=IMPLS)
def test_closed_form_linear_layer(impl, gen):
    """f = m·Wx + c·b: Θ(x, x')_ij = η (m² x·x' + c²) δ_ij."""
    lin = models.ScaledLinear(4, 3, weight_multiplier=0.7, bias_multiplier=1.3,
                              dtype=torch.float64)
    nn.init.normal_(lin.weight)
    nn.init.normal_(lin.bias)
    x1 = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    x2 = torch.randn(2, 4, generator=gen, dtype=torch.float64)
    want = 0.2 * (0.49 * x1 @ x2.T + 1.69)[..., None, None] * torch.eye(3, dtype=torch.float64)
    torch.testing.assert_close(empirical_ntk(lin, x1, x2, lr=0.2, implementation=impl), want,
                               rtol=RTOL, atol=ATOL)


_ACTS = [nn.Tanh, nn.ReLU, nn.GELU, nn.Sigmoid, nn.SiLU]


@settings(max_examples=12, deadline=None)
@given(
    widths=st.lists(st.integers(1, 5), min_size=1, max_size=3),
    d_out=st.integers(1, 3),
    act=st.sampled_from(range(len(_ACTS))),
    bias=st.booleans(),
    n=st.integers(1, 5),
    seed=st.integers(0, 2**16),
    impl=st.sampled_from(["structured", "vp"]),
)
def test_ntk_is_symmetric_psd(widths, d_out, act, bias, n, seed, impl):
    torch.manual_seed(seed)
    dims = [3, *widths]
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:], strict=True):
        layers += [nn.Linear(a, b, bias=bias), _ACTS[act]()]
    model = nn.Sequential(*layers, nn.Linear(dims[-1], d_out, bias=bias)).double()
    x = torch.randn(n, 3, dtype=torch.float64)
    k = empirical_ntk(model, x, lr=0.7, implementation=impl)
    mat = k.permute(0, 2, 1, 3).reshape(n * d_out, n * d_out)
    torch.testing.assert_close(mat, mat.T, rtol=RTOL, atol=ATOL)
    eig = torch.linalg.eigvalsh(mat)
    assert eig.min() >= -1e-10 * max(1.0, eig.abs().max().item())


def test_float32_agrees(gen):
    model = models.mlp(4, [16, 16], 3, activation="gelu", seed=0)
    x = torch.randn(6, 4, generator=gen)
    ref = empirical_ntk(model, x, implementation="jacobian")
    for impl in ("vp", "structured"):
        torch.testing.assert_close(empirical_ntk(model, x, implementation=impl), ref,
                                   rtol=TOL[torch.float32][0], atol=1e-5)


@pytest.mark.parametrize("kwargs,match", [
    ({"implementation": "exact"}, r"`implementation` must be one of \['auto', 'jacobian', 'vp', 'structured'\], got 'exact'"),
    ({"lr": 0.0}, r"`lr` must be a finite number > 0 .*got 0.0"),
    ({"lr": float("nan")}, r"`lr` must be a finite number > 0"),
    ({"max_memory_gb": -1}, r"`max_memory_gb` must be a finite number of GiB > 0, got -1"),
    ({"x2": torch.zeros(2, 5, dtype=torch.float64)}, r"`x2` rows have shape \(5,\), `x1` rows \(4,\)"),
    ({"x2": torch.zeros(2, 4, dtype=torch.float64), "diagonal_inputs": True},
     r"`diagonal_inputs`=True .* `x2` must have 3 rows, got 2"),
    ({"params": {"0.weight": torch.zeros(6, 4)}}, r"`params` must have the model's parameter names"),
], ids=["impl", "lr", "lr-nan", "memory", "x2-shape", "diagonal-len", "params"])
def test_bad_input(kwargs, match):
    fm = F.functional(MODELS["seq-bias"]())
    x1 = kwargs.pop("x1", torch.zeros(3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=match):
        empirical_ntk(fm, x1, **kwargs)


def test_bad_inputs_for_the_model():
    fm = F.functional(MODELS["seq-bias"]())
    with pytest.raises(ValueError, match=r"cannot take `x1` rows of shape \(7,\)"):
        empirical_ntk(fm, torch.zeros(3, 7, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"`x1` has dtype torch.float32, .*torch.float64"):
        empirical_ntk(fm, torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"`x1` must be a tensor \[batch, ...\] with batch >= 1"):
        empirical_ntk(fm, torch.zeros(0, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"`implementation`='structured' needs .* got Residual"):
        empirical_ntk(Residual().double(), torch.zeros(3, 4, dtype=torch.float64),
                      implementation="structured")


def test_frozen_parameter_is_not_structured():
    model = _seq(True)
    model[0].bias.requires_grad_(False)
    fm = F.functional(model)
    assert not supports_structured(fm)
    x = torch.randn(3, 4, dtype=torch.float64)
    torch.testing.assert_close(empirical_ntk(fm, x), brute_ntk(fm, x, x), rtol=RTOL, atol=ATOL)


@pytest.mark.slow
@pytest.mark.parametrize("param", ["standard", "ntk", "mup"], ids=["standard", "ntk", "mup"])
def test_implementations_agree_at_width_256(param, gen):
    """MNIST-sized inputs, width 256, float64: structured and vp (with chunking) = jacobian."""
    model = models.mlp(784, [256, 256], 10, activation="gelu", parameterization=param, seed=0,
                       dtype=torch.float64)
    x1 = torch.rand(12, 784, generator=gen, dtype=torch.float64)
    x2 = torch.rand(9, 784, generator=gen, dtype=torch.float64)
    ref = empirical_ntk(model, x1, x2, implementation="jacobian", lr=0.1)
    for impl, budget in (("structured", 4), ("vp", 0.05)):
        torch.testing.assert_close(
            empirical_ntk(model, x1, x2, implementation=impl, lr=0.1, max_memory_gb=budget),
            ref, rtol=RTOL, atol=ATOL)
