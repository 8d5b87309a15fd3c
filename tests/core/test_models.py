"""weakcorr.models: initialisations against nn.Linear and their width scaling."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from weakcorr import models


def test_standard_matches_nn_linear_exactly():
    net = models.mlp(7, [5, 6], 3, activation="relu", seed=11)
    torch.manual_seed(11)
    ref = [nn.Linear(7, 5), nn.Linear(5, 6), nn.Linear(6, 3)]
    for lin, r in zip(net.linears, ref, strict=True):
        assert torch.equal(lin.weight, r.weight) and torch.equal(lin.bias, r.bias)
    x = torch.randn(4, 7)
    want = ref[2](torch.relu(ref[1](torch.relu(ref[0](x)))))
    torch.testing.assert_close(net(x), want)


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


def _output_var(param, width, n_seeds=24, bias=True):
    x = torch.randn(16, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    outs = [models.mlp(10, [width, width], 1, activation="tanh", parameterization=param,
                       bias=bias, seed=s, dtype=torch.float64)(x) for s in range(n_seeds)]
    return torch.stack(outs).var().item()


def test_ntk_output_variance_is_order_one_in_width():
    v16, v512 = _output_var("ntk", 16), _output_var("ntk", 512)
    assert 0.5 < v512 / v16 < 2.0, (v16, v512)


def test_mup_output_shrinks_like_inverse_width_at_init():
    # Without biases: the O(1) output bias would floor the variance.
    v32, v512 = _output_var("mup", 32, bias=False), _output_var("mup", 512, bias=False)
    slope = math.log(v512 / v32) / math.log(512 / 32)
    assert -1.3 < slope < -0.7, slope  # output variance ∝ 1/n


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


def test_mup_update_is_order_one_in_width():
    """μP: one SGD step at a fixed lr moves the output by Θ(1) at every width (coord check);
    under NTK parameterization the same lr moves it by Θ(1) too, but the feature update vanishes."""
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
    (dict(activation="swish"), "`activation` must be one of"),
    (dict(activation="relu", parameterization="xavier"), "`parameterization` must be one of"),
    (dict(activation="relu", hidden=[4, 0]), r"`hidden\[1\]` must be a positive integer"),
    (dict(activation="relu", d_in=-1), "`d_in` must be a positive integer"),
    (dict(activation="relu", sigma_w=0.0), "`sigma_w` must be a finite positive"),
    (dict(activation="relu", seed=1, generator=torch.Generator()), "at most one of"),
], ids=["activation", "param", "hidden", "d_in", "sigma_w", "seed+gen"])
def test_bad_input(kwargs, match):
    args = dict(d_in=3, hidden=[4], d_out=2) | kwargs
    with pytest.raises(ValueError, match=match):
        models.mlp(args.pop("d_in"), args.pop("hidden"), args.pop("d_out"), **args)
