"""Op conformance: every layer type the supported architectures use, derivatives of order 1-4
along a random parameter direction, the library's path against independent references.

Library path: ``weakcorr.functional.directional_derivative`` (nested ``torch.func.jvp`` inside
``weakcorr._ops.exact_ops``, what every correlation uses).  References:

* order 1: reverse mode, J v with J from ``torch.autograd.functional.jacobian``;
* order 2: forward-over-reverse, ``torch.func.jvp`` of ``torch.func.jacrev``, contracted with v;
* orders 3, 4: float64 central differences of t ↦ f(θ + t v)(x) (5-point stencils), twice
  Richardson-extrapolated (error O(h^6)), at the step (of 0.1 ... 0.005) where successive
  extrapolations agree best; for piecewise-smooth layers (ReLU, ELU, max pooling), where a
  stencil may straddle a kink, nested reverse mode (``torch.autograd.grad`` k times) instead.

Each case is a tiny float64 model ``pre → LAYER → post`` whose parameters sit before, in and
after the layer, so every derivative goes through it.  The decompositions of ``_ops`` must also
give PyTorch's forward values.  A native-kernel check documents the upstream bug the
decompositions work around (jvp-of-jvp through native layer_norm, torch 2.13).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as Fn
from torch import Tensor, nn
from torch.autograd.functional import jacobian
from torch.func import jacrev, jvp

import weakcorr as wc
import weakcorr.functional as F
from weakcorr import _ops

DT = torch.float64
B = 2


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class Reshape(nn.Module):
    def __init__(self, *shape: int) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], *self.shape)


class SeqMean(nn.Module):
    """[B, L, d] → [B, d] (first tensor of a tuple output, e.g. nn.MultiheadAttention's)."""

    def forward(self, x: Tensor | tuple[Tensor, ...]) -> Tensor:
        return (x[0] if isinstance(x, tuple) else x).mean(1)


class SelfAttention(nn.Module):
    def __init__(self, mha: nn.MultiheadAttention, need_weights: bool) -> None:
        super().__init__()
        self.mha, self.need_weights = mha, need_weights

    def forward(self, x: Tensor) -> Tensor:
        return self.mha(x, x, x, need_weights=self.need_weights)[0]


class Sdpa(nn.Module):
    """Heads from the feature axis, then F.scaled_dot_product_attention with options."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__()
        self.kwargs = kwargs

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = (t.unflatten(-1, (2, -1)).transpose(1, 2) for t in x.chunk(3, -1))
        mask = self.kwargs.get("attn_mask")
        kw = dict(self.kwargs)
        if isinstance(mask, str):
            L = x.shape[1]
            kw["attn_mask"] = (torch.ones(L, L, dtype=torch.bool).triu(1).logical_not()
                               if mask == "bool" else
                               torch.linspace(-1, 1, L * L, dtype=x.dtype).reshape(L, L))
        return Fn.scaled_dot_product_attention(q, k, v, **kw).transpose(1, 2).flatten(-2)


def _bn(cls: type[nn.Module], c: int) -> nn.Module:
    bn = cls(c, dtype=DT)
    g = _gen(7)
    bn.running_mean.copy_(torch.randn(c, generator=g, dtype=DT))
    bn.running_var.copy_(torch.rand(c, generator=g, dtype=DT) + 0.5)
    return bn.eval()


def _vec(layer: nn.Module, d_in: int = 3, k: int = 4) -> tuple[nn.Module, Tensor]:
    return nn.Sequential(nn.Linear(d_in, k), layer, nn.Linear(k, 2)), torch.randn(B, d_in)


def _img(layer: nn.Module, c: int = 2, side: int = 4) -> tuple[nn.Module, Tensor]:
    return (nn.Sequential(nn.Conv2d(1, c, 1), layer, nn.Flatten(), nn.LazyLinear(2)),
            torch.randn(B, 1, side, side))


def _seq(layer: nn.Module, d: int = 4, L: int = 3, d_pre: int | None = None):
    d_pre = d if d_pre is None else d_pre
    return (nn.Sequential(nn.Linear(3, d_pre), layer, SeqMean(), nn.LazyLinear(2)),
            torch.randn(B, L, 3))


def _mha(need_weights: bool, train: bool) -> nn.Module:
    m = SelfAttention(nn.MultiheadAttention(4, 2, batch_first=True), need_weights)
    return m.train(train)


def _encoder(norm_first: bool) -> nn.Module:
    return nn.TransformerEncoderLayer(4, 2, 8, dropout=0.0, activation="gelu", batch_first=True,
                                      norm_first=norm_first).eval()


CASES: dict[str, Callable[[], tuple[nn.Module, Tensor]]] = {
    "tanh": lambda: _vec(nn.Tanh()),
    "sigmoid": lambda: _vec(nn.Sigmoid()),
    "gelu": lambda: _vec(nn.GELU()),
    "gelu_tanh": lambda: _vec(nn.GELU("tanh")),
    "silu": lambda: _vec(nn.SiLU()),
    "softplus": lambda: _vec(nn.Softplus()),
    "elu": lambda: _vec(nn.ELU()),
    "mish": lambda: _vec(nn.Mish()),
    "relu": lambda: _vec(nn.ReLU()),
    "softmax": lambda: _vec(nn.Softmax(-1)),
    "log_softmax": lambda: _vec(nn.LogSoftmax(-1)),
    "log_sigmoid": lambda: _vec(nn.LogSigmoid()),
    "dropout_eval": lambda: _vec(nn.Sequential(nn.Tanh(), nn.Dropout(0.5).eval())),
    "layer_norm": lambda: _vec(nn.LayerNorm(4)),
    "layer_norm_no_affine": lambda: _vec(nn.LayerNorm(4, elementwise_affine=False)),
    "layer_norm_2d_shape": lambda: _vec(nn.Sequential(Reshape(2, 2), nn.LayerNorm([2, 2]),
                                                      Reshape(4))),
    "rms_norm": lambda: _vec(nn.RMSNorm(4)),
    "batch_norm_1d_eval": lambda: _vec(_bn(nn.BatchNorm1d, 4)),
    "conv1d": lambda: (nn.Sequential(nn.Linear(3, 4), Reshape(1, 4), nn.Conv1d(1, 2, 2),
                                     nn.Tanh(), nn.Flatten(), nn.Linear(6, 2)),
                       torch.randn(B, 3)),
    "conv2d": lambda: _img(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.Tanh())),
    "max_pool2d": lambda: _img(nn.Sequential(nn.Tanh(), nn.MaxPool2d(2))),
    "avg_pool2d": lambda: _img(nn.Sequential(nn.Tanh(), nn.AvgPool2d(2))),
    "adaptive_avg_pool2d": lambda: _img(nn.Sequential(nn.Tanh(), nn.AdaptiveAvgPool2d(1))),
    "group_norm": lambda: _img(nn.GroupNorm(2, 4), c=4),
    "group_norm_1": lambda: _img(nn.GroupNorm(1, 2)),
    "batch_norm_2d_eval": lambda: _img(_bn(nn.BatchNorm2d, 2)),
    "instance_norm_2d": lambda: _img(nn.InstanceNorm2d(2, affine=True)),
    "embedding": lambda: (nn.Sequential(nn.Embedding(5, 4), nn.Tanh(), SeqMean(), nn.Linear(4, 2)),
                          torch.randint(0, 5, (B, 3), generator=_gen(1))),
    "mha_weights_eval": lambda: _seq(_mha(True, False)),
    "mha_sdpa_eval": lambda: _seq(_mha(False, False)),
    "mha_sdpa_train": lambda: _seq(_mha(False, True)),
    "sdpa": lambda: _seq(Sdpa(), d_pre=12),
    "sdpa_causal": lambda: _seq(Sdpa(is_causal=True), d_pre=12),
    "sdpa_bool_mask": lambda: _seq(Sdpa(attn_mask="bool"), d_pre=12),
    "sdpa_float_mask_scale": lambda: _seq(Sdpa(attn_mask="float", scale=0.7), d_pre=12),
    "encoder_layer_post_norm": lambda: _seq(_encoder(False)),
    "encoder_layer_pre_norm": lambda: _seq(_encoder(True)),
    "encoder_layer_relu": lambda: _seq(nn.TransformerEncoderLayer(
        4, 2, 8, dropout=0.0, batch_first=True).eval()),
}
PIECEWISE = {"relu", "elu", "max_pool2d", "encoder_layer_relu"}


def _build(name: str) -> tuple[wc.functional.FunctionalModel, Tensor]:
    torch.manual_seed(0)
    model, x = CASES[name]()
    model = model.to(DT)
    x = x.to(DT) if x.is_floating_point() else x
    with torch.no_grad():
        model(x)  # materialise lazy layers
    return wc.functional(model), x


def _direction(fm) -> dict[str, Tensor]:
    return F.random_unit(fm.params, generator=_gen(2))


def _richardson(g: Callable[[float], Tensor], order: int, h: float) -> Tensor:
    """d^order/dt^order g(0) by 5-point central differences, two Richardson levels."""

    def stencil(s: float) -> Tensor:
        if order == 3:
            return (g(2 * s) - 2 * g(s) + 2 * g(-s) - g(-2 * s)) / (2 * s**3)
        return (g(2 * s) - 4 * g(s) + 6 * g(0.0) - 4 * g(-s) + g(-2 * s)) / s**4

    d = [stencil(h / 2**k) for k in range(3)]
    r1 = [(4 * d[k + 1] - d[k]) / 3 for k in range(2)]
    return (16 * r1[1] - r1[0]) / 15


def _best_richardson(g: Callable[[float], Tensor], order: int) -> Tensor:
    steps = (0.1, 0.05, 0.02, 0.01, 0.005)
    est = [_richardson(g, order, h) for h in steps]
    gaps = [float((est[k] - est[k + 1]).abs().max()) for k in range(len(steps) - 1)]
    k = min(range(len(gaps)), key=gaps.__getitem__)
    return est[k + 1]


def _nested_reverse(fm, x: Tensor, v: dict[str, Tensor], order: int) -> Tensor:
    theta0, vf = F.flatten(fm.params), F.flatten(v)
    out = torch.empty_like(fm(fm.params, x))
    for b in range(out.shape[0]):
        for i in range(out.shape[1]):
            theta = theta0.clone().requires_grad_(True)
            s = fm(F.unflatten(theta, fm.params), x[b : b + 1])[0, i]
            for k in range(order):
                (g,) = torch.autograd.grad(s, theta, create_graph=k < order - 1,
                                           allow_unused=True)
                s = torch.zeros((), dtype=DT) if g is None else g @ vf
                if not s.requires_grad:
                    break
            out[b, i] = s.detach() if k == order - 1 else 0.0
    return out


def _reference(fm, x: Tensor, v: dict[str, Tensor], order: int, name: str = "") -> Tensor:
    theta, vf = F.flatten(fm.params), F.flatten(v)

    def f_flat(vec: Tensor) -> Tensor:
        return fm(F.unflatten(vec, fm.params), x)

    if order == 1:
        return jacobian(f_flat, theta) @ vf
    if order == 2:
        return jvp(jacrev(f_flat), (theta,), (vf,))[1] @ vf
    if name in PIECEWISE:
        return _nested_reverse(fm, x, v, order)
    with torch.no_grad():
        return _best_richardson(lambda t: f_flat(theta + t * vf), order)


# orders 1-2 agree to rounding; 3-4 by finite differences to <= 1e-8 (order 3) and 6e-6 (order 4)
# of the largest entry or of 1e-2 (measured), nested reverse to rounding
RTOL = {1: 1e-11, 2: 1e-10, 3: 1e-5, 4: 5e-5}


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("name", list(CASES))
def test_derivatives_match_reference(name, order):
    fm, x = _build(name)
    v = _direction(fm)
    got = F.directional_derivative(fm, fm.params, x, [v] * order)
    ref = _reference(fm, x, v, order, name)
    scale = float(ref.abs().max())
    err = float((got - ref).abs().max())
    assert err <= RTOL[order] * max(scale, 1e-2), f"{name} order {order}: {err:.3g} vs {scale:.3g}"


@pytest.mark.parametrize("name", ["layer_norm", "instance_norm_2d"])
def test_native_kernels_drift_and_the_decomposition_fixes_it(name):
    """The upstream bug (torch 2.13): native jvp-of-jvp through layer_norm / instance_norm
    disagrees with forward-over-reverse; the same model inside exact_ops agrees."""
    fm, x = _build(name)
    v = _direction(fm)
    ref = _reference(fm, x, v, 2)
    fm.exact_ops = False
    native = F.directional_derivative(fm, fm.params, x, [v, v])
    assert float((native - ref).abs().max()) > 1e-3 * float(ref.abs().max())
    fm.exact_ops = True
    torch.testing.assert_close(F.directional_derivative(fm, fm.params, x, [v, v]), ref,
                               rtol=0, atol=1e-10 * float(ref.abs().max()))


NATIVE = {
    "layer_norm": lambda x, w, b: (Fn.layer_norm(x, (4,), w, b, 1e-5),
                                   _ops.layer_norm(x, (4,), w, b, 1e-5)),
    "rms_norm": lambda x, w, b: (Fn.rms_norm(x, (4,), w), _ops.rms_norm(x, (4,), w)),
    "group_norm": lambda x, w, b: (Fn.group_norm(x.reshape(3, 4, 2, 1), 2, w, b),
                                   _ops.group_norm(x.reshape(3, 4, 2, 1), 2, w, b)),
    "instance_norm": lambda x, w, b: (Fn.instance_norm(x.reshape(3, 4, 2), weight=w, bias=b),
                                      _ops.instance_norm(x.reshape(3, 4, 2), weight=w, bias=b)),
    "logsigmoid": lambda x, w, b: (Fn.logsigmoid(x * 10), _ops.logsigmoid(x * 10)),
    "batch_norm_eval": lambda x, w, b: (Fn.batch_norm(x.reshape(6, 4), b.abs(), w.abs(), w, b),
                                        _ops.batch_norm(x.reshape(6, 4), b.abs(), w.abs(), w, b)),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", list(NATIVE))
def test_decompositions_give_pytorchs_forward_values(name, dtype):
    g = _gen(4)
    x = torch.randn(6, 4, generator=g, dtype=dtype) * 3 + 1
    w, b = torch.randn(4, generator=g, dtype=dtype), torch.randn(4, generator=g, dtype=dtype)
    native, ours = NATIVE[name](x, w, b)
    tol = 1e-13 if dtype == torch.float64 else 2e-6
    torch.testing.assert_close(ours, native, rtol=tol, atol=tol)


@pytest.mark.parametrize("kwargs", [{}, {"is_causal": True}, {"scale": 0.3}], ids=str)
def test_sdpa_decomposition_matches_pytorch(kwargs):
    g = _gen(5)
    q, k, v = (torch.randn(2, 2, 3, 4, generator=g, dtype=DT) for _ in range(3))
    torch.testing.assert_close(_ops.scaled_dot_product_attention(q, k, v, **kwargs),
                               Fn.scaled_dot_product_attention(q, k, v, **kwargs),
                               rtol=1e-13, atol=1e-13)


def test_exact_ops_restores_fastpath_and_refuses_attention_dropout():
    before = torch.backends.mha.get_fastpath_enabled()
    with _ops.exact_ops():
        assert not torch.backends.mha.get_fastpath_enabled()
        q = torch.zeros(1, 2, 2)
        with pytest.raises(ValueError, match="`dropout_p`=0.1.*model.eval"):
            Fn.scaled_dot_product_attention(q, q, q, dropout_p=0.1)
    assert torch.backends.mha.get_fastpath_enabled() == before
