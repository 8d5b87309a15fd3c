"""Engine of :mod:`weakcorr.limits`: layer coefficients, activation dual kernels, the recursion.

Vocabulary.  A weakcorr MLP (``weakcorr.models.mlp``) with L hidden layers computes
``z_l = a_l W_l h_{l-1} + c_l b_l`` with stored ``W_l`` of per-entry variance ``s_l²`` and
``b_l`` of variance ``t_l²``.  In the infinite-width limit every pre-activation is a centred
Gaussian process; per layer l (fan-in n_{l-1}) the recursion needs five numbers:

* ``omega`` ω_l = n_{l-1} a_l² s_l²  and ``beta`` β_l = c_l² t_l²  (NNGP:
  K_l = ω_l E_φ[K_{l-1}] + β_l, and K_1 = ω_1 x·x'/n_0 + β_1);
* ``gamma`` γ_l and ``eps`` ε_l, the layer's own NTK term T_l = γ_l Ĥ_{l-1} + ε_l, where
  Ĥ_0 = x·x'/n_0 and Ĥ_{l-1} = E_φ[K_{l-1}] (γ_l = a_l² n_{l-1}, ε_l = c_l²);
* ``rho`` ρ_l = n_{l-1} a_l² s_l², the factor by which Θ_{l-1} reaches layer l:
  Θ_l = T_l + ρ_l E_φ'[K_{l-1}] Θ_{l-1}   (so Θ = output_scale² Θ_{L+1}).

The tables for each parameterization (after taking the width to infinity at fixed width
ratios) are in :func:`layer_coefficients`.  E_φ[K] = E[φ(u)φ(v)] and E_φ'[K] = E[φ'(u)φ'(v)]
for (u, v) ~ N(0, [[K11, K12], [K12, K22]]) are the *dual kernels*: closed forms for ReLU
(arc-cosine, Cho & Saul 2009) and erf (arcsine, Williams 1997), Gauss–Hermite quadrature
for GELU, sigmoid and tanh.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
from torch import Tensor

from .models import MLP, Activation, Parameterization

__all__ = [
    "CLOSED_FORM",
    "FLIN_MAX_ENTRIES",
    "DEFAULT_QUADRATURE",
    "LayerCoefficients",
    "LimitSpec",
    "QUADRATURE_ERROR",
    "auto_order",
    "dual_cross",
    "dual_diag",
    "flin_distance",
    "kernel_distance",
    "quadrature_dual",
    "kernels",
    "linear_gd",
    "layer_coefficients",
    "spec_of",
]

CLOSED_FORM = frozenset({Activation.RELU, Activation.ERF})
# Quadrature nodes per dimension for the activations without a closed form (GELU, sigmoid,
# tanh), by default chosen per layer from the largest variance K there (the error falls like
# exp(-c·order/√K)): max(24, ceil(60 √K)), at most 512.  Measured against twice the nodes and Gauss–Hermite
# (150 nodes) in float64 for K11, K22 in [0.01, 30] and every correlation: the largest error
# of E_φ, E_φ' relative to sqrt(E[φ(u)²]E[φ(v)²]) (resp. φ') is below QUADRATURE_ERROR
# (tests/math/test_limits.py::test_quadrature_error_statement).
DEFAULT_QUADRATURE = None
QUADRATURE_ERROR = 1e-8
_AUTO_MIN, _AUTO_PER_SQRT_K, _AUTO_MAX = 24, 60.0, 512


def auto_order(k_max: float) -> int:
    """Nodes per dimension for variances up to ``k_max`` (see DEFAULT_QUADRATURE)."""
    return int(min(_AUTO_MAX, max(_AUTO_MIN, math.ceil(_AUTO_PER_SQRT_K * math.sqrt(max(k_max, 0.0))))))
# Pair budget per chunk of the 2-D quadrature: pairs x nodes² elements.
_QUAD_ELEMENTS = 1 << 22


@dataclasses.dataclass(frozen=True)
class LayerCoefficients:
    """ω, β, γ, ε, ρ of one layer (see the module docstring)."""

    omega: float
    beta: float
    gamma: float
    eps: float
    rho: float


@dataclasses.dataclass(frozen=True)
class LimitSpec:
    """What the infinite-width recursion needs from a model."""

    activation: Activation
    layers: tuple[LayerCoefficients, ...]
    output_scale: float
    d_in: int
    d_out: int
    parameterization: Parameterization


def spec_of(
    model: object, sigma_w: float | None, sigma_b: float | None, at_model_widths: bool = False
) -> LimitSpec:
    """Recognise a weakcorr MLP and read its coefficients; one-line errors otherwise."""
    if not isinstance(model, MLP):
        raise TypeError(
            f"`model` must be a weakcorr MLP (weakcorr.models.mlp(...)), got "
            f"{type(model).__name__}; the infinite-width kernels are known only for that family."
        )
    param = Parameterization(model.parameterization)
    act = Activation(model.activation_name)
    widths = list(model.widths)
    lins = list(model.linears)
    bias = lins[0].bias is not None
    if any((lin.bias is not None) != bias for lin in lins):
        raise ValueError(
            "`model` has biases in some layers only; weakcorr.models.mlp builds all or none "
            "(bias=True/False)."
        )
    if param is Parameterization.NTK:
        sw = lins[0].weight_multiplier * math.sqrt(widths[0])
        sb = lins[0].bias_multiplier if bias else 0.0
        for k, lin in enumerate(lins):
            if not (math.isclose(lin.weight_multiplier * math.sqrt(widths[k]), sw, rel_tol=1e-9)
                    and (not bias or math.isclose(lin.bias_multiplier, sb, rel_tol=1e-9))):
                raise ValueError(
                    f"`model` layer {k} has multipliers ({lin.weight_multiplier:.6g}, "
                    f"{lin.bias_multiplier:.6g}) that no single (sigma_w, sigma_b) of "
                    "weakcorr.models.mlp(parameterization='ntk') gives; rebuild it with mlp(...)."
                )
        for name, given, read in (("sigma_w", sigma_w, sw), ("sigma_b", sigma_b, sb)):
            if given is not None and not math.isclose(float(given), read, rel_tol=1e-9, abs_tol=1e-12):
                raise ValueError(
                    f"`{name}`={given!r} disagrees with the model's multipliers ({read:.6g}); "
                    f"omit `{name}` (the ntk parameterization stores it)."
                )
        sigma_w, sigma_b = sw, sb
    elif param is Parameterization.MUP:
        for name, value in (("sigma_w", sigma_w), ("sigma_b", sigma_b)):
            if value is None:
                raise ValueError(
                    f"`{name}` is needed for a mup model (its multipliers do not record it): "
                    f"pass the {name} given to weakcorr.models.mlp (default "
                    f"{1.0 if name == 'sigma_w' else 0.05})."
                )
    else:
        for name, value in (("sigma_w", sigma_w), ("sigma_b", sigma_b)):
            if value is not None:
                raise ValueError(
                    f"`{name}` does not apply to the standard parameterization (nn.Linear's "
                    f"U(±1/√fan_in) init, which mlp uses whatever sigma_w/sigma_b), got "
                    f"{value!r}; omit it."
                )
    for name, value in (("sigma_w", sigma_w), ("sigma_b", sigma_b)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value) or value < 0):
            raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}.")
    layers = layer_coefficients(param, widths, bias,
                                0.0 if sigma_w is None else float(sigma_w),
                                0.0 if sigma_b is None else float(sigma_b),
                                at_model_widths=at_model_widths)
    return LimitSpec(act, layers, float(model.output_scale), widths[0], widths[-1], param)


def layer_coefficients(
    param: Parameterization, widths: list[int], bias: bool, sigma_w: float, sigma_b: float,
    *, at_model_widths: bool = False,
) -> tuple[LayerCoefficients, ...]:
    """ω, β, γ, ε, ρ per layer, in the limit n → ∞ at fixed ratios n_l / n_1.

    With ``at_model_widths`` the recursion is evaluated at the model's own widths, keeping
    the terms that vanish in the limit: standard: ω = ρ = 1/3, β_l = 1/(3 n_{l-1}),
    γ_l = n_{l-1}, ε = 1 (the kernel itself, not divided by n_1); mup: the output layer's
    ω = σ_w²/n_L; ntk: unchanged.

    * ntk: a_l = σ_w/√n_{l-1}, s = t = 1, c_l = σ_b: ω = ρ = γ = σ_w², β = ε = σ_b²
      (width-free: the limit is the formula of neural-tangents' stax).
    * standard (U(±1/√n_{l-1}) weights and biases, variance 1/(3 n_{l-1}); a = c = 1): ω = ρ = 1/3;
      β_1 = 1/(3 n_0), β_l = 0 for l >= 2 (hidden bias variances vanish). The NTK grows like the
      width; the returned kernel is lim Θ/n_1: γ_1 = ε = 0 (the first layer's weights and
      every bias contribute O(1)), γ_l = n_{l-1}/n_1 for l >= 2.
    * mup (see weakcorr.models.mlp): ω = ρ = σ_w², β = σ_b² for hidden layers; the output layer
      has ρ = σ_w²/n_L and ω = 0 in the limit (the output's variance is σ_w² E/n_L → 0);
      γ_1 = n_1 n_0, γ_l = n_{l-1} (hidden), γ_{L+1} = 1; ε_l = n_l (hidden), 1 (output).
      Every NTK term depends on width ratios only, so these are the exact limit.
    """
    n_layers = len(widths) - 1
    b = 1.0 if bias else 0.0
    out = []
    for l_idx in range(n_layers):
        fan_in, fan_out = widths[l_idx], widths[l_idx + 1]
        last = l_idx == n_layers - 1
        if param is Parameterization.NTK:
            c = LayerCoefficients(sigma_w**2, b * sigma_b**2, sigma_w**2, b * sigma_b**2, sigma_w**2)
        elif param is Parameterization.STANDARD and at_model_widths:
            c = LayerCoefficients(1.0 / 3.0, b / (3.0 * fan_in), float(fan_in), b, 1.0 / 3.0)
        elif param is Parameterization.STANDARD:
            first = l_idx == 0
            c = LayerCoefficients(
                1.0 / 3.0, b / (3.0 * fan_in) if first else 0.0,
                0.0 if first else fan_in / widths[1], 0.0, 1.0 / 3.0,
            )
        elif not last:  # mup input or hidden layer
            gamma = float(fan_out * fan_in) if l_idx == 0 else float(fan_in)
            c = LayerCoefficients(sigma_w**2, b * sigma_b**2, gamma, b * fan_out, sigma_w**2)
        else:  # mup output layer
            omega = sigma_w**2 / fan_in if at_model_widths else 0.0
            c = LayerCoefficients(omega, b * sigma_b**2, 1.0, b, sigma_w**2 / fan_in)
        out.append(c)
    return tuple(out)


# --- dual kernels --------------------------------------------------------------------------------

def _gelu(z: Tensor) -> Tensor:
    return 0.5 * z * (1.0 + torch.erf(z / math.sqrt(2.0)))


def _gelu_d(z: Tensor) -> Tensor:
    return 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0))) + z * torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def _sigmoid_d(z: Tensor) -> Tensor:
    s = torch.sigmoid(z)
    return s * (1.0 - s)


def _tanh_d(z: Tensor) -> Tensor:
    return 1.0 - torch.tanh(z) ** 2


_QUAD_FUNCS: dict[Activation, tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]] = {
    Activation.GELU: (_gelu, _gelu_d),
    Activation.SIGMOID: (torch.sigmoid, _sigmoid_d),
    Activation.TANH: (torch.tanh, _tanh_d),
}


def _nodes(order: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """Nodes z and weights w with Σ w g(z) ≈ E[g(Z)], Z ~ N(0, 1): the trapezoidal rule on
    [-9, 9] (tail mass 2e-19), weights normalised to sum to 1.

    For g analytic in a strip |Im z| < d the error falls like exp(-2π d/h), h = 18/(order-1)
    (tanh and sigmoid of √K·z have poles at distance π/(2√K) and π/√K): unlike Gauss–Hermite,
    whose nodes spread into the tails as the order grows, the spacing h resolves
    φ'(√K z) for large K.
    """
    z = torch.linspace(-_HALF_WIDTH, _HALF_WIDTH, order, dtype=like.dtype, device=like.device)
    w = torch.exp(-0.5 * z * z)
    return z, w / w.sum()


_HALF_WIDTH = 9.0


def dual_diag(act: Activation, k: Tensor, order: int, want_d: bool) -> tuple[Tensor, Tensor | None]:
    """E[φ(u)²] and E[φ'(u)²] for u ~ N(0, k), elementwise over ``k``."""
    if act is Activation.RELU:
        return 0.5 * k, (torch.where(k > 0, 0.5, 0.0).to(k.dtype) if want_d else None)
    if act is Activation.ERF:
        e = (2.0 / math.pi) * torch.asin(2.0 * k / (1.0 + 2.0 * k))
        return e, ((4.0 / math.pi) / torch.sqrt(1.0 + 4.0 * k) if want_d else None)
    phi, dphi = _QUAD_FUNCS[act]
    z, w = _nodes(order, k)
    u = torch.sqrt(k.clamp_min(0)).unsqueeze(-1) * z
    e = (phi(u) ** 2 * w).sum(-1)
    return e, ((dphi(u) ** 2 * w).sum(-1) if want_d else None)


def dual_cross(
    act: Activation, k11: Tensor, k12: Tensor, k22: Tensor, order: int, want_d: bool
) -> tuple[Tensor, Tensor | None]:
    """E[φ(u)φ(v)] and E[φ'(u)φ'(v)] for (u, v) ~ N(0, [[k11, k12], [k12, k22]]).

    ``k11``, ``k12``, ``k22`` broadcast to one shape (e.g. [B1, 1], [B1, B2], [1, B2]).
    """
    k11, k12, k22 = torch.broadcast_tensors(k11, k12, k22)
    if act is Activation.RELU:
        norm = torch.sqrt(k11 * k22)
        pos = norm > 0
        cos = torch.where(pos, k12 / torch.where(pos, norm, 1.0), 0.0).clamp(-1.0, 1.0)
        theta = torch.acos(cos)
        sin = torch.sqrt((1.0 - cos * cos).clamp_min(0.0))
        e = norm / (2.0 * math.pi) * (sin + (math.pi - theta) * cos)
        d = torch.where(pos, (math.pi - theta) / (2.0 * math.pi), 0.0) if want_d else None
        return e, d
    if act is Activation.ERF:
        a = (1.0 + 2.0 * k11) * (1.0 + 2.0 * k22)
        e = (2.0 / math.pi) * torch.asin((2.0 * k12 / torch.sqrt(a)).clamp(-1.0, 1.0))
        d = (4.0 / math.pi) / torch.sqrt((a - 4.0 * k12 * k12).clamp_min(1e-300)) if want_d else None
        return e, d
    phi, dphi = _QUAD_FUNCS[act]
    return quadrature_dual(phi, dphi if want_d else None, k11, k12, k22, order)


def quadrature_dual(
    phi: Callable[[Tensor], Tensor], dphi: Callable[[Tensor], Tensor] | None,
    k11: Tensor, k12: Tensor, k22: Tensor, order: int,
) -> tuple[Tensor, Tensor | None]:
    """E[φ(u)φ(v)] (and E[φ'(u)φ'(v)] when ``dphi`` is given) by the 2-D trapezoidal rule.

    (u, v) = (√k11 z1, m z1 + s z2) with m = k12/√k11, s = √(k22 − m²), z ~ N(0, I).
    """
    k11, k12, k22 = torch.broadcast_tensors(k11, k12, k22)
    z, w = _nodes(order, k11)
    shape = k11.shape
    a, c, b = k11.reshape(-1), k12.reshape(-1), k22.reshape(-1)
    e_out = torch.empty_like(a)
    d_out = torch.empty_like(a) if dphi is not None else None
    chunk = max(1, _QUAD_ELEMENTS // (order * order))
    ww = w[:, None] * w[None, :]
    for i0 in range(0, len(a), chunk):
        sl = slice(i0, i0 + chunk)
        s1 = torch.sqrt(a[sl].clamp_min(0))
        m = torch.where(s1 > 0, c[sl] / torch.where(s1 > 0, s1, 1.0), 0.0)
        s2 = torch.sqrt((b[sl] - m * m).clamp_min(0))
        u = s1[:, None, None] * z[None, :, None]                                        # [P, Q, 1]
        v = m[:, None, None] * z[None, :, None] + s2[:, None, None] * z[None, None, :]  # [P, Q, Q]
        e_out[sl] = (phi(u) * phi(v) * ww).sum((-2, -1))
        if d_out is not None:
            d_out[sl] = (dphi(u) * dphi(v) * ww).sum((-2, -1))
    return e_out.reshape(shape), (d_out.reshape(shape) if d_out is not None else None)


# --- the recursion -------------------------------------------------------------------------------

def kernels(
    spec: LimitSpec, x1: Tensor, x2: Tensor | None, *, want_ntk: bool, diagonal: bool,
    order: int | None = DEFAULT_QUADRATURE,
) -> tuple[Tensor, Tensor | None]:
    """Scalar NNGP and NTK kernels of the limit: [B1, B2] (or [B] with ``diagonal``).

    Every output pair (i, j) has kernel k·δ_ij; this returns k.
    """
    n0 = spec.d_in
    same = x2 is None
    x2_ = x1 if same else x2
    if diagonal:
        h_cross = (x1 * x2_).sum(-1) / n0
    else:
        h_cross = x1 @ x2_.T / n0
    h11 = (x1 * x1).sum(-1) / n0
    h22 = h11 if same else (x2_ * x2_).sum(-1) / n0
    first = spec.layers[0]
    k = first.omega * h_cross + first.beta
    k11 = first.omega * h11 + first.beta
    k22 = k11 if same else first.omega * h22 + first.beta
    theta = first.gamma * h_cross + first.eps if want_ntk else None
    for layer in spec.layers[1:]:
        q = order
        if q is None:
            q = auto_order(max(float(k11.max()), float(k22.max()))) if spec.activation not in CLOSED_FORM else 0
        e11, _ = dual_diag(spec.activation, k11, q, False)
        e22 = e11 if same else dual_diag(spec.activation, k22, q, False)[0]
        if diagonal:
            e, ed = dual_cross(spec.activation, k11, k, k22, q, want_ntk)
        else:
            e, ed = dual_cross(spec.activation, k11[:, None], k, k22[None, :], q, want_ntk)
        if want_ntk:
            theta = layer.gamma * e + layer.eps + layer.rho * ed * theta
        k = layer.omega * e + layer.beta
        k11 = layer.omega * e11 + layer.beta
        k22 = k11 if same else layer.omega * e22 + layer.beta
    s2 = spec.output_scale**2
    return s2 * k, (s2 * theta if theta is not None else None)


_LAST_LIMIT: tuple[tuple, Tensor] | None = None


def kernel_distance(model: object, x: Tensor) -> float | None:
    """‖Θ_n − Θ∞‖_F / ‖Θ∞‖_F on the inputs ``x`` (every input and output pair), or ``None``.

    Θ_n is the model's empirical NTK (η = 1) at its current parameters, Θ∞ the recursion at
    the model's own widths (``at_model_widths``: the kernel Θ_n fluctuates around, whose
    distance falls like n^-1/2).  ``None`` when the model is not a weakcorr MLP or is a mup
    model (which does not record σ_w, σ_b).
    """
    from .ntk import empirical_ntk

    try:
        spec = spec_of(model, None, None, True)
    except (TypeError, ValueError):
        return None
    # Θ∞ depends on the architecture and x only: diagnose asks for it once per seed of a width
    # with the same x, so the last one is kept (the key includes x's storage and version).
    global _LAST_LIMIT
    key = (spec, x.data_ptr(), tuple(x.shape), x.dtype, str(x.device), x._version)
    if _LAST_LIMIT is not None and _LAST_LIMIT[0] == key:
        theta = _LAST_LIMIT[1]
    else:
        _, theta = kernels(spec, x.detach().to(torch.float64), None, want_ntk=True,
                           diagonal=False)
        assert theta is not None
        _LAST_LIMIT = (key, theta)
    emp = empirical_ntk(model, x.detach()).to(torch.float64)   # type: ignore[arg-type]
    eye = torch.eye(spec.d_out, dtype=torch.float64, device=emp.device)
    lim = theta.to(emp.device)[..., None, None] * eye
    return float((emp - lim).norm() / lim.norm())


#: Largest N·d_y for which :func:`flin_distance` builds the [N·d_y]² training kernels.
FLIN_MAX_ENTRIES = 2048  # an eigh of 2048² takes ~1 s on 2 cores


def flin_distance(
    model: object, x_train: Tensor, y_train: Tensor, x_test: Tensor, *, lr: float, steps: int
) -> float | None:
    """RMS(F_lin^{Θ0} − F_lin^{Θ∞}) / RMS(F_lin^{Θ∞} − F0) on ``x_test`` after ``steps`` GD steps.

    Both are full-batch GD on the mean MSE in closed form (:func:`weakcorr.limits.gd_mse`)
    from the network's own outputs F0: with its empirical kernel Θ0 and with Θ∞ at its
    widths (``at_model_widths``), so the difference is the finite-width kernel's alone,
    relative to what training changed.  ``None`` when the model is not a weakcorr MLP (or a
    mup one) or N·d_y > :data:`FLIN_MAX_ENTRIES`.
    """
    from .ntk import empirical_ntk

    try:
        spec = spec_of(model, None, None, True)
    except (TypeError, ValueError):
        return None
    if len(x_train) * spec.d_out > FLIN_MAX_ENTRIES:
        return None
    f64 = torch.float64
    xt, xe = x_train.detach(), x_test.detach()
    with torch.no_grad():
        f_tr, f_te = model(xt).to(f64), model(xe).to(f64)  # type: ignore[operator]
    y = y_train.detach().to(f64)
    k0_tt = empirical_ntk(model, xt).to(f64)            # type: ignore[arg-type]
    k0_et = empirical_ntk(model, xe, xt).to(f64)        # type: ignore[arg-type]
    _, kinf_tt = kernels(spec, xt.to(f64), None, want_ntk=True, diagonal=False)
    _, kinf_et = kernels(spec, xe.to(f64), xt.to(f64), want_ntk=True, diagonal=False)
    assert kinf_tt is not None and kinf_et is not None
    dev = k0_tt.device
    _, fin = linear_gd(k0_tt, y, f_tr, lr, steps, k0_et, f_te)
    _, inf = linear_gd(kinf_tt.to(dev), y, f_tr, lr, steps, kinf_et.to(dev), f_te)  # k ⊗ I
    assert fin is not None and inf is not None
    moved = float((inf - f_te).pow(2).mean().sqrt())
    return float((fin - inf).pow(2).mean().sqrt()) / moved if moved > 0 else None


def linear_gd(
    k_train_train: Tensor, y_train: Tensor, f0: Tensor, lr: float, steps: int,
    k_test_train: Tensor | None, ft0: Tensor | None,
) -> tuple[Tensor, Tensor | None]:
    """The closed form behind :func:`weakcorr.limits.gd_mse` (arguments already checked)."""
    n, d_y = y_train.shape
    scalar = k_train_train.ndim == 2
    c = 2.0 * lr / (n * d_y)
    r0 = f0 - y_train
    if scalar:
        lam, vec = torch.linalg.eigh(k_train_train)
        proj = vec.T @ r0                                                  # [N, d_y]
    else:
        flat = k_train_train.permute(0, 2, 1, 3).reshape(n * d_y, n * d_y)
        lam, vec = torch.linalg.eigh(flat)
        proj = vec.T @ r0.reshape(-1)
    x = c * lam
    power = _one_minus_power(x, steps)            # 1 - (1 - cλ)^s
    safe = torch.where(lam == 0, 1.0, lam)
    g = torch.where(lam == 0, torch.full_like(lam, c * steps), power / safe)
    keep = 1.0 - power                            # (1 - cλ)^s
    if scalar:
        fx_train = y_train + vec @ (keep[:, None] * proj)
        coef = vec @ (g[:, None] * proj)                                   # [N, d_y]
    else:
        fx_train = y_train + (vec @ (keep * proj)).reshape(n, d_y)
        coef = (vec @ (g * proj)).reshape(n, d_y)
    if k_test_train is None:
        return fx_train, None
    if scalar:
        fx_test = ft0 - k_test_train @ coef
    else:
        fx_test = ft0 - torch.einsum("enij,nj->ei", k_test_train, coef)
    return fx_train, fx_test


def _one_minus_power(x: Tensor, steps: int) -> Tensor:
    """1 − (1 − x)^s, accurate for small |x| (expm1/log1p) and exact integer powers otherwise."""
    small = x.abs() < 0.5
    xs = torch.where(small, x, 0.0)
    stable = -torch.expm1(steps * torch.log1p(-xs))
    direct = 1.0 - (1.0 - x) ** steps
    return torch.where(small, stable, direct)
