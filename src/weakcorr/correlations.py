"""Exact derivative correlations C^{D,d} (paper Eq. 10–13) of a model at θ0.

.. math::

    \\mathfrak{C}^{D,d}(x_0; x_1..x_d)_{i_0; i_1..i_d}^{\\alpha_{d+1}..\\alpha_{D+d}}
    = \\frac{\\eta^{D/2+d}}{D!\\,d!}\\,\\nabla^{D+d} F_{i_0}(\\theta)(x_0)
      [\\nabla F_{i_1}(\\theta)(x_1), \\dots, \\nabla F_{i_d}(\\theta)(x_d),
       e_{\\alpha_{d+1}}, \\dots, e_{\\alpha_{D+d}}]

(Eq. 11; η is ``lr``).  Gradient directions ∇F_i(x) are rows of the Jacobian (vjps with
one-hot cotangents, vmapped); the mixed derivative is nested forward mode
(``torch.func.jvp``, Eq. 13).  Everything is exact autodiff: no finite differences.

Any ``nn.Module`` (CNNs, ResNets, transformers, embeddings, tied weights, [B] outputs) works
through :class:`weakcorr.functional.FunctionalModel` (exact decompositions of the norm layers,
math attention: see :mod:`weakcorr.functional`).  The nested-forward routes (:func:`tensor`,
:func:`norm`, the ``generic`` :func:`diagonal` and :func:`paper_estimate`) run the derivative
self-check :func:`weakcorr.functional.check_derivatives` once per model (on two inputs) and
raise, naming the module, rather than return a wrong number.

Functions:
    :func:`tensor` — the whole output-index tensor of C^{0,d} for a batch of input tuples.
    :func:`diagonal` — C^{0,d}(x; x..x)_{i; i..i}, what the paper's experiments average.
    :func:`norm` — the subordinate norm (Eq. 1 / 32) of C^{D,d} over all free indices.
    :func:`paper_estimate` — the paper's sampled estimator (Eq. 25), with exact entries.
    :func:`hessian_gradient_ratio` — ‖∇²f‖₂ / ‖∇f‖ (Liu, Zhu & Belkin 2020).
    :func:`by_group` — C^{0,1} and C^{0,2} on the diagonal split by parameter group (layer),
    with the mixed-group terms of C^{0,2}, summing to the totals (:mod:`weakcorr._per_layer`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from enum import StrEnum

import torch
from torch import Tensor
from torch.func import grad as _grad
from torch.func import jvp as _jvp
from torch.func import vmap

from . import _correlations as _c
from . import _mlp_taylor
from . import functional as F
from ._per_layer import GroupBreakdown as GroupBreakdown
from ._per_layer import by_group as by_group
from .functional import FunctionalModel
from .tensornorm import NormResult, alternating_maximization, subordinate_norm
from .tensornorm import symmetric_spectral_norm as _symmetric_spectral_norm

__all__ = [
    "DiagonalMethod",
    "GroupBreakdown",
    "NormResult",
    "PaperNormalization",
    "by_group",
    "diagonal",
    "hessian_gradient_ratio",
    "hessian_spectral_norm",
    "norm",
    "paper_estimate",
    "tensor",
]

Progress = _c.Progress


class DiagonalMethod(StrEnum):
    """How :func:`diagonal` computes the derivatives.

    ``auto`` (the default): ``mlp`` when the model is an MLP it recognises, else ``generic``.
    Both are exact autodiff and agree to rounding, so the faster one is chosen.
    ``generic``: any ``nn.Module`` (vmapped vjps + nested jvps).
    ``mlp``: exact Taylor-mode propagation for ``weakcorr.models.MLP`` and ``nn.Sequential``
    MLPs (Linear layers and elementwise activations), using the rank-one structure of each
    layer's gradient; far faster at large widths (benchmarks/RESULTS.md, "Taylor-mode
    correlations vs generic"; tested against ``generic``).
    """

    AUTO = "auto"
    GENERIC = "generic"
    MLP = "mlp"


class PaperNormalization(StrEnum):
    """The factor S of Eq. 25, which the paper leaves undefined.

    ``rms``: S = sqrt(|X|), so the estimate is the root mean square over inputs and
    outputs (the reading of DESIGN.md); the default.
    ``n_inputs``: S = |X|, the reading that matches the 1/(10|X|) of Eq. 24.
    """

    RMS = "rms"
    N_INPUTS = "n_inputs"


def _check_method(method: object, fm: FunctionalModel | None = None) -> DiagonalMethod:
    """Validate ``method``; ``auto`` resolves to ``mlp`` when the model is an MLP it supports."""
    allowed = [m.value for m in DiagonalMethod]
    if method not in allowed:
        raise ValueError(f"`method` must be one of {allowed}, got {method!r}.")
    method_ = DiagonalMethod(method)
    if method_ is DiagonalMethod.AUTO:
        try:
            _mlp_taylor.mlp_steps(fm)
        except ValueError:
            return DiagonalMethod.GENERIC
        return DiagonalMethod.MLP
    return method_


def _prefactor(lr: float, D: int, d: int) -> float:
    return lr ** (D / 2 + d) / (math.factorial(D) * math.factorial(d))


def tensor(
    fm: FunctionalModel,
    x0: Tensor,
    xs: Sequence[Tensor],
    *,
    lr: float,
    params: Mapping[str, Tensor] | None = None,
    allow_high_order: bool = False,
    max_memory_gb: float = 4.0,
    progress: Progress | None = None,
) -> Tensor:
    """The output-index tensor of C^{0,d} (Eq. 11 with D = 0) for a batch of input tuples.

    ``out[b, i0, i1, ..., id] = η^d/d! · ∇^d F_{i0}(x0[b])[∇F_{i1}(xs[0][b]), ..., ∇F_{id}(xs[d-1][b])]``.
    Inputs may repeat or differ (Def. D.1).  For d = 1 this is the empirical NTK block
    η ∇F(x0)·∇F(x1) (Eq. 9, 12).  Cost: B · d_y^d nested jvps of depth d, vmapped.

    Args:
        fm: the functional model.
        x0: [B, ...], the inputs of the differentiated output.
        xs: d >= 1 batches [B, ...], the inputs of the gradient directions.
        lr: η > 0.
        params: θ (default θ0 = ``fm.params``).
        allow_high_order: allow d > 6.
        max_memory_gb: budget for the parameter-sized blocks (chunked automatically).
        progress: ``progress(n_done, n_total)`` after each chunk (default: nothing).

    Returns:
        Tensor [B, d_y, d_y, ..., d_y] with d + 1 output axes.

    Raises:
        ValueError: on an empty ``xs``, mismatched batch sizes, a non-2-D model output,
            a bad ``lr``, or non-finite derivatives.

    Example:
        >>> import torch, weakcorr as wc
        >>> fm = wc.functional(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(),
        ...                                          torch.nn.Linear(4, 2)))
        >>> x = torch.randn(5, 3)
        >>> tensor(fm, x, [x, x], lr=0.1).shape
        torch.Size([5, 2, 2, 2])
    """
    fm = _c.check_fm(fm)
    lr = _c.check_lr(lr)
    if isinstance(xs, Tensor) or not isinstance(xs, Sequence):
        raise ValueError(
            f"`xs` must be a list of d >= 1 input batches, got {type(xs).__name__}; "
            "for C^{0,1} pass xs=[x1]."
        )
    d = _c.check_int(len(xs), "len(xs)", 1, "pass at least one batch of inputs, xs=[x1].")
    _c.check_total_order(0, d, allow_high_order)
    params_ = _c.resolve_params(fm, params)
    x0 = _c.as_batch(fm, x0, "x0")
    xs_ = [_c.as_batch(fm, x, f"xs[{k}]") for k, x in enumerate(xs)]
    for k, x in enumerate(xs_):
        if x.shape[0] != x0.shape[0]:
            raise ValueError(
                f"`xs[{k}]` has batch size {x.shape[0]} but `x0` has {x0.shape[0]}; every "
                "batch holds one input per tuple, so they must have the same length."
            )
    d_y = _c.output_dim(fm, params_, x0, "x0")
    _c.self_check(fm, params_, x0)
    raw = _c.tensor_raw(
        fm, params_, x0, xs_, d_y,
        max_memory_gb=max_memory_gb, progress=progress or _c.no_progress,
    )
    return _c.check_finite(raw * _prefactor(lr, 0, d), f"C^(0,{d})", "x0/xs")


def diagonal(
    fm: FunctionalModel,
    X: Tensor,
    *,
    d: int | None = None,
    lr: float,
    params: Mapping[str, Tensor] | None = None,
    orders: Sequence[int] | None = None,
    method: str = "auto",
    allow_high_order: bool = False,
    max_memory_gb: float = 4.0,
    progress: Progress | None = None,
) -> Tensor | dict[int, Tensor]:
    """The diagonal C^{0,d}(x; x, ..., x)_{i; i, ..., i} for every input and output.

    .. math::

        \\mathfrak{C}^{0,d}(x; x..x)_{i;i..i} = \\frac{\\eta^d}{d!}\\,
        \\nabla^d F_i(x)[g, \\dots, g], \\qquad g = \\nabla F_i(x)

    (Eq. 11 with equal inputs and indices; the quantity averaged in Figs. 1–3).  All the
    orders up to max(orders) come out of one nested call along g (the primal outputs of
    each jvp level are the lower orders), so ``orders=(2, 3)`` costs one depth-3 nest.

    Args:
        fm: the functional model.
        X: [B, ...] inputs.
        d: the order (>= 1); give exactly one of ``d`` and ``orders``.
        lr: η > 0.
        params: θ (default θ0).
        orders: several orders at once, e.g. ``(2, 3)``.
        method: ``"auto"`` (default: ``mlp`` when the model is one, else ``generic``),
            ``"generic"`` (any module) or ``"mlp"`` (fast exact path for MLPs), see
            :class:`DiagonalMethod`.
        allow_high_order: allow orders > 6.
        max_memory_gb: budget for the [chunk, N] gradient blocks (chunked automatically).
        progress: ``progress(n_done, n_total)`` after each chunk of (input, output) pairs.

    Returns:
        Tensor [B, d_y] if ``d`` is given, else ``{order: Tensor [B, d_y]}``.

    Raises:
        ValueError: on bad orders, ``lr``, ``method``, inputs, or non-finite derivatives.
    """
    fm = _c.check_fm(fm)
    lr = _c.check_lr(lr)
    method_ = _check_method(method, fm)
    if (d is None) == (orders is None):
        raise ValueError(
            f"give exactly one of `d` and `orders`, got d={d!r}, orders={orders!r}; "
            "e.g. d=2 or orders=(2, 3)."
        )
    if orders is None:
        wanted = [_c.check_int(d, "d", 1, "the correlation order d starts at 1 (the NTK).")]
    else:
        if isinstance(orders, (int, str)) or not isinstance(orders, Sequence) or not orders:
            raise ValueError(
                f"`orders` must be a non-empty sequence of integers >= 1, got {orders!r}; "
                "e.g. orders=(2, 3)."
            )
        wanted = sorted(
            {_c.check_int(k, "orders", 1, "orders start at 1 (the NTK).") for k in orders}
        )
    _c.check_total_order(0, max(wanted), allow_high_order)
    params_ = _c.resolve_params(fm, params)
    X = _c.as_batch(fm, X, "X")
    d_y = _c.output_dim(fm, params_, X, "X")
    if method_ is DiagonalMethod.GENERIC:
        _c.self_check(fm, params_, X)
    run = _DIAGONAL_METHODS[method_]
    raw = run(
        fm, params_, X, d_y, max(wanted),
        max_memory_gb=max_memory_gb, progress=progress or _c.no_progress,
    )
    out = {
        k: _c.check_finite(raw[k] * _prefactor(lr, 0, k), f"C^(0,{k}) diagonal", "X")
        for k in wanted
    }
    return out[wanted[0]] if orders is None else out


_DIAGONAL_METHODS = {
    DiagonalMethod.GENERIC: _c.diagonal_raw,
    DiagonalMethod.MLP: _mlp_taylor.diagonal_raw,
}


def _single(fm: FunctionalModel, x: Tensor, name: str) -> Tensor:
    x = _c.as_batch(fm, x, name)
    if x.shape[0] != 1:
        raise ValueError(
            f"`{name}` must be a single input as a batch of one [1, ...], got batch size "
            f"{x.shape[0]}; pass `{name}[b:b+1]`."
        )
    return x


def norm(
    fm: FunctionalModel,
    x0: Tensor,
    xs: Sequence[Tensor],
    *,
    D: int,
    lr: float,
    params: Mapping[str, Tensor] | None = None,
    restarts: int = 8,
    tol: float = 1e-6,
    max_iter: int = 200,
    generator: torch.Generator | None = None,
    allow_high_order: bool = False,
    matrix_free: bool | None = None,
    max_memory_gb: float = 4.0,
) -> NormResult:
    """The subordinate norm (Eq. 1 / Eq. 32) of C^{D,d}(x0; x1..xd) over all free indices.

    The free indices are i0..id (d + 1 output indices) and α_{d+1}..α_{D+d} (D parameter
    indices), so the norm is the maximum of the multilinear form

    .. math::

        \\frac{\\eta^{D/2+d}}{D!\\,d!}\\,\\nabla^{D+d}(u_0\\cdot F)(x_0)
        [J(x_1)^T u_1, \\dots, J(x_d)^T u_d, w_1, \\dots, w_D]

    over unit vectors u_k ∈ R^{d_y}, w_j ∈ R^N.  D = 0: the explicit tensor of
    :func:`tensor` and :func:`weakcorr.tensornorm.subordinate_norm` (exact where it is a
    matrix, d = 1).  D >= 1: matrix-free alternating maximisation (higher-order power
    method): each update is one autodiff gradient of the form with respect to one
    argument; ``restarts`` random starts, the best value is reported (a lower bound,
    attained by explicit vectors).

    D = 1 with few output-index tuples (d_y^(d+1) <= 1000 gradient rows within
    ``max_memory_gb``) is reduced exactly to an explicit tensor instead (the default,
    ``matrix_free=None``): the form is ``⟨c(u), w⟩`` with ``c(u) = Σ u0_{i0}..ud_{id} c_{i0..id}``
    ∈ R^N, so ``max_w = ‖c(u)‖``; the Gram matrix G of the rows c_{i0..id} (one gradient in w
    each) gives R = U Λ^{1/2} (G = U Λ Uᵀ) with ‖R(u)‖ = ‖c(u)‖, and the norm is
    ``subordinate_norm(R)`` on a [d_y]^(d+1) × d_y^(d+1) tensor.  ``matrix_free=True`` forces
    the power method.  ``upper_bound``: where it is cheap, min of the mode-unfolding spectral
    norms and the Frobenius norm (D = 0, and D = 1 with the gradient rows), else None.

    Args:
        fm: the functional model.
        x0: a single input as a batch of one, [1, ...].
        xs: d >= 1 single inputs [1, ...].
        D: number of free parameter indices (>= 0).
        lr: η > 0.
        params: θ (default θ0).
        restarts: random starts (>= 1).
        tol: relative change per sweep at which a run stops.
        max_iter: maximum sweeps per run.
        generator: for the random starts.
        allow_high_order: allow D + d > 6.
        matrix_free: None (auto), True (always the power method), False (require the
            explicit reduction: D = 1 and the gradient rows must fit).
        max_memory_gb: budget for the gradient rows of the D = 1 reduction.

    Returns:
        :class:`weakcorr.tensornorm.NormResult` (value, converged, iterations, upper_bound).

    Raises:
        ValueError: on bad orders, inputs, ``lr``, or non-finite derivatives.
    """
    fm = _c.check_fm(fm)
    lr = _c.check_lr(lr)
    D = _c.check_int(D, "D", 0, "D counts free parameter indices: 0, 1, 2, ...")
    if isinstance(xs, Tensor) or not isinstance(xs, Sequence):
        raise ValueError(
            f"`xs` must be a list of d >= 1 single inputs, got {type(xs).__name__}; "
            "e.g. xs=[x1]."
        )
    d = _c.check_int(len(xs), "len(xs)", 1, "pass at least one input, xs=[x1].")
    _c.check_total_order(D, d, allow_high_order)
    restarts = _c.check_int(restarts, "restarts", 1, "pass e.g. restarts=8.")
    x0 = _single(fm, x0, "x0")
    xs_ = [_single(fm, x, f"xs[{k}]") for k, x in enumerate(xs)]
    if D == 0:
        T = tensor(fm, x0, xs_, lr=lr, params=params, allow_high_order=allow_high_order,
                   max_memory_gb=max_memory_gb)[0]
        return subordinate_norm(T, restarts=restarts, tol=tol, max_iter=max_iter,
                                generator=generator)
    params_ = _c.resolve_params(fm, params)
    d_y = _c.output_dim(fm, params_, x0, "x0")
    _c.self_check(fm, params_, x0)
    Js = []
    for xk in xs_:
        J = _c.jacobians(fm, params_, xk, d_y)
        Js.append(_c.check_finite(
            torch.cat([v[0].reshape(d_y, -1) for v in J.values()], dim=1), "a gradient", "xs"
        ))
    scale = _prefactor(lr, D, d)

    def form(*args: Tensor) -> Tensor:
        u0, us, ws = args[0], args[1 : d + 1], args[d + 1 :]
        dirs = [F.unflatten(u @ J, params_) for u, J in zip(us, Js)]
        dirs += [F.unflatten(w, params_) for w in ws]
        return scale * (u0 @ _c.mixed_derivative(fm, params_, x0[0], dirs))

    def partial(vs: list[Tensor], k: int) -> Tensor:
        return _grad(form, argnums=k)(*vs)

    n_rows = d_y ** (d + 1)
    rows_fit = (
        D == 1
        and n_rows <= 1000
        and _c.pair_chunk_size(fm, n_rows, max_memory_gb) >= n_rows
    )
    if matrix_free is False and not rows_fit:
        raise ValueError(
            f"`matrix_free=False` needs D = 1 and d_y^(d+1) = {n_rows} gradient rows within "
            f"`max_memory_gb`={max_memory_gb}; got D = {D}. Use matrix_free=None."
        )
    if rows_fit and not matrix_free:
        rows = _gradient_rows_d1(form, d, d_y, fm, max_memory_gb)  # [d_y^(d+1), N]
        evals, evecs = torch.linalg.eigh(rows @ rows.T)
        R = evecs * evals.clamp_min(0).sqrt()  # R Rᵀ = G
        return subordinate_norm(R.reshape([d_y] * (d + 1) + [n_rows]), restarts=restarts,
                                tol=tol, max_iter=max_iter, generator=generator)
    sizes = [d_y] * (d + 1) + [fm.n_params] * D
    best = (-1.0, False, 0)
    for _ in range(restarts):
        start = [
            torch.randn(n, generator=generator, dtype=fm.dtype).to(fm.device) for n in sizes
        ]
        value, _, converged, sweeps = alternating_maximization(
            partial, start, tol=tol, max_iter=max_iter
        )
        if value > best[0]:
            best = (value, converged, sweeps)
    upper = None
    if rows_fit:
        upper = float(_gradient_rows_d1(form, d, d_y, fm, max_memory_gb).norm())
    return NormResult(best[0], best[1], best[2], upper)


def _gradient_rows_d1(form, d: int, d_y: int, fm: FunctionalModel, max_memory_gb: float) -> Tensor:
    """The rows c_{i0..id} ∈ R^N of C^{1,d}: one gradient in w per output-index tuple (the form
    is linear in w, so the gradient at w = 0 is the row).  Returns [d_y^(d+1), N], row-major."""
    eye = torch.eye(d_y, dtype=fm.dtype, device=fm.device)
    grid = torch.cartesian_prod(*[torch.arange(d_y)] * (d + 1)).reshape(-1, d + 1)
    w0 = torch.zeros(fm.n_params, dtype=fm.dtype, device=fm.device)
    g_w = vmap(_grad(form, argnums=d + 1), in_dims=(*([0] * (d + 1)), None))
    size = _c.pair_chunk_size(fm, grid.shape[0], max_memory_gb, vectors_per_item=d + 2)
    out = []
    for sl in _c.chunks(grid.shape[0], size):
        out.append(g_w(*[eye[grid[sl, k]] for k in range(d + 1)], w0))
    return _c.check_finite(torch.cat(out), "a row of C^(1,d)", "x0/xs")


def paper_estimate(
    fm: FunctionalModel,
    X: Tensor,
    *,
    d: int,
    lr: float,
    params_per_layer: int = 60,
    generator: torch.Generator | None,
    normalization: str = "rms",
    params: Mapping[str, Tensor] | None = None,
    method: str = "auto",
    max_memory_gb: float = 4.0,
    progress: Progress | None = None,
) -> float:
    """The paper's sampled estimator of C^{0,d} (Eq. 25; d = 2, 3 in the paper).

    .. math::

        \\frac{\\eta^d}{d!}\\,\\frac{1}{S}\\sqrt{\\frac{1}{d_y}\\sum_{i=1}^{d_y}\\sum_{x\\in X}
        \\Big(\\frac{1}{|D|^d}\\sum_{\\alpha_1..\\alpha_d\\in D}
        \\partial_{\\alpha_1}f_i(x)\\cdots\\partial_{\\alpha_d}f_i(x)\\,
        \\partial_{\\alpha_1}\\cdots\\partial_{\\alpha_d}f_i(x)\\Big)^2}

    D is ``params_per_layer`` parameters drawn uniformly without replacement in each layer
    (a layer = the parameters under one module path, e.g. ``0.weight`` and ``0.bias``; the
    whole layer when it is smaller), |D| the total drawn.  Normalisation (the paper leaves
    S undefined): by default S = sqrt(|X|), i.e. the root mean square over inputs and
    outputs; ``normalization="n_inputs"`` takes S = |X| (the reading of Eq. 24).  The
    prefactor η^d/d! of Eq. 11, which Eq. 25 omits, is included so that ``lr`` enters as in
    the definition (with lr = 1, multiply by d! for the bare sum).  The inner sum is
    computed exactly: it equals ∇^d f_i(x)[g_D, ..., g_D] with g_D the gradient restricted
    to D (multilinearity), which is one nested jvp of exact autodiff entries, never finite
    differences.  With ``params_per_layer`` >= every layer's size, D is all N parameters and
    the estimate is ``sqrt(mean(diagonal(..., d=d)**2)) / N**d`` (RMS reading).

    Args:
        fm: the functional model.
        X: [B, ...] inputs.
        d: the order (>= 1).
        lr: η > 0.
        params_per_layer: |D| per layer (>= 1).
        generator: for the index sample (required keyword; None uses the global RNG).
        normalization: ``"rms"`` (default) or ``"n_inputs"``, see :class:`PaperNormalization`.
        params: θ (default θ0).
        method: ``"auto"`` (default), ``"generic"`` or ``"mlp"`` (exact Taylor-mode path, see
            :class:`DiagonalMethod`; the sampled directions become gathers over D).
        max_memory_gb: budget for the gradient blocks.
        progress: ``progress(n_done, n_total)`` after each chunk.

    Returns:
        The estimate, a float.
    """
    fm = _c.check_fm(fm)
    lr = _c.check_lr(lr)
    d = _c.check_int(d, "d", 1, "the correlation order d starts at 1; the paper uses 2 and 3.")
    _c.check_total_order(0, d, False)
    per_layer = _c.check_int(params_per_layer, "params_per_layer", 1, "the paper uses 60.")
    method_ = _check_method(method, fm)
    allowed = [n.value for n in PaperNormalization]
    if normalization not in allowed:
        raise ValueError(f"`normalization` must be one of {allowed}, got {normalization!r}.")
    params_ = _c.resolve_params(fm, params)
    X = _c.as_batch(fm, X, "X")
    d_y = _c.output_dim(fm, params_, X, "X")
    if method_ is DiagonalMethod.GENERIC:
        _c.self_check(fm, params_, X)
    masks, n_sampled = _c.sample_layer_masks(params_, per_layer, generator)
    raw = _DIAGONAL_METHODS[method_](
        fm, params_, X, d_y, d, max_memory_gb=max_memory_gb,
        progress=progress or _c.no_progress, mask=masks,
    )[d]
    inner = _c.check_finite(raw, f"the sampled C^(0,{d}) sums", "X") / float(n_sampled) ** d
    B = X.shape[0]
    S = math.sqrt(B) if normalization == PaperNormalization.RMS else float(B)
    return _prefactor(lr, 0, d) * float(inner.pow(2).sum().div(d_y).sqrt()) / S


def hessian_spectral_norm(
    fm: FunctionalModel,
    x: Tensor,
    *,
    output: int,
    params: Mapping[str, Tensor] | None = None,
    max_iter: int = 200,
    tol: float = 1e-8,
    generator: torch.Generator | None = None,
) -> NormResult:
    """‖∇²f_output(θ)(x)‖₂, the Hessian's spectral norm, by Lanczos on Hessian-vector products.

    Hessian-vector products are forward-over-reverse (jvp of the gradient); the Hessian is
    never formed.  ``x`` is a single input [1, ...].
    """
    fm = _c.check_fm(fm)
    params_ = _c.resolve_params(fm, params)
    x = _single(fm, x, "x")
    d_y = _c.output_dim(fm, params_, x, "x")
    output = _c.check_int(output, "output", 0, f"pick an output index in [0, {d_y}).")
    if output >= d_y:
        raise ValueError(f"`output` must be < d_y = {d_y}, got {output}.")

    def grad_fn(p: dict[str, Tensor]) -> dict[str, Tensor]:
        return _grad(lambda q: fm(q, x)[0, output])(p)

    def matvec(v: Tensor) -> Tensor:
        hv = _jvp(grad_fn, (params_,), (F.unflatten(v, params_),))[1]
        return F.flatten(hv)

    return _symmetric_spectral_norm(
        matvec, fm.n_params, dtype=fm.dtype, device=fm.device,
        max_iter=max_iter, tol=tol, generator=generator,
    )


def hessian_gradient_ratio(
    fm: FunctionalModel,
    x: Tensor,
    *,
    output: int | None = None,
    params: Mapping[str, Tensor] | None = None,
    max_iter: int = 200,
    tol: float = 1e-8,
    generator: torch.Generator | None = None,
) -> float:
    """‖∇²f(θ)(x)‖₂ / ‖∇f(θ)(x)‖, the linearity measure of Liu, Zhu & Belkin (2020).

    Small values mean the model is close to linear in θ over a ball of radius ~‖∇f‖/‖∇²f‖.
    The Hessian's spectral norm comes from Lanczos on Hessian-vector products
    (:func:`hessian_spectral_norm`).

    Args:
        fm: the functional model.
        x: a single input [1, ...].
        output: the output index; None takes the maximum of the ratio over all outputs.
        params: θ (default θ0).
        max_iter, tol, generator: Lanczos settings.

    Returns:
        The ratio, a float.

    Raises:
        ValueError: on a bad input or output index, or a zero / non-finite gradient.
    """
    fm = _c.check_fm(fm)
    params_ = _c.resolve_params(fm, params)
    x = _single(fm, x, "x")
    d_y = _c.output_dim(fm, params_, x, "x")
    outputs = range(d_y) if output is None else [output]
    J = _c.jacobians(fm, params_, x, d_y)
    grad_norms = torch.cat([v[0].reshape(d_y, -1) for v in J.values()], dim=1).norm(dim=1)
    _c.check_finite(grad_norms, "the gradient norm", "x")
    ratios = []
    for i in outputs:
        h = hessian_spectral_norm(fm, x, output=i, params=params_, max_iter=max_iter, tol=tol,
                                  generator=generator)
        g = float(grad_norms[i])
        if g == 0.0:
            raise ValueError(
                f"the gradient of output {i} at `x` is zero, so the ratio is undefined; "
                "pick another input, output or parameters."
            )
        ratios.append(h.value / g)
    return max(ratios)
