"""weakcorr.limits: infinite-width NNGP/NTK and closed-form linearized GD.

References, each by another route than the implementation:
* Monte-Carlo over networks: with one hidden layer and Gaussian weights (ntk, mup) the mean
  of the empirical kernel over initialisations equals the limit at any width (the first
  layer's pre-activations are exactly Gaussian, the output weights independent of them), so
  the tolerance is the Monte-Carlo standard error alone (4.5 SE); deeper nets (slow tests)
  add the O(1/n) finite-width bias;
* closed forms against quadrature: erf's arcsine kernel against the 2-D trapezoidal rule,
  ReLU's arc-cosine kernel against a 1-D Gauss–Legendre integral of the conditional mean;
* the quadrature against Gauss–Hermite (another rule) and against more nodes;
* identities: sigmoid(z) = (1 + tanh(z/2))/2, odd activations at zero correlation;
* gd_mse against weakcorr.train.kernel_dynamics (step-by-step Eq. 8 with the empirical Θ0).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from weakcorr import _limits, limits
from weakcorr.models import Activation, mlp
from weakcorr.ntk import empirical_ntk
from weakcorr.train import kernel_dynamics

D = torch.float64
QUAD_ACTS = [Activation.GELU, Activation.SIGMOID, Activation.TANH]


def _grid(k_max: float, n_k: int = 5, n_rho: int = 11):
    ks = torch.logspace(-2, math.log10(k_max), n_k, dtype=D)
    rho = torch.linspace(-1, 1, n_rho, dtype=D)
    a, b, r = torch.meshgrid(ks, ks, rho, indexing="ij")
    return a, r * (a * b).sqrt(), b


def _gauss_hermite(order):
    z, w = np.polynomial.hermite_e.hermegauss(order)
    return torch.tensor(z, dtype=D), torch.tensor(w / w.sum(), dtype=D)


def _rel_err(act, got, ref, a, b, order):
    s1, s2 = _limits.dual_diag(act, a, order, True), _limits.dual_diag(act, b, order, True)
    e = ((got[0] - ref[0]).abs() / (s1[0] * s2[0]).sqrt()).max()
    d = ((got[1] - ref[1]).abs() / (s1[1] * s2[1]).sqrt()).max()
    return float(e), float(d)


@pytest.mark.parametrize("k_max", [0.05, 0.3, 1.0])
@pytest.mark.parametrize("act", QUAD_ACTS, ids=str)
def test_quadrature_against_gauss_hermite(act, k_max, monkeypatch):
    # At K <= 1, Gauss–Hermite with 120 nodes is accurate to ~1e-13: an independent rule.
    a, c, b = _grid(k_max, n_k=3, n_rho=7)
    got = _limits.dual_cross(act, a, c, b, _limits.auto_order(k_max), True)
    monkeypatch.setattr(_limits, "_nodes", lambda order, like: _gauss_hermite(order))
    ref = _limits.dual_cross(act, a, c, b, 120, True)
    assert max(_rel_err(act, got, ref, a, b, 120)) < _limits.QUADRATURE_ERROR


@pytest.mark.slow
@pytest.mark.parametrize("k_max", [3.0, 10.0, 30.0])
@pytest.mark.parametrize("act", QUAD_ACTS, ids=str)
def test_quadrature_error_statement(act, k_max):
    # The documented error of the automatic order, up to K = 30, against twice the nodes.
    a, c, b = _grid(k_max, n_k=4, n_rho=9)
    got = _limits.dual_cross(act, a, c, b, _limits.auto_order(k_max), True)
    ref = _limits.dual_cross(act, a, c, b, 2 * _limits.auto_order(k_max), True)
    assert max(_rel_err(act, got, ref, a, b, 600)) < _limits.QUADRATURE_ERROR


def test_erf_closed_form_against_quadrature():
    a, c, b = _grid(3.0, n_k=4, n_rho=7)
    closed = _limits.dual_cross(Activation.ERF, a, c, b, 0, True)
    derf = lambda z: 2.0 / math.sqrt(math.pi) * torch.exp(-z * z)  # noqa: E731
    quad = _limits.quadrature_dual(torch.erf, derf, a, c, b, 128)
    torch.testing.assert_close(closed[0], quad[0], rtol=0, atol=1e-11)
    torch.testing.assert_close(closed[1], quad[1], rtol=0, atol=1e-11)


def _relu_by_conditional(k11, k12, k22, n=200):
    # E[relu(u) relu(v)] = ∫_0^∞ u E[relu(v) | u] p(u) du with v | u ~ N(m u, s²):
    # E[relu(v)|u] = μΦ(μ/s) + s φ(μ/s); E[1(u>0)1(v>0)] likewise with Φ(μ/s).
    x, w = np.polynomial.legendre.leggauss(n)
    top = 14.0 * math.sqrt(k11)
    u = torch.tensor((x + 1) * top / 2, dtype=D)
    w = torch.tensor(w * top / 2, dtype=D)
    p = torch.exp(-u * u / (2 * k11)) / math.sqrt(2 * math.pi * k11)
    mu = k12 / k11 * u
    s = math.sqrt(max(k22 - k12 * k12 / k11, 1e-300))
    cdf = 0.5 * (1 + torch.erf(mu / s / math.sqrt(2)))
    pdf = torch.exp(-0.5 * (mu / s) ** 2) / math.sqrt(2 * math.pi)
    e = (w * p * u * (mu * cdf + s * pdf)).sum()
    d = (w * p * cdf).sum()
    return float(e), float(d)


@pytest.mark.parametrize("rho", [-0.99, -0.5, 0.0, 0.3, 0.9, 0.999])
def test_relu_arccosine_against_integral(rho):
    k11, k22 = 0.7, 2.3
    k12 = rho * math.sqrt(k11 * k22)
    e, d = _limits.dual_cross(Activation.RELU, torch.tensor(k11, dtype=D), torch.tensor(k12, dtype=D),
                              torch.tensor(k22, dtype=D), 0, True)
    ref_e, ref_d = _relu_by_conditional(k11, k12, k22)
    assert float(e) == pytest.approx(ref_e, rel=1e-10, abs=1e-13)
    assert float(d) == pytest.approx(ref_d, rel=1e-10, abs=1e-13)


def test_special_cases():
    k = torch.tensor([0.3, 1.0, 4.0], dtype=D)
    # ρ = 1: the cross kernel is the diagonal one; ReLU's is k/2 with φ' overlap 1/2.
    for act in [Activation.RELU, Activation.ERF, *QUAD_ACTS]:
        cross = _limits.dual_cross(act, k, k, k, 200, True)
        diag = _limits.dual_diag(act, k, 200, True)
        torch.testing.assert_close(cross[0], diag[0], rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(cross[1], diag[1], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(_limits.dual_diag(Activation.RELU, k, 0, False)[0], k / 2)
    # odd activations at zero correlation
    for act in [Activation.ERF, Activation.TANH]:
        e, _ = _limits.dual_cross(act, k, torch.zeros_like(k), k.flip(0), 96, False)
        torch.testing.assert_close(e, torch.zeros_like(e), rtol=0, atol=1e-15)
    # sigmoid(z) = (1 + tanh(z/2)) / 2: E_σ(K) = 1/4 + E_tanh(K/4)/4, E_σ'(K) = E_tanh'(K/4)/16
    a, c, b = _grid(3.0, n_k=3, n_rho=5)
    sig = _limits.dual_cross(Activation.SIGMOID, a, c, b, 128, True)
    tnh = _limits.dual_cross(Activation.TANH, a / 4, c / 4, b / 4, 128, True)
    torch.testing.assert_close(sig[0], 0.25 + tnh[0] / 4, rtol=0, atol=1e-13)
    torch.testing.assert_close(sig[1], tnh[1] / 16, rtol=0, atol=1e-13)


def test_ntk_parameterization_formula_by_hand():
    # One hidden ReLU layer, ntk parameterization (neural-tangents' stax Dense/Relu/Dense):
    # K1 = σw² x·x'/n0 + σb², NNGP = σw² E[relu relu] + σb², NTK = NNGP + σw² E[relu' relu'] K1.
    sw, sb = 1.7, 0.3
    net = mlp(3, 5, 2, activation="relu", parameterization="ntk", sigma_w=sw, sigma_b=sb, seed=0)
    x = torch.tensor([[1.0, 2.0, 0.0], [-1.0, 0.5, 2.0]], dtype=D)
    k1 = sw**2 * (x @ x.T) / 3 + sb**2
    n = k1.diagonal().sqrt()
    cos = (k1 / n[:, None] / n[None, :]).clamp(-1, 1)
    th = torch.acos(cos)
    e = n[:, None] * n[None, :] / (2 * math.pi) * (torch.sin(th) + (math.pi - th) * cos)
    nngp = sw**2 * e + sb**2
    ntk = nngp + sw**2 * (math.pi - th) / (2 * math.pi) * k1
    torch.testing.assert_close(limits.nngp(net, x, per_output=True), nngp, rtol=1e-13, atol=0)
    # (acos near cos = 1 turns the reference's rounding of k1/(n n) into ~1e-8 in θ)
    torch.testing.assert_close(limits.ntk(net, x, per_output=True), ntk, rtol=1e-7, atol=0)


def test_output_conventions():
    net = mlp(3, [6, 6], 2, activation="erf", parameterization="ntk", seed=0)
    x1, x2 = torch.randn(4, 3, dtype=D), torch.randn(5, 3, dtype=D)
    k = limits.ntk(net, x1, x2, per_output=True)
    full = limits.ntk(net, x1, x2)
    assert full.shape == (4, 5, 2, 2)
    torch.testing.assert_close(full, k[..., None, None] * torch.eye(2, dtype=D))
    torch.testing.assert_close(limits.ntk(net, x1, x2, trace_outputs=True), 2 * k)
    diag = limits.ntk(net, x1, x1 + 1, diagonal_inputs=True, per_output=True)
    torch.testing.assert_close(diag, limits.ntk(net, x1, x1 + 1, per_output=True).diagonal())
    # x2 = None is x1; kernel symmetric PSD
    kk = limits.nngp(net, x1, per_output=True)
    torch.testing.assert_close(kk, limits.nngp(net, x1, x1.clone(), per_output=True))
    assert float(torch.linalg.eigvalsh(kk).min()) > -1e-12


def _mc_kernels(make, x, n_nets):
    ntks, outs = [], []
    for s in range(n_nets):
        net = make(s)
        ntks.append(empirical_ntk(net, x)[:, :, 0, 0])
        with torch.no_grad():
            outs.append(net(x))
    return net, torch.stack(ntks), torch.stack(outs)


def _assert_within_se(samples, limit, n_se=4.5, bias=0.0):
    mean, se = samples.mean(0), samples.std(0) / math.sqrt(len(samples))
    assert bool(((mean - limit).abs() <= n_se * se + bias * limit.abs() + 1e-12).all()), (
        (mean - limit) / se
    )


@pytest.mark.parametrize("param", ["ntk", "mup"])
@pytest.mark.parametrize("act", [a.value for a in Activation])
def test_one_hidden_layer_monte_carlo(act, param):
    # Exact in expectation at any width: tolerance is the Monte-Carlo error only.
    torch.manual_seed(1)
    x = torch.randn(3, 4, dtype=D)
    kw = dict(sigma_w=1.4, sigma_b=0.3)
    make = lambda s: mlp(4, 48, 2, activation=act, parameterization=param, seed=s,  # noqa: E731
                         dtype=D, **kw)
    net, ntks, outs = _mc_kernels(make, x, 40)
    lk = kw if param == "mup" else {}
    _assert_within_se(ntks, limits.ntk(net, x, per_output=True, **lk))
    if param == "ntk":  # (mup's output NNGP is σ_b² + O(1/n): not a limit to test here)
        cov = torch.einsum("sai,sbi->siab", outs, outs).reshape(-1, 3, 3)
        _assert_within_se(cov, limits.nngp(net, x, per_output=True, **lk))


@pytest.mark.slow
@pytest.mark.parametrize(
    "param,act", [("ntk", "relu"), ("ntk", "tanh"), ("ntk", "gelu"), ("mup", "sigmoid"),
                  ("mup", "erf"), ("standard", "relu"), ("standard", "erf"), ("standard", "tanh")]
)
def test_deep_monte_carlo(act, param):
    # Depth 3, width 256: mean over networks within 4.5 SE plus an O(1/n) bias allowance
    # (3 % at n = 256; standard is compared at the model's widths, and its uniform first
    # layer is Gaussian only as d_in grows: inputs of d_in = 64 entries ±1/8).
    width, d_in = 256, 64
    gen = torch.Generator().manual_seed(2)
    x = (torch.randint(0, 2, (3, d_in), generator=gen).to(D) * 2 - 1) / 8
    kw = dict(sigma_w=1.2, sigma_b=0.2) if param != "standard" else {}
    make = lambda s: mlp(d_in, [width] * 3, 1, activation=act, parameterization=param,  # noqa: E731
                         seed=s, dtype=D, **kw)
    net, ntks, outs = _mc_kernels(make, x, 30)
    lk = kw if param == "mup" else {}
    lim = limits.ntk(net, x, per_output=True, at_model_widths=param == "standard", **lk)
    _assert_within_se(ntks, lim, bias=0.03)
    if param in ("ntk", "standard"):
        cov = torch.einsum("sai,sbi->siab", outs, outs).reshape(-1, 3, 3)
        k = limits.nngp(net, x, per_output=True, at_model_widths=param == "standard", **lk)
        _assert_within_se(cov, k, bias=0.03)


@pytest.mark.parametrize("param", ["standard", "mup"])
def test_at_model_widths_tends_to_the_limit(param):
    # The width-aware recursion (O(1/n) terms kept), scaled as the limit is, converges to it:
    # standard's NTK / n_1, mup's output NNGP (σ_b² + σ_w² E / n_L).
    x = torch.randn(3, 5, dtype=D, generator=torch.Generator().manual_seed(0))
    kw = dict(sigma_w=1.1, sigma_b=0.4) if param == "mup" else {}
    fn = limits.ntk if param == "standard" else limits.nngp
    lim = fn(mlp(5, [4, 8], 2, activation="erf", parameterization=param, **kw), x,
             per_output=True, **kw)
    gaps = []
    for n in (50, 2000):
        net = mlp(5, [n, 2 * n], 2, activation="erf", parameterization=param, seed=0, **kw)
        k = fn(net, x, per_output=True, at_model_widths=True, **kw)
        k = k / n if param == "standard" else k
        gaps.append(float((k - lim).abs().max() / lim.abs().max()))
        # the limit depends on the width ratios only
        torch.testing.assert_close(fn(net, x, per_output=True, **kw), lim, rtol=1e-12, atol=0)
    assert gaps[1] < 2e-2 and gaps[1] < gaps[0] / 20  # O(1/n): 40x wider, 40x closer


def test_kernel_distance():
    x = torch.randn(4, 6, dtype=D, generator=torch.Generator().manual_seed(0))
    net = mlp(6, [32], 2, activation="relu", parameterization="ntk", seed=0, dtype=D)
    emp = empirical_ntk(net, x)
    lim = limits.ntk(net, x)
    assert _limits.kernel_distance(net, x) == pytest.approx(float((emp - lim).norm() / lim.norm()),
                                                            rel=1e-12)
    assert _limits.kernel_distance(torch.nn.Linear(6, 2), x) is None


def test_bad_input():
    with pytest.raises(TypeError, match="`model` must be a weakcorr MLP"):
        limits.ntk(torch.nn.Linear(3, 2), torch.zeros(2, 3))
    mup = mlp(3, 4, 1, activation="relu", parameterization="mup", seed=0)
    with pytest.raises(ValueError, match="`sigma_w` is needed for a mup model"):
        limits.ntk(mup, torch.zeros(2, 3))
    std = mlp(3, 4, 1, activation="relu", seed=0)
    with pytest.raises(ValueError, match="`sigma_w` does not apply"):
        limits.nngp(std, torch.zeros(2, 3), sigma_w=1.0)
    ntk_net = mlp(3, 4, 1, activation="relu", parameterization="ntk", sigma_w=2.0, seed=0)
    with pytest.raises(ValueError, match="`sigma_w`=1.0 disagrees"):
        limits.ntk(ntk_net, torch.zeros(2, 3), sigma_w=1.0)
    with pytest.raises(ValueError, match=r"`x1` must be a tensor \[batch >= 1, 3\]"):
        limits.ntk(ntk_net, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="`x2` must have 2 rows"):
        limits.ntk(ntk_net, torch.zeros(2, 3), torch.zeros(3, 3), diagonal_inputs=True)
    with pytest.raises(ValueError, match="`quadrature`"):
        limits.ntk(ntk_net, torch.zeros(2, 3), quadrature=1)
    with pytest.raises(ValueError, match="`steps` must be an integer >= 0"):
        limits.gd_mse(torch.eye(2), torch.zeros(2, 1), lr=1.0, steps=-1)
    with pytest.raises(ValueError, match="`k_train_train` must have shape"):
        limits.gd_mse(torch.eye(3), torch.zeros(2, 1), lr=1.0, steps=1)


# --- closed-form linearized training -------------------------------------------------------------

@pytest.fixture
def small_problem():
    torch.manual_seed(0)
    net = mlp(3, [16, 16], 2, activation="tanh", parameterization="ntk", seed=3, dtype=D)
    x_tr, y_tr = torch.randn(6, 3, dtype=D), torch.randn(6, 2, dtype=D)
    x_te = torch.randn(4, 3, dtype=D)
    return net, x_tr, y_tr, x_te


@pytest.mark.parametrize("steps", [0, 1, 7, 40])
def test_gd_mse_equals_kernel_dynamics(small_problem, steps):
    net, x_tr, y_tr, x_te = small_problem
    lr = 0.9
    with torch.no_grad():
        f_tr, f_te = net(x_tr), net(x_te)
    fx_tr, fx_te = limits.gd_mse(
        empirical_ntk(net, x_tr), y_tr, lr=lr, steps=steps, fx_train_0=f_tr,
        k_test_train=empirical_ntk(net, x_te, x_tr), fx_test_0=f_te,
    )
    ref = kernel_dynamics(net, [(x_tr, y_tr)] * steps, torch.cat([x_te, x_tr]), lr=lr)
    torch.testing.assert_close(fx_te, ref[:4], rtol=0, atol=1e-9)
    torch.testing.assert_close(fx_tr, ref[4:], rtol=0, atol=1e-9)


def test_gd_mse_per_output_kernel(small_problem):
    # The [N, N] kernel applied to every output equals its k ⊗ I form, and a direct loop.
    net, x_tr, y_tr, x_te = small_problem
    k_tt = limits.ntk(net, x_tr, per_output=True)
    k_et = limits.ntk(net, x_te, x_tr, per_output=True)
    eye = torch.eye(2, dtype=D)
    a = limits.gd_mse(k_tt, y_tr, lr=2.0, steps=25, k_test_train=k_et)
    b = limits.gd_mse(k_tt[..., None, None] * eye, y_tr, lr=2.0, steps=25,
                      k_test_train=k_et[..., None, None] * eye)
    f_tr, f_te = torch.zeros_like(y_tr), torch.zeros(4, 2, dtype=D)
    for _ in range(25):
        r = 2 * (f_tr - y_tr) / y_tr.numel()
        f_tr, f_te = f_tr - 2.0 * k_tt @ r, f_te - 2.0 * k_et @ r
    for got in (a, b):
        torch.testing.assert_close(got[0], f_tr, rtol=0, atol=1e-10)
        torch.testing.assert_close(got[1], f_te, rtol=0, atol=1e-10)


# --- diagnose's infinite-width checks --------------------------------------------------------------

def _measurements(kd_exponent, lr_over_crit):
    from weakcorr._diagnose import Measurement

    rng = np.random.default_rng(0)
    out = []
    for w in (16, 32, 64, 128, 256):
        for s in range(6):
            out.append(Measurement(
                width=w, seed=s, lr=0.1, c02=w**-1.0, c03=w**-1.5, c11=w**-0.5,
                kernel_distance=w**kd_exponent * math.exp(0.05 * rng.standard_normal()),
                critical_lr=0.1 / lr_over_crit(w) if s == 0 else None,
                error=w**-1.0 * math.exp(0.05 * rng.standard_normal()),
                curve=[(k, 1e-3) for k in range(1, 20)]))
    return out


def test_diagnose_kernel_convergence_and_stability_verdicts():
    from weakcorr._diagnose import analyze

    res = analyze(_measurements(-0.5, lambda w: 0.5), n_boot=100)
    kd = res.exponents["kernel_distance"]
    assert kd.status == "fit" and kd.central[1] <= -0.5 <= kd.central[2]
    got = {v.claim.split(" (")[0]: v for v in res.verdicts}
    assert got["NTK → Θ∞"].verdict == "consistent"
    assert got["Stability"].verdict == "consistent" and "n=256: lr/lr_crit = 0.5" in got["Stability"].detail
    # a kernel that does not converge, an lr above the critical one at the widest width
    res = analyze(_measurements(0.0, lambda w: 1.5 if w == 256 else 0.5), n_boot=100)
    got = {v.claim.split(" (")[0]: v for v in res.verdicts}
    assert got["NTK → Θ∞"].verdict == "not consistent"
    assert got["Stability"].verdict == "not consistent" and "above at n = [256]" in got["Stability"].detail
    # no kernel measured (not a weakcorr MLP): no such verdicts, no exponent
    ms = _measurements(-0.5, lambda w: 0.5)
    for m in ms:
        m.kernel_distance = m.critical_lr = None
    res = analyze(ms, n_boot=100)
    assert "kernel_distance" not in res.exponents
    assert not [v for v in res.verdicts if v.claim.startswith(("NTK", "Stability"))]


def test_a1_records_the_kernel_distance():
    from weakcorr import _a1
    from weakcorr._a1_report import QUANTITIES
    from weakcorr.functional import functional

    net = mlp(6, [16], 2, activation="erf", parameterization="ntk", seed=0)
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    c = {"lr": 0.5, "params_per_layer": 4, "norm_tuples": 1, "norm_restarts": 1, "hessian_iters": 0}
    metrics, _ = _a1._init_metrics(functional(net), x, c, 0, {})
    assert metrics["kernel_distance"] == pytest.approx(_limits.kernel_distance(net, x), rel=1e-6)
    assert "kernel_distance" in dict(QUANTITIES)


def test_flin_distance_against_step_by_step_references():
    g = torch.Generator().manual_seed(0)
    x, y, xe = (torch.randn(6, 4, generator=g, dtype=D), torch.randn(6, 2, generator=g, dtype=D),
                torch.randn(3, 4, generator=g, dtype=D))
    net = mlp(4, [16], 2, activation="relu", parameterization="ntk", seed=1, dtype=D)
    lr, steps = 0.7, 12
    fin = kernel_dynamics(net, [(x, y)] * steps, xe, lr=lr)        # Eq. 8 with Θ0
    k_tt, k_et = limits.ntk(net, x, per_output=True), limits.ntk(net, xe, x, per_output=True)
    with torch.no_grad():
        f_tr, f_te = net(x), net(xe)
    f0_te = f_te.clone()
    for _ in range(steps):                                          # Eq. 8 with Θ∞
        r = 2 * (f_tr - y) / y.numel()
        f_tr, f_te = f_tr - lr * k_tt @ r, f_te - lr * k_et @ r
    ref = float((fin - f_te).pow(2).mean().sqrt() / (f_te - f0_te).pow(2).mean().sqrt())
    got = _limits.flin_distance(net, x, y, xe, lr=lr, steps=steps)
    assert got == pytest.approx(ref, rel=1e-9)
    assert _limits.flin_distance(torch.nn.Linear(4, 2), x, y, xe, lr=lr, steps=steps) is None


def test_diagnose_per_layer_lines():
    from weakcorr._diagnose import _layer_lines, analyze

    ms = _measurements(-0.5, lambda w: 0.5)
    for m in ms:
        if m.seed == 0:
            m.by_layer = {"c01_share": {"linears.0": 0.25, "linears.1": 0.75},
                          "c02_rms": {"linears.0": 2.0 / m.width, "linears.1": 1.0 / m.width,
                                      "mixed": 0.5 / m.width, "total": 3.0 / m.width}}
    lines = _layer_lines(analyze(ms, n_boot=50))
    row = next(x for x in lines if x.startswith("| linears.1 |"))
    assert "75 % / 3.91e-03" in row and row.endswith("| -1.00 |")   # n = 256: 1/256
    assert any(x.startswith("| mixed |") for x in lines)
    for m in ms:
        m.by_layer = None
    assert _layer_lines(analyze(ms, n_boot=50)) == []
