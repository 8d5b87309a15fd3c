"""weakcorr.models: initialisations against nn.Linear and their width scaling."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from weakcorr import models


def _nn_linear_stack(widths, dtype):
    return [nn.Linear(i, o, dtype=dtype) for i, o in zip(widths[:-1], widths[1:], strict=True)]


@pytest.mark.parametrize("source", ["seed", "generator", "global"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_standard_matches_nn_linear_exactly(source, dtype):
    """`standard` = nn.Linear's default init, draw for draw, from each random source: drawn in
    float32 (PyTorch's default dtype) and cast, so float64 is the float32 network exactly."""
    if source == "seed":
        net = models.mlp(7, [5, 6], 3, activation="relu", seed=11, dtype=dtype)
    elif source == "generator":
        net = models.mlp(7, [5, 6], 3, activation="relu", dtype=dtype,
                         generator=torch.Generator().manual_seed(11))
    else:
        torch.manual_seed(11)
        net = models.mlp(7, [5, 6], 3, activation="relu", dtype=dtype)
    torch.manual_seed(11)
    ref = [lin.to(dtype) for lin in _nn_linear_stack([7, 5, 6, 3], torch.float32)]
    for lin, r in zip(net.linears, ref, strict=True):
        assert lin.weight_multiplier == 1.0 and lin.bias_multiplier == 1.0
        assert torch.equal(lin.weight, r.weight) and torch.equal(lin.bias, r.bias)
    x = torch.randn(4, 7, dtype=dtype)
    want = ref[2](torch.relu(ref[1](torch.relu(ref[0](x)))))
    torch.testing.assert_close(net(x), want, rtol=0, atol=0)


@pytest.mark.parametrize("param", ["standard", "ntk", "mup"])
def test_one_seed_is_one_network_in_every_dtype(param):
    """float64 differs from float32 by rounding only (run-by-run precision comparisons)."""
    a = models.mlp(7, [5, 6], 3, activation="gelu", parameterization=param, seed=3)
    b = models.mlp(7, [5, 6], 3, activation="gelu", parameterization=param, seed=3,
                   dtype=torch.float64)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert q.dtype == torch.float64
        torch.testing.assert_close(p.double(), q, rtol=1e-7, atol=0)


def test_standard_seed_restores_global_rng():
    torch.manual_seed(0)
    a = torch.rand(3)
    torch.manual_seed(0)
    models.mlp(3, 4, 2, activation="tanh", seed=5)
    torch.testing.assert_close(torch.rand(3), a)


@pytest.mark.parametrize("param", ["standard", "ntk", "mup"])
def test_deterministic_given_seed_or_generator(param):
    a = models.mlp(4, [8], 2, activation="erf", parameterization=param, seed=3)
    b = models.mlp(4, [8], 2, activation="erf", parameterization=param, seed=3)
    c = models.mlp(4, [8], 2, activation="erf", parameterization=param, seed=4)
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    d = models.mlp(4, [8], 2, activation="erf", parameterization=param, generator=g1)
    e = models.mlp(4, [8], 2, activation="erf", parameterization=param, generator=g2)
    for pa, pb, pc, pd, pe in zip(a.parameters(), b.parameters(), c.parameters(),
                                  d.parameters(), e.parameters(), strict=True):
        assert torch.equal(pa, pb) and not torch.equal(pa, pc) and torch.equal(pd, pe)


@pytest.mark.parametrize("name,ref", [
    ("relu", torch.relu), ("erf", torch.erf), ("sigmoid", torch.sigmoid), ("tanh", torch.tanh),
    ("gelu", lambda z: nn.functional.gelu(z, approximate="none")),
], ids=lambda v: v if isinstance(v, str) else "")
def test_activations_match_torch(name, ref):
    net = models.mlp(3, 4, 2, activation=name, seed=0, dtype=torch.float64)
    z = torch.linspace(-4, 4, 101, dtype=torch.float64)
    torch.testing.assert_close(net.act(z), ref(z), rtol=1e-14, atol=1e-15)


def test_ntk_formula_and_multipliers():
    net = models.mlp(5, 6, 2, activation="relu", parameterization="ntk", sigma_w=1.3,
                     sigma_b=0.1, seed=0, dtype=torch.float64)
    x = torch.randn(3, 5, dtype=torch.float64)
    l0, l1 = net.linears
    h = torch.relu(1.3 / math.sqrt(5) * x @ l0.weight.T + 0.1 * l0.bias)
    torch.testing.assert_close(net(x), 1.3 / math.sqrt(6) * h @ l1.weight.T + 0.1 * l1.bias)


def test_mup_formula_and_multipliers():
    """The forward pass is the docstring's z_l = a_l W_l h + c_l b_l with μP's a_l, c_l."""
    n0, n1, n2, n3 = 5, 6, 7, 2
    net = models.mlp(n0, [n1, n2], n3, activation="tanh", parameterization="mup", sigma_w=1.3,
                     sigma_b=0.2, seed=0, dtype=torch.float64)
    want_a = [math.sqrt(n1), 1.0, 1.0 / math.sqrt(n2)]
    want_c = [math.sqrt(n1), math.sqrt(n2), 1.0]
    assert [lin.weight_multiplier for lin in net.linears] == pytest.approx(want_a, rel=1e-15)
    assert [lin.bias_multiplier for lin in net.linears] == pytest.approx(want_c, rel=1e-15)
    l0, l1, l2 = net.linears
    x = torch.randn(3, n0, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    h = torch.tanh(math.sqrt(n1) * x @ l0.weight.T + math.sqrt(n1) * l0.bias)
    h = torch.tanh(h @ l1.weight.T + math.sqrt(n2) * l1.bias)
    torch.testing.assert_close(net(x), h @ l2.weight.T / math.sqrt(n2) + l2.bias)


@pytest.mark.parametrize("param", ["ntk", "mup"])
def test_init_std_matches_docstring(param):
    """Stored parameter stds (n_0 = 40, n_1 = n_2 = 64) against the formulas, to sampling error."""
    sw, sb = 1.5, 0.5
    net = models.mlp(40, [64, 64], 30, activation="relu", parameterization=param, sigma_w=sw,
                     sigma_b=sb, seed=0, dtype=torch.float64)
    if param == "ntk":
        w_std, b_std = [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]
    else:
        w_std = [sw / math.sqrt(40 * 64), sw / math.sqrt(64), sw / math.sqrt(64)]
        b_std = [sb / 8.0, sb / 8.0, sb]
    for lin, ws, bs in zip(net.linears, w_std, b_std, strict=True):
        assert lin.weight.std().item() == pytest.approx(ws, rel=0.06)
        assert abs(lin.weight.mean().item()) < 4 * ws / math.sqrt(lin.weight.numel())
        assert lin.bias.std().item() == pytest.approx(bs, rel=0.45)  # only 30..64 draws


def _x(n=16, d=10):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def _output_var(param, width, n_seeds=24, bias=True):
    x = _x()
    outs = [models.mlp(10, [width, width], 1, activation="tanh", parameterization=param,
                       bias=bias, seed=s, dtype=torch.float64)(x) for s in range(n_seeds)]
    return torch.stack(outs).var().item()


def _slope(param, widths, **kw):
    v = [_output_var(param, n, **kw) for n in widths]
    return math.log(v[-1] / v[0]) / math.log(widths[-1] / widths[0]), v


def test_ntk_output_variance_is_order_one_in_width():
    v8, v64 = _output_var("ntk", 8, n_seeds=48), _output_var("ntk", 64, n_seeds=48)
    assert 0.5 < v64 / v8 < 2.0, (v8, v64)


@pytest.mark.slow
def test_ntk_output_variance_is_order_one_in_width_wide():
    v16, v512 = _output_var("ntk", 16), _output_var("ntk", 512)
    assert 0.5 < v512 / v16 < 2.0, (v16, v512)


def test_mup_output_shrinks_like_inverse_sqrt_width_at_init():
    # Without biases: the O(1) output bias would floor the variance. Var ∝ 1/n ⇔ std ∝ n^{-1/2}.
    slope, v = _slope("mup", [8, 64], n_seeds=48, bias=False)
    assert -1.3 < slope < -0.7, (slope, v)


@pytest.mark.slow
def test_mup_output_shrinks_like_inverse_sqrt_width_at_init_wide():
    slope, v = _slope("mup", [32, 512], bias=False)
    assert -1.15 < slope < -0.85, (slope, v)


def _hidden_preact_rms(width, n_seeds=8):
    """RMS of z_1 and z_2 (the two hidden pre-activations) of a μP net, over seeds."""
    x, out = _x(), []
    for s in range(n_seeds):
        net = models.mlp(10, [width, width], 1, activation="tanh", parameterization="mup",
                         seed=s, dtype=torch.float64)
        z1 = net.linears[0](x)
        z2 = net.linears[1](net.act(z1))
        out.append(torch.stack([z1.pow(2).mean(), z2.pow(2).mean()]))
    return torch.stack(out).mean(0).sqrt()


@pytest.mark.parametrize("widths", [
    pytest.param((8, 64), id="8-64"),
    pytest.param((32, 1024), id="32-1024", marks=pytest.mark.slow),
])
def test_mup_hidden_preactivations_are_order_one(widths):
    narrow, wide = (_hidden_preact_rms(n) for n in widths)
    assert ((narrow > 0.3) & (narrow < 3)).all(), narrow
    assert ((wide / narrow > 0.7) & (wide / narrow < 1.4)).all(), (narrow, wide)


def _output_change_after_one_step(param, width, lr):
    net = models.mlp(10, [width, width], 1, activation="tanh", parameterization=param, seed=0,
                     dtype=torch.float64)
    x = torch.randn(8, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    before = net(x).detach()
    loss = ((net(x) - 1.0) ** 2).mean()
    loss.backward()
    with torch.no_grad():
        for p in net.parameters():
            p -= lr * p.grad
    return (net(x).detach() - before).abs().mean().item()


@pytest.mark.slow
def test_mup_update_is_order_one_in_width():
    """μP: one SGD step at a fixed lr moves the output by Θ(1) at every width (coord check)."""
    d64, d1024 = (_output_change_after_one_step("mup", n, 0.1) for n in (64, 1024))
    assert 0.5 < d1024 / d64 < 2.0, (d64, d1024)


def test_bias_false_and_output_scale_and_dtype():
    net = models.mlp(3, [4, 4], 2, activation="gelu", bias=False, seed=0, dtype=torch.float64)
    assert all(lin.bias is None for lin in net.linears)
    assert {n for n, _ in net.named_parameters()} == {f"linears.{i}.weight" for i in range(3)}
    scaled = models.mlp(3, [4, 4], 2, activation="gelu", bias=False, seed=0,
                        dtype=torch.float64, output_scale=7.0)
    x = torch.randn(2, 3, dtype=torch.float64)
    torch.testing.assert_close(scaled(x), 7.0 * net(x))
    assert net(x).dtype == torch.float64 and net.widths == [3, 4, 4, 2]


@pytest.mark.parametrize("kwargs,match", [
    (dict(activation="swish"), r"`activation` must be one of \['relu', 'gelu', 'erf', 'sigmoid'"),
    (dict(activation="relu", parameterization="xavier"),
     r"`parameterization` must be one of \['standard', 'ntk', 'mup'\], got 'xavier'"),
    (dict(activation="relu", hidden=[4, 0]), r"`hidden\[1\]` must be a positive integer, got 0"),
    (dict(activation="relu", hidden=[]), "`hidden` must name at least one hidden layer"),
    (dict(activation="relu", hidden="64"), "`hidden` must be an int or a sequence of ints"),
    (dict(activation="relu", hidden=2.5), "`hidden` must be an int or a sequence of ints"),
    (dict(activation="relu", d_in=-1), "`d_in` must be a positive integer, got -1"),
    (dict(activation="relu", d_out=True), "`d_out` must be a positive integer, got True"),
    (dict(activation="relu", sigma_w=0.0), "`sigma_w` must be a finite positive number, got 0.0"),
    (dict(activation="relu", sigma_b=-0.1), "`sigma_b` must be a finite non-negative number"),
    (dict(activation="relu", output_scale=float("nan")), "`output_scale` must be a finite positive"),
    (dict(activation="relu", dtype=torch.int64), "`dtype` must be a floating-point"),
    (dict(activation="relu", seed=1.5), "`seed` must be an integer or None, got 1.5"),
    (dict(activation="relu", seed=1, generator=torch.Generator()), "at most one of"),
], ids=["activation", "param", "hidden0", "hidden-empty", "hidden-str", "hidden-float", "d_in",
        "d_out-bool", "sigma_w", "sigma_b", "output_scale", "dtype", "seed", "seed+gen"])
def test_bad_input(kwargs, match):
    args = dict(d_in=3, hidden=[4], d_out=2) | kwargs
    with pytest.raises(ValueError, match=match):
        models.mlp(args.pop("d_in"), args.pop("hidden"), args.pop("d_out"), **args)


def test_sigma_b_zero_allowed_and_mlp_class_checks_activation():
    net = models.mlp(3, 4, 2, activation="relu", parameterization="ntk", sigma_b=0.0, seed=0)
    x = torch.randn(2, 3)
    no_bias = models.mlp(3, 4, 2, activation="relu", parameterization="ntk", seed=0)
    assert torch.equal(net.linears[0].weight, no_bias.linears[0].weight)
    assert not torch.equal(net(x), no_bias(x))
    with pytest.raises(ValueError, match="`activation` must be one of"):
        models.MLP(list(net.linears), "softplus")


def test_repr_names_structure():
    text = repr(models.mlp(3, [4, 5], 2, activation="erf", parameterization="mup", seed=0))
    assert "widths=[3, 4, 5, 2], activation=erf, parameterization=mup" in text
    # μP: input layer a = √n_1 = 2, output layer a = 1/√n_2 = 1/√5.
    assert "weight_multiplier=2, bias_multiplier=2" in text
    assert "weight_multiplier=0.4472, bias_multiplier=1" in text
