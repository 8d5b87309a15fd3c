"""Taylor expansions of a model in its parameters around θ0 (paper Eq. 27).

:func:`linearize` returns the first-order model

.. math:: f_{lin}(\\theta)(x) = f(\\theta_0)(x) + J(\\theta_0)(x)\\,(\\theta - \\theta_0),

evaluated with one forward-mode pass (``torch.func.jvp``) — the Jacobian is never
formed.  :func:`taylor` gives the expansion to any order k,
f(θ0) + Σ_{m=1}^{k} ∇^m f(θ0)[Δ, …, Δ] / m!, by nested forward mode (exact).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Protocol

from torch import Tensor

from . import functional as F
from .functional import FunctionalModel

__all__ = ["ApplyFn", "linearize", "taylor"]


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


def linearize(fm: FunctionalModel) -> ApplyFn:
    """The linearization of ``fm`` around its θ0 (Eq. 27).

    Args:
        fm: the functional model; θ0 is ``fm.params`` (copied now: later changes to
            ``fm.params`` do not move the expansion point).

    Returns:
        ``f_lin(params, x)`` → [B, d_y] = f(θ0)(x) + J(θ0)(x)(params − θ0), one jvp per call.
        It is differentiable in ``params``; for training prefer the vjp at θ0 that
        :func:`weakcorr.train.paired_sgd` uses.

    Example:
        >>> import torch
        >>> fm = F.functional(torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(),
        ...                                       torch.nn.Linear(3, 1)))
        >>> f_lin = linearize(fm)
        >>> x = torch.randn(4, 2)
        >>> torch.equal(f_lin(fm.params, x), fm(fm.params, x))
        True
    """
    fm = _check_fm(fm)
    theta0 = {k: v.detach().clone() for k, v in fm.params.items()}

    def f_lin(params: Mapping[str, Tensor], x: Tensor) -> Tensor:
        delta = _delta(params, theta0)
        out, jd = F.jvp(fm, theta0, x, delta)
        return out + jd

    return f_lin


def taylor(fm: FunctionalModel, order: int) -> ApplyFn:
    """The Taylor expansion of ``fm`` in its parameters around θ0, to ``order``.

    .. math::

        f_{(k)}(\\theta)(x) = f(\\theta_0)(x) + \\sum_{m=1}^{k} \\frac{1}{m!}
        \\nabla^m f(\\theta_0)(x)[\\Delta, \\dots, \\Delta], \\qquad \\Delta = \\theta - \\theta_0

    Args:
        fm: the functional model (θ0 = ``fm.params``, copied now).
        order: k >= 1; ``order=1`` is :func:`linearize`. The m-th term costs ~2^m forward
            passes (nested forward mode, exact).

    Returns:
        ``f_k(params, x)`` → [B, d_y].

    Raises:
        ValueError: if ``order`` is not an integer >= 1.
    """
    fm = _check_fm(fm)
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"`order` must be an integer >= 1, got {order!r}; order=1 is linearize().")
    theta0 = {k: v.detach().clone() for k, v in fm.params.items()}

    def f_k(params: Mapping[str, Tensor], x: Tensor) -> Tensor:
        delta = _delta(params, theta0)
        out = fm(theta0, x)
        for m in range(1, order + 1):
            out = out + F.directional_derivative(fm, theta0, x, [delta] * m) / math.factorial(m)
        return out

    return f_k
