"""weakcorr.correlations.by_group: per-group C^{0,1} and group-pair C^{0,2}.

References: the totals against empirical_ntk (structured path) and correlations.diagonal
(Taylor-mode / nested forward), and every group term against a brute-force float64
Hessian and Jacobian (torch.func.hessian / jacrev on the flattened parameters).
"""

from __future__ import annotations

import pytest
import torch
from torch.func import hessian, jacrev

from weakcorr import correlations
from weakcorr.functional import functional, unflatten
from weakcorr.models import mlp
from weakcorr.ntk import empirical_ntk

D = torch.float64


@pytest.fixture
def net_and_x():
    net = mlp(3, [6, 5], 2, activation="tanh", parameterization="ntk", seed=4, dtype=D)
    x = torch.randn(3, 3, dtype=D, generator=torch.Generator().manual_seed(5))
    return net, x


def test_totals(net_and_x):
    net, x = net_and_x
    r = correlations.by_group(net, x, lr=0.3)
    assert r.groups == ("linears.0", "linears.1", "linears.2")
    ntk = empirical_ntk(net, x, lr=0.3, diagonal_inputs=True).diagonal(dim1=-2, dim2=-1)
    torch.testing.assert_close(r.c01_total, ntk, rtol=1e-12, atol=0)
    c2 = correlations.diagonal(functional(net), x, d=2, lr=0.3)
    torch.testing.assert_close(r.c02_total, c2, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(r.c02, r.c02.transpose(0, 1), rtol=1e-12, atol=1e-15)


def test_group_terms_against_brute_force(net_and_x):
    net, x = net_and_x
    fm = functional(net)
    names = list(fm.params)
    flat = torch.cat([fm.params[k].flatten() for k in names])
    groups = {"weights": [n for n in names if n.endswith("weight")],
              "biases": [n for n in names if n.endswith("bias")]}
    r = correlations.by_group(fm, x, lr=0.7, groups=groups)
    sizes = [fm.params[k].numel() for k in names]
    owner = torch.cat([torch.full((s,), int(k.endswith("bias")), dtype=torch.long)
                       for k, s in zip(names, sizes, strict=True)])
    masks = [(owner == 0).to(D), (owner == 1).to(D)]
    for b in range(len(x)):
        f = lambda v, b=b: fm(unflatten(v, fm.params), x[b:b + 1])[0]  # noqa: E731
        jac = jacrev(f)(flat)                               # [d_y, N]
        hess = hessian(f)(flat)                             # [d_y, N, N]
        for i in range(2):
            g = jac[i]
            for a in range(2):
                assert float(r.c01[a, b, i]) == pytest.approx(0.7 * float((g * masks[a]) @ g),
                                                              rel=1e-11)
                for a2 in range(2):
                    ref = 0.5 * 0.7**2 * (g * masks[a]) @ hess[i] @ (g * masks[a2])
                    assert float(r.c02[a, a2, b, i]) == pytest.approx(float(ref), rel=1e-9, abs=1e-15)


def test_prefix_groups_and_errors(net_and_x):
    net, x = net_and_x
    r = correlations.by_group(net, x[:1], lr=1.0, groups=["linears.0", "linears.1", "linears.2"])
    assert r.members[0] == ("linears.0.weight", "linears.0.bias")
    with pytest.raises(ValueError, match="'linears.2.weight' is in 0 groups"):
        correlations.by_group(net, x, lr=1.0, groups=["linears.0", "linears.1"])
    with pytest.raises(ValueError, match="is in 2 groups"):
        correlations.by_group(net, x, lr=1.0, groups={"a": ["linears"], "b": ["linears.0"]})
    with pytest.raises(ValueError, match="`lr` must be a finite number > 0"):
        correlations.by_group(net, x, lr=0)


def test_summary(net_and_x):
    from weakcorr._per_layer import summary

    net, x = net_and_x
    r = correlations.by_group(net, x, lr=0.3)
    s = summary(r)
    assert sum(s["c01_share"].values()) == pytest.approx(1.0, rel=1e-12)
    within = [r.c02[a, a] for a in range(3)]
    mixed = r.c02.sum((0, 1)) - sum(within)
    assert s["c02_rms"]["mixed"] == pytest.approx(float(mixed.pow(2).mean().sqrt()), rel=1e-12)
    assert s["c02_rms"]["linears.1"] == pytest.approx(float(within[1].pow(2).mean().sqrt()), rel=1e-12)
    assert s["c02_rms"]["total"] == pytest.approx(float(r.c02_total.pow(2).mean().sqrt()), rel=1e-12)
