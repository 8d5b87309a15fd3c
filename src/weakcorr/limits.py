"""The infinite-width limit of a weakcorr MLP, and linearized training from a kernel alone.

* :func:`nngp` and :func:`ntk` — the NNGP kernel K(x, x') = lim E[f_i(x) f_i(x')] and the
  neural tangent kernel Θ∞ (paper Eq. 9 with η = 1, as width → ∞) of a network built by
  :func:`weakcorr.models.mlp`, any depth, activation, parameterization and bias.
* :func:`gd_mse` — F_lin after s full-batch gradient-descent steps on the mean-squared error,
  in closed form from a kernel (Eq. 8 solved through the eigendecomposition): with the
  empirical Θ0 it is the finite-width network's linearization, with Θ∞ the infinite-width
  prediction.

Recursion (the network computes z_l = a_l W_l h_{l-1} + c_l b_l, h_l = φ(z_l),
f = output_scale · z_{L+1}; see :mod:`weakcorr._limits` for the per-layer coefficients):

.. math::

    K_1 = \\omega_1 \\tfrac{x\\cdot x'}{n_0} + \\beta_1, \\quad
    K_l = \\omega_l\\, \\mathbb E[\\phi(u)\\phi(v)] + \\beta_l, \\quad
    \\Theta_l = T_l + \\rho_l\\, \\mathbb E[\\phi'(u)\\phi'(v)]\\, \\Theta_{l-1},

with (u, v) ~ N(0, K_{l-1}) on the pair (x, x'), T_l the layer's own parameters' term, and
NNGP = output_scale² K_{L+1}, NTK = output_scale² Θ_{L+1}.  For the ``ntk``
parameterization ω = ρ = σ_w², β = σ_b², T_l = K_l: the kernels of neural-tangents'
``stax.serial(Dense(W_std=σ_w, b_std=σ_b, parameterization='ntk'), φ, ..., Dense(...))``.

Parameterizations (what is returned):

* ``ntk`` — the limit itself (width-independent).
* ``standard`` (nn.Linear's U(±1/√fan_in) weights and biases): the NNGP converges (hidden-layer
  bias variances 1/(3 n) vanish, the first layer's 1/(3 n_0) stays); the NTK grows like the
  width, so :func:`ntk` returns **lim Θ_n / n_1**, n_1 the first hidden width, the ratios
  n_l/n_1 held fixed: multiply by n_1 for the leading-order kernel of a finite network
  (the first layer's weights and all biases are O(1) and drop out of the limit).  The
  first-layer pre-activations are sums of n_0 uniform draws, Gaussian only as n_0 → ∞: the
  limit here is the Gaussian one, with a relative error of the order of the input's excess
  kurtosis 1.2 Σ x_i⁴ / (Σ x_i²)² (~1/n_0 for spread-out inputs; 0 for ntk and mup).
* ``mup``: the NTK converges at fixed width ratios (every term depends on ratios only); the
  output's NNGP variance σ_w² E/n_L vanishes, so :func:`nngp` returns output_scale² σ_b²
  (the output bias) — n_L times the rest is finite.  mup models do not record σ_w, σ_b:
  pass them.

Activations: ReLU (arc-cosine kernel, Cho & Saul 2009) and erf (arcsine kernel, Williams
1997) in closed form; GELU (exact), sigmoid and tanh by 2-D quadrature:
the trapezoidal rule on [-9, 9] in the standard-normal variables (exponentially convergent
for these analytic integrands; Gauss–Hermite spreads its nodes into the tails and is far
less accurate at large variances), ``quadrature`` nodes per dimension, by default
max(24, ⌈60 √K⌉) per layer (K the layer's largest variance, at most 512): each dual kernel
within 1e-8 of the exact one relative to √(E[φ(u)²]E[φ(v)²]), measured in float64 against
twice the nodes and against Gauss–Hermite for K in [0.01, 30] and every correlation
(tests/math/test_limits.py); through L layers the errors add (a depth-3 tanh NTK on
784-dimensional inputs: 5e-8 of its largest entry against 128 nodes).
Cost: O(B1·B2·Q²) per layer for those three (ReLU and erf: O(B1·B2)).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from . import _limits
from ._limits import DEFAULT_QUADRATURE

__all__ = ["DEFAULT_QUADRATURE", "gd_mse", "nngp", "ntk"]


def nngp(
    model: nn.Module,
    x1: Tensor,
    x2: Tensor | None = None,
    *,
    sigma_w: float | None = None,
    sigma_b: float | None = None,
    trace_outputs: bool = False,
    diagonal_inputs: bool = False,
    per_output: bool = False,
    quadrature: int | None = DEFAULT_QUADRATURE,
    at_model_widths: bool = False,
) -> Tensor:
    """The infinite-width NNGP kernel lim E[f_i(x1_a) f_j(x2_b)] = K(x1_a, x2_b) δ_ij.

    Args:
        model: a network from :func:`weakcorr.models.mlp` (its architecture and
            parameterization are read; the parameter values are not used).
        x1: inputs [B1, d_in].
        x2: inputs [B2, d_in]; ``None`` means ``x1``.
        sigma_w: σ_w of a ``mup`` model (required there); for ``ntk`` it is read from the
            model (giving it checks it); not for ``standard``.
        sigma_b: σ_b, as ``sigma_w``.
        trace_outputs: return the sum over outputs Σ_i K_ii = d_y·K, [B1, B2].
        diagonal_inputs: pair ``x1[b]`` with ``x2[b]`` only (``B1 == B2``).
        per_output: return the scalar kernel K [B1, B2] (neural-tangents' convention).
        quadrature: quadrature nodes per dimension (GELU, sigmoid, tanh); ``None`` (default)
            chooses them per layer for an error below 1e-8 (see the module docstring).
        at_model_widths: evaluate the recursion at the model's own widths, keeping the terms
            that vanish as the width grows (``standard``: the kernel itself with its O(1)
            first-layer and bias terms, not divided by n_1; ``mup``: the output's σ_w² E/n_L
            NNGP term; ``ntk``: no change) — the mean-field kernel a finite network
            fluctuates around, O(n^-1/2) away (what ``diagnose`` compares against).

    Returns:
        ``[B1, B2, d_y, d_y]`` (K ⊗ I) by default, ``[B1, B2]`` with ``trace_outputs`` or
        ``per_output``, ``[B, d_y, d_y]`` / ``[B]`` with ``diagonal_inputs``; dtype of ``x1``.

    Raises:
        TypeError: ``model`` is not a weakcorr MLP.
        ValueError: bad inputs, ``sigma_w``/``sigma_b`` missing (mup) or inconsistent.

    Example:
        >>> import torch
        >>> from weakcorr.models import mlp
        >>> net = mlp(2, 8, 1, activation="relu", parameterization="ntk", sigma_b=0.0)
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
        >>> k = nngp(net, x, per_output=True)   # σ_w² E[relu u relu v], K_1 = I/2
        >>> [round(v, 6) for v in k.flatten().tolist()]
        [0.25, 0.079577, 0.079577, 0.25]
    """
    return _kernel(model, x1, x2, "nngp", sigma_w, sigma_b, trace_outputs, diagonal_inputs,
                   per_output, quadrature, at_model_widths)


def ntk(
    model: nn.Module,
    x1: Tensor,
    x2: Tensor | None = None,
    *,
    sigma_w: float | None = None,
    sigma_b: float | None = None,
    trace_outputs: bool = False,
    diagonal_inputs: bool = False,
    per_output: bool = False,
    quadrature: int | None = DEFAULT_QUADRATURE,
    at_model_widths: bool = False,
) -> Tensor:
    """The infinite-width NTK Θ∞(x1_a, x2_b)_{ij} = Θ∞(x1_a, x2_b) δ_ij (η = 1).

    The limit of :func:`weakcorr.ntk.empirical_ntk` (``lr=1``) at initialisation as every
    hidden width grows at fixed ratios; for the ``standard`` parameterization the limit of
    ``empirical_ntk / n_1`` (see the module docstring).  Arguments and shapes as
    :func:`nngp`.

    Example:
        >>> import torch
        >>> from weakcorr.models import mlp
        >>> net = mlp(2, 8, 1, activation="relu", parameterization="ntk", sigma_b=0.0)
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
        >>> k = ntk(net, x, per_output=True)   # K_2 + E[relu' relu'] K_1 (K_1 off-diagonal = 0)
        >>> [round(v, 6) for v in k.flatten().tolist()]
        [0.5, 0.079577, 0.079577, 0.5]
    """
    return _kernel(model, x1, x2, "ntk", sigma_w, sigma_b, trace_outputs, diagonal_inputs,
                   per_output, quadrature, at_model_widths)


def _kernel(
    model: nn.Module, x1: Tensor, x2: Tensor | None, which: str, sigma_w: float | None,
    sigma_b: float | None, trace_outputs: bool, diagonal_inputs: bool, per_output: bool,
    quadrature: int | None, at_model_widths: bool,
) -> Tensor:
    if not isinstance(at_model_widths, bool):
        raise TypeError(f"`at_model_widths` must be True or False, got {at_model_widths!r}.")
    spec = _limits.spec_of(model, sigma_w, sigma_b, at_model_widths)
    _check_inputs(spec.d_in, x1, x2, diagonal_inputs)
    if quadrature is not None and (isinstance(quadrature, bool) or not isinstance(quadrature, int)
                                   or not 8 <= quadrature <= 2048):
        raise ValueError(
            f"`quadrature` must be None (automatic) or an integer in [8, 2048] (nodes per "
            f"dimension), got {quadrature!r}."
        )
    if trace_outputs and per_output:
        raise ValueError(
            "`trace_outputs` and `per_output` are exclusive (d_y·K against K); pass one of them."
        )
    k, theta = _limits.kernels(spec, x1, x2, want_ntk=which == "ntk", diagonal=diagonal_inputs,
                               order=quadrature)
    out = k if which == "nngp" else theta
    assert out is not None
    if per_output:
        return out
    if trace_outputs:
        return spec.d_out * out
    eye = torch.eye(spec.d_out, dtype=out.dtype, device=out.device)
    return out[..., None, None] * eye


def _check_inputs(d_in: int, x1: Tensor, x2: Tensor | None, diagonal: bool) -> None:
    for name, x in (("x1", x1), ("x2", x2)):
        if x is None and name == "x2":
            continue
        if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[0] < 1 or x.shape[1] != d_in:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"`{name}` must be a tensor [batch >= 1, {d_in}] (the model's d_in), got {got}."
            )
        if not x.is_floating_point():
            raise ValueError(f"`{name}` must be floating point, got {x.dtype}; use {name}.double().")
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"`{name}` has non-finite entries; the kernel would be NaN.")
    if x2 is not None and x2.dtype != x1.dtype:
        raise ValueError(f"`x2` has dtype {x2.dtype}, `x1` {x1.dtype}; convert one of them.")
    if diagonal and x2 is not None and len(x2) != len(x1):
        raise ValueError(
            f"`diagonal_inputs`=True pairs x1[b] with x2[b]: `x2` must have {len(x1)} rows, "
            f"got {len(x2)}."
        )


def gd_mse(
    k_train_train: Tensor,
    y_train: Tensor,
    *,
    lr: float,
    steps: int,
    fx_train_0: Tensor | None = None,
    k_test_train: Tensor | None = None,
    fx_test_0: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """F_lin after ``steps`` full-batch GD steps on the mean MSE, in closed form (Eq. 8).

    The loss is ``nn.MSELoss(reduction="mean")`` over the N·d_y entries (the library's
    convention, as :func:`weakcorr.train.kernel_dynamics`), so with Θ the kernel at η = 1
    (:func:`weakcorr.ntk.empirical_ntk` with ``lr=1`` for Θ0, :func:`ntk` for Θ∞), c = 2η/(N d_y):

    .. math::

        r_s = (I - c\\,\\Theta_{tt})^s r_0,\\qquad
        F_{test}(s) = F_{test}(0) - \\Theta_{et}\\, V g(\\Lambda) V^\\top r_0,\\quad
        g(\\lambda) = \\frac{1 - (1 - c\\lambda)^s}{\\lambda},

    with r = F_train − y, Θ_tt = V Λ Vᵀ (g(0) = c·s).  GD on this model is stable when
    η < N·d_y / λ_max (:func:`weakcorr.ntk.spectrum`'s ``critical_lr``).

    Args:
        k_train_train: Θ(x_train, x_train), [N, N, d_y, d_y] or the per-output scalar
            kernel [N, N] (then applied to every output: Θ = k ⊗ I).
        y_train: targets [N, d_y].
        lr: the learning rate η > 0.
        steps: the number of GD steps s >= 0.
        fx_train_0: F(θ0) on the training set, [N, d_y]; default 0 (the mean prediction
            over initialisations, as neural-tangents' predict functions).
        k_test_train: Θ(x_test, x_train), [E, N, d_y, d_y] or [E, N]; ``None``: no test output.
        fx_test_0: F(θ0) on the test set, [E, d_y]; default 0.

    Returns:
        ``(fx_train, fx_test)``: F_lin after ``steps`` steps on the training set [N, d_y] and
        on the test set [E, d_y] (``None`` without ``k_test_train``).

    Raises:
        ValueError: shapes that do not fit, ``lr <= 0``, negative ``steps``.
    """
    if not isinstance(y_train, Tensor) or y_train.ndim != 2:
        got = tuple(y_train.shape) if isinstance(y_train, Tensor) else type(y_train).__name__
        raise ValueError(f"`y_train` must be a tensor [N, d_y], got {got}.")
    n, d_y = y_train.shape
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"`lr` must be a finite number > 0 (the learning rate η), got {lr!r}.")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"`steps` must be an integer >= 0, got {steps!r}.")
    scalar = _check_kernel("k_train_train", k_train_train, n, n, d_y)
    f0 = _check_f("fx_train_0", fx_train_0, y_train, n, d_y)
    if k_test_train is not None:
        if not isinstance(k_test_train, Tensor) or k_test_train.ndim not in (2, 4):
            raise ValueError("`k_test_train` must be a tensor [E, N, d_y, d_y] or [E, N].")
        e = k_test_train.shape[0]
        if _check_kernel("k_test_train", k_test_train, e, n, d_y) != scalar:
            raise ValueError(
                "`k_test_train` and `k_train_train` must be both per-output [.., N] or both "
                "full [.., N, d_y, d_y] kernels."
            )
        ft0 = _check_f("fx_test_0", fx_test_0, y_train, e, d_y)
    else:
        k_test_train, ft0 = None, None
    return _limits.linear_gd(k_train_train, y_train, f0, lr, steps, k_test_train, ft0)


def _check_kernel(name: str, k: Tensor, rows: int, cols: int, d_y: int) -> bool:
    if not isinstance(k, Tensor):
        raise ValueError(f"`{name}` must be a tensor, got {type(k).__name__}.")
    if k.shape == (rows, cols):
        return True
    if k.shape == (rows, cols, d_y, d_y):
        return False
    raise ValueError(
        f"`{name}` must have shape {(rows, cols, d_y, d_y)} (as empirical_ntk) or {(rows, cols)} "
        f"(per-output kernel), got {tuple(k.shape)}."
    )


def _check_f(name: str, f: Tensor | None, like: Tensor, rows: int, d_y: int) -> Tensor:
    if f is None:
        return torch.zeros(rows, d_y, dtype=like.dtype, device=like.device)
    if not isinstance(f, Tensor) or f.shape != (rows, d_y):
        got = tuple(f.shape) if isinstance(f, Tensor) else type(f).__name__
        raise ValueError(f"`{name}` must be a tensor {(rows, d_y)}, got {got}.")
    return f
