"""One MLP recogniser for every fast path: a table of modules that each fast path accepts or
refuses with the same reason, and the accepted chains checked against autodiff references."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import weakcorr.functional as F
from tests.conftest import TOL
from weakcorr import _mlp, _mlp_taylor, _ntk, _train, _vmap_train, models
from weakcorr import correlations as C
from weakcorr.ntk import empirical_ntk

RTOL, ATOL = TOL[torch.float64]
D64 = torch.float64


def _mlp64(**kw) -> nn.Module:
    kw.setdefault("activation", "gelu")
    return models.mlp(3, kw.pop("hidden", 4), 2, seed=0, dtype=D64, **kw)


class _TanhTwice(nn.Tanh):
    """A subclass of an activation module with another forward: not elementwise-by-type."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(2 * z)


def _shared_act() -> nn.Module:
    t = nn.Tanh()
    return nn.Sequential(nn.Linear(3, 4), t, nn.Linear(4, 4), t, nn.Linear(4, 2)).double()


def _tied() -> nn.Module:
    lin = nn.Linear(4, 4)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), lin, nn.Tanh(), lin, nn.Linear(4, 2)).double()


def _frozen() -> nn.Module:
    m = _mlp64()
    m.linears[0].bias.requires_grad_(False)
    return m


def _buffered() -> nn.Module:
    m = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    m.register_buffer("scale", torch.ones(1, dtype=D64))
    return m


def _extra_param() -> nn.Module:
    m = _mlp64()
    m.register_parameter("extra", nn.Parameter(torch.zeros(1, dtype=D64)))
    return m


def _scaled_in_sequential() -> nn.Module:
    lin = models.ScaledLinear(4, 2, weight_multiplier=0.5, bias_multiplier=2.0, dtype=D64)
    with torch.no_grad():
        lin.weight.normal_()
        lin.bias.normal_()
    return nn.Sequential(nn.Linear(3, 4).double(), nn.GELU(), lin)


TRAINING_ONLY_MLP = "the hand-written training passes take weakcorr MLPs"

# name: (builder, recognised?, reason fragment when refused, hand-written training passes?)
TABLE = {
    "mlp-gelu": (_mlp64, True, None, True),
    "mlp-tanh-ntk-scaled-2-hidden": (
        lambda: _mlp64(activation="tanh", parameterization="ntk", output_scale=2.0,
                       hidden=[4, 5]), True, None, True),
    "mlp-relu-mup-nobias": (
        lambda: _mlp64(activation="relu", parameterization="mup", bias=False), True, None, True),
    "sequential": (lambda: nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double(),
                   True, None, False),
    "nested-hardsigmoid": (
        lambda: nn.Sequential(nn.Sequential(nn.Linear(3, 4), nn.Hardsigmoid()),
                              nn.Linear(4, 2)).double(), True, None, False),
    "relu6-identity-softsign": (
        lambda: nn.Sequential(nn.Linear(3, 4), nn.ReLU6(), nn.Identity(), nn.Linear(4, 4),
                              nn.Softsign(), nn.Linear(4, 2)).double(), True, None, False),
    "shared-activation": (_shared_act, True, None, False),
    "scaled-linear-in-sequential": (_scaled_in_sequential, True, None, False),
    "single-linear": (lambda: nn.Linear(3, 2).double(), True, None, False),
    "tied-linear": (_tied, False, "used again (tied weights)", False),
    "frozen": (_frozen, False, "frozen (requires_grad=False)", False),
    "buffer": (_buffered, False, "buffers ['scale']", False),
    "extra-parameter": (_extra_param, False, "['extra'] are not weights or biases", False),
    "bilinear": (lambda: nn.Bilinear(3, 3, 2).double(), False, "the module is a Bilinear", False),
    "softmax": (lambda: nn.Sequential(nn.Linear(3, 2), nn.Softmax(-1)).double(), False,
                "layer '1' is a Softmax", False),
    "activation-subclass": (
        lambda: nn.Sequential(nn.Linear(3, 4), _TanhTwice(), nn.Linear(4, 2)).double(), False,
        "layer '1' is a _TanhTwice", False),
}
IDS = list(TABLE)


@pytest.mark.parametrize("name", IDS)
def test_every_fast_path_accepts_or_refuses_with_the_same_reason(name):
    build, recognised, fragment, trains = TABLE[name]
    module = build()
    fm = F.functional(module)
    chain = _mlp.recognise(module)
    assert isinstance(chain, tuple) is recognised, chain
    if not recognised:
        assert fragment in chain
    # structured NTK and Taylor-mode correlations: the recogniser's answer, word for word
    assert (_ntk.chain_of(fm) is not None) is recognised
    assert _ntk.chain_or_reason(fm) == chain
    if recognised:
        assert len(_mlp_taylor.mlp_steps(fm)) == len(chain)
    else:
        with pytest.raises(ValueError, match="`method='mlp'` needs") as err:
            _mlp_taylor.mlp_steps(fm)
        assert chain in str(err.value)
        if name != "bilinear":  # takes two inputs: refused earlier, by the input check
            with pytest.raises(ValueError, match="`implementation`='structured' needs") as err:
                empirical_ntk(fm, torch.zeros(2, 3, dtype=D64), implementation="structured")
            assert f"({chain})" in str(err.value)
    # the two hand-written training paths: one answer, one reason
    why_fused = _train.fused_refusal(module, fm.params)
    why_seeds = _vmap_train.refusal([module])
    assert why_fused == why_seeds
    assert (why_fused is None) is trains
    assert _train._is_plain_mlp(module, fm.params) is trains
    assert _vmap_train.supports([module]) is trains
    if not recognised:
        assert why_fused == chain
    elif not trains:
        assert TRAINING_ONLY_MLP in why_fused


