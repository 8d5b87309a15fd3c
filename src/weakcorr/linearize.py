"""Taylor expansions of a model in its parameters around θ0 (paper Eq. 27).

:func:`linearize` returns the first-order model

.. math:: f_{lin}(\\theta)(x) = f(\\theta_0)(x) + J(\\theta_0)(x)\\,(\\theta - \\theta_0),

evaluated with one forward-mode pass (``torch.func.jvp``) — the Jacobian is never
formed.  :func:`taylor` gives the expansion to any order k,
f(θ0) + Σ_{m=1}^{k} ∇^m f(θ0)[Δ, …, Δ] / m!, by nested forward mode (exact).
Both return a :class:`TaylorModel`, a FunctionalModel, so the transforms compose (as
neural-tangents' ``empirical_ntk_fn(linearize(f, params))``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Protocol

from torch import Tensor

from . import functional as F
from .functional import FunctionalModel

__all__ = ["ApplyFn", "TaylorModel", "linearize", "taylor"]


class ApplyFn(Protocol):
    """``f(params, x) -> [B, d_y]`` with ``params`` a dict like ``fm.params``."""

    def __call__(self, params: Mapping[str, Tensor], x: Tensor) -> Tensor: ...


def _check_fm(fm: object) -> FunctionalModel:
    if not isinstance(fm, FunctionalModel):
        raise TypeError(
            f"`fm` must be a weakcorr FunctionalModel, got {type(fm).__name__}; "
            "convert a module with weakcorr.functional(model)."
        )
    return fm


def _delta(params: Mapping[str, Tensor], theta0: Mapping[str, Tensor]) -> dict[str, Tensor]:
    if set(params) != set(theta0):
        missing = sorted(set(theta0) - set(params))
        extra = sorted(set(params) - set(theta0))
        raise ValueError(
            f"`params` must have the model's parameter names; missing {missing}, "
            f"unexpected {extra}. Start from fm.params."
        )
    return F.sub(params, theta0)


class TaylorModel(FunctionalModel):
    """The Taylor expansion of a functional model in its parameters around θ0, to order k.

    .. math::

        f_{(k)}(\\theta)(x) = f(\\theta_0)(x) + \\sum_{m=1}^{k} \\frac{1}{m!}
        \\nabla^m f(\\theta_0)(x)[\\Delta, \\dots, \\Delta], \\qquad \\Delta = \\theta - \\theta_0

    (k = 1: Eq. 27).  A :class:`~weakcorr.functional.FunctionalModel` like any other, so the
    transforms compose: ``empirical_ntk(linearize(fm), x)`` is Θ(θ0) of ``fm`` and
    ``correlations.diagonal(linearize(fm), X, d=2)`` is exactly 0.  The fast paths that read a
    module's structure (the structured NTK, Taylor-mode correlations) do not apply to it
    (:func:`weakcorr._mlp.recognise_fm` refuses it); the generic autodiff paths do.

    Attributes:
        base: the expanded model.
        order: k.
        theta0: the expansion point (a copy of ``base.params`` when the expansion was made).
        params: starts at θ0, so ``model(model.params, x)`` is f(θ0)(x).
        module: ``base.module`` (for names and hooks; its forward pass is f, not f_(k)).
    """

    def __init__(self, base: FunctionalModel, order: int) -> None:
        super().__init__(base.module)
        self.base = base
        self.order = order
        self.theta0: dict[str, Tensor] = {k: v.detach().clone() for k, v in base.params.items()}
        self.params = {k: v.clone() for k, v in self.theta0.items()}
        self.buffers = dict(base.buffers)
        self._output_dim = base.output_dim

    def __call__(self, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
        """f_(k)(params)(x) → [B, d_y]: one jvp at θ0 for k = 1, ~2^m forward passes per term m."""
        delta = _delta(params, self.theta0)
        if self.order == 1:
            out, jd = F.jvp(self.base, self.theta0, x, delta)
            return out + jd
        out = self.base(self.theta0, x)
        for m in range(1, self.order + 1):
            out = out + F.directional_derivative(self.base, self.theta0, x, [delta] * m) / (
                math.factorial(m))
        return out

    def __repr__(self) -> str:
        return f"TaylorModel(order={self.order}, base={self.base!r})"


def linearize(fm: FunctionalModel) -> TaylorModel:
    """The linearization of ``fm`` around its θ0 (Eq. 27), as a functional model.

    Args:
        fm: the functional model; θ0 is ``fm.params`` (copied now: later changes to
            ``fm.params`` do not move the expansion point).

    Returns:
        A :class:`TaylorModel` of order 1: ``f_lin(params, x)`` → [B, d_y] =
        f(θ0)(x) + J(θ0)(x)(params − θ0), one jvp per call. It is differentiable in
        ``params`` and takes every function that takes a FunctionalModel
        (``empirical_ntk``, ``correlations``, ``linearize`` again); for training prefer the
        vjp at θ0 that :func:`weakcorr.train.paired_sgd` uses.

    Example:
        >>> import torch
        >>> fm = F.functional(torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(),
        ...                                       torch.nn.Linear(3, 1)))
        >>> f_lin = linearize(fm)
        >>> x = torch.randn(4, 2)
        >>> torch.equal(f_lin(fm.params, x), fm(fm.params, x))
        True
        >>> from weakcorr.ntk import empirical_ntk
        >>> torch.allclose(empirical_ntk(f_lin, x), empirical_ntk(fm, x))
        True
    """
    return TaylorModel(_check_fm(fm), 1)


def taylor(fm: FunctionalModel, order: int) -> TaylorModel:
    """The Taylor expansion of ``fm`` in its parameters around θ0, to ``order``.

    .. math::

        f_{(k)}(\\theta)(x) = f(\\theta_0)(x) + \\sum_{m=1}^{k} \\frac{1}{m!}
        \\nabla^m f(\\theta_0)(x)[\\Delta, \\dots, \\Delta], \\qquad \\Delta = \\theta - \\theta_0

    Args:
        fm: the functional model (θ0 = ``fm.params``, copied now).
        order: k >= 1; ``order=1`` is :func:`linearize`. The m-th term costs ~2^m forward
            passes (nested forward mode, exact).

    Returns:
        A :class:`TaylorModel`: ``f_k(params, x)`` → [B, d_y], a FunctionalModel.

    Raises:
        ValueError: if ``order`` is not an integer >= 1.
    """
    fm = _check_fm(fm)
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"`order` must be an integer >= 1, got {order!r}; order=1 is linearize().")
    return TaylorModel(fm, order)