class _ClampHardsigmoid(nn.Module):
    """Hardsigmoid by ops nested jvps can take (ATen's hardsigmoid_backward has no jvp)."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.clamp(z / 6 + 0.5, 0.0, 1.0)


def _same_function(fm: F.FunctionalModel) -> F.FunctionalModel:
    """``fm`` with every nn.Hardsigmoid computed by clamp (same θ0): the generic reference."""
    import copy

    module = copy.deepcopy(fm.module)
    for parent in module.modules():
        for key, child in parent._modules.items():
            if type(child) is nn.Hardsigmoid:
                parent._modules[key] = _ClampHardsigmoid()
    return F.functional(module)


@pytest.mark.parametrize("name", [n for n in IDS if TABLE[n][1]])
def test_recognised_chains_give_autodiff_kernels_and_derivatives(name, gen):
    """Structured NTK = explicit Jacobian contraction; Taylor mode = nested jvps (float64)."""
    fm = F.functional(TABLE[name][0]())
    x = torch.randn(4, 3, generator=gen, dtype=D64)
    want = empirical_ntk(fm, x, implementation="jacobian")
    torch.testing.assert_close(empirical_ntk(fm, x, implementation="structured"), want,
                               rtol=RTOL, atol=ATOL)
    got = C.diagonal(fm, x, d=2, lr=0.5, method="mlp")
    ref = C.diagonal(_same_function(fm), x, d=2, lr=0.5, method="generic")
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-12)


def test_seed_batches_need_one_structure():
    a, b = _mlp64(), _mlp64(activation="tanh")
    assert _vmap_train.refusal([a, _mlp64()]) is None
    assert "differ" in _vmap_train.refusal([a, b])


@pytest.mark.parametrize("name", sorted(_mlp.CLOSED_FORMS))
def test_closed_forms_match_autodiff_of_phi(name):
    z = torch.linspace(-6, 6, 241, dtype=D64)
    form = _mlp.CLOSED_FORMS[name]
    phi, dphi = form.pair(z)
    ref_phi, ref_dphi = _mlp.slope_by_jvp(form.phi, z)
    torch.testing.assert_close(phi, ref_phi, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(dphi, ref_dphi, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(form.fast_phi(z), ref_phi, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("module", [nn.Tanh(), nn.Sigmoid(), nn.ReLU(), nn.GELU()],
                         ids=lambda m: type(m).__name__)
def test_modules_named_in_the_table_compute_its_phi(module):
    name = _mlp._activations.module_activation_name(module)
    z = torch.linspace(-6, 6, 241, dtype=D64)
    assert torch.equal(_mlp.CLOSED_FORMS[name].fast_phi(z), module(z))
    assert _mlp._activations.module_activation_name(nn.GELU(approximate="tanh")) is None


def test_derivatives_are_nested_jvps_of_phi():
    """tanh: φ' = 1 - t², φ'' = -2t(1 - t²), φ''' = (6t² - 2)(1 - t²) in closed form."""
    z = torch.linspace(-3, 3, 61, dtype=D64)
    t = torch.tanh(z)
    got = _mlp.derivatives(torch.tanh, z, 3)
    want = [t, 1 - t * t, -2 * t * (1 - t * t), (6 * t * t - 2) * (1 - t * t)]
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-14)


def test_hardsigmoid_derivatives_in_closed_form():
    """Slope 1/6 strictly inside (-3, 3), where ATen's backward passes the gradient, no curvature.

    ATen's float64 slope is 1/6 rounded to float32 (torch 2.13): the closed form is exact."""
    z = torch.tensor([-4.0, -3.0, -1.0, 0.0, 2.5, 3.0, 5.0], dtype=D64)
    got = _mlp.derivatives(nn.Hardsigmoid(), z, 3)
    phi, dphi = _mlp.slope_by_jvp(nn.Hardsigmoid(), z)
    assert torch.equal(got[0], phi)
    inside = torch.tensor([0, 0, 1, 1, 1, 0, 0], dtype=torch.bool)
    assert got[1].tolist() == [1 / 6 if i else 0.0 for i in inside.tolist()]
    torch.testing.assert_close(got[1], dphi, rtol=3e-8, atol=0)
    assert not got[2].any() and not got[3].any()
    assert len(_mlp.derivatives(nn.Hardsigmoid(), z, 1)) == 2


def test_a_frozen_weight_keeps_paired_sgd_off_the_hand_written_passes():
    """A frozen parameter is not trained: auto takes autodiff (it took the seed-batch passes,
    which trained it), and asking for them says why."""
    from weakcorr import data, train

    ds = data.load("teacher", n_train=16, n_test=4, seed=0, dtype=D64)
    model = models.mlp(16, 6, 10, activation="tanh", seed=0, dtype=D64)
    model.linears[0].bias.requires_grad_(False)
    kw = dict(lr=0.1, steps=3, batch_size=8, seed=0)
    res = train.paired_sgd(model, ds, return_params=True, **kw)
    assert res.config["implementation"] == "autograd"
    assert "linears.0.bias" not in res.params["theta"]
    with pytest.raises(ValueError, match=r"`implementation='mlp'` does not apply: .*\(its "
                                         r"parameters \['linears.0.bias'\] are frozen"):
        train.paired_sgd(model, ds, implementation="mlp", **kw)
