"""Per-group (per-layer) breakdown of C^{0,1} (the NTK) and C^{0,2} on the diagonal.

With g = ∇_θ F_i(x) split into parameter groups g = Σ_G g_G (G a set of named parameters,
e.g. one layer's weight and bias),

.. math::

    \\mathfrak C^{0,1}(x;x)_{i;i} = \\eta\\, g^\\top g = \\sum_G \\eta\\, |g_G|^2, \\qquad
    \\mathfrak C^{0,2}(x;x,x)_{i;i,i} = \\tfrac{\\eta^2}{2} g^\\top H g
    = \\sum_{G, G'} \\tfrac{\\eta^2}{2}\\, g_G^\\top H\\, g_{G'}

(Eq. 11, H = ∇²F_i(x)): the group terms of C^{0,1} and the group-pair terms of C^{0,2}
(diagonal: within a group; off-diagonal: mixed) add up to the totals exactly.  Each
H g_{G'} is one forward-over-reverse product (jvp of the gradient), vmapped over outputs.
Exposed as :func:`weakcorr.correlations.by_group`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from torch.func import grad as _grad
from torch.func import jvp as _jvp
from torch.func import vmap

from .functional import FunctionalModel, functional

__all__ = ["GroupBreakdown", "by_group", "default_groups", "summary"]


@dataclasses.dataclass(frozen=True)
class GroupBreakdown:
    """Result of :func:`by_group`.

    Attributes:
        groups: the group names, in order.
        members: the parameter names of each group.
        c01: C^{0,1}(x;x)_{i;i} per group, [G, B, d_y]; ``c01.sum(0)`` is the total.
        c02: C^{0,2}(x;x,x)_{i;i,i} per group pair, [G, G, B, d_y], symmetric in the first
            two axes; ``c02.sum((0, 1))`` is the total, ``c02.diagonal().movedim(-1, 0)`` the
            within-group terms.
    """

    groups: tuple[str, ...]
    members: tuple[tuple[str, ...], ...]
    c01: Tensor
    c02: Tensor

    @property
    def c01_total(self) -> Tensor:
        """Σ_G C^{0,1}_G, [B, d_y]."""
        return self.c01.sum(0)

    @property
    def c02_total(self) -> Tensor:
        """Σ_{G,G'} C^{0,2}_{G,G'}, [B, d_y]."""
        return self.c02.sum((0, 1))


def default_groups(names: Sequence[str]) -> dict[str, list[str]]:
    """One group per module: a parameter's name without its last component (``linears.0``)."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(name.rsplit(".", 1)[0] if "." in name else name, []).append(name)
    return groups


def _resolve(
    groups: Mapping[str, Sequence[str]] | Sequence[str] | None, names: list[str]
) -> dict[str, list[str]]:
    if groups is None:
        return default_groups(names)
    if isinstance(groups, str):
        raise ValueError(
            f"`groups` must be a sequence of parameter-name prefixes or a mapping name -> "
            f"prefixes, got the string {groups!r}; wrap it in a list."
        )
    spec = dict(groups) if isinstance(groups, Mapping) else {p: [p] for p in groups}
    out: dict[str, list[str]] = {g: [] for g in spec}
    for name in names:
        hits = [g for g, prefixes in spec.items()
                if any(name == p or name.startswith(p + ".") for p in prefixes)]
        if len(hits) != 1:
            raise ValueError(
                f"`groups`: parameter {name!r} is in {len(hits)} groups ({hits}); every "
                f"parameter must be in exactly one. Parameters: {names}."
            )
        out[hits[0]].append(name)
    empty = [g for g, m in out.items() if not m]
    if empty:
        raise ValueError(f"`groups` {empty} match no parameter; parameters: {names}.")
    return out


def by_group(
    fm: FunctionalModel | torch.nn.Module,
    X: Tensor,
    *,
    lr: float,
    groups: Mapping[str, Sequence[str]] | Sequence[str] | None = None,
    params: Mapping[str, Tensor] | None = None,
) -> GroupBreakdown:
    """C^{0,1} and C^{0,2} on the diagonal, split by parameter group (see the module docstring).

    Args:
        fm: the functional model (an ``nn.Module`` is converted).
        X: inputs [B, ...].
        lr: η > 0.
        groups: ``None`` (one group per module, e.g. ``linears.0`` = its weight and bias), a
            sequence of parameter-name prefixes (each its own group), or a mapping
            group name → prefixes. Every parameter must fall in exactly one group.
        params: θ (default θ0).

    Returns:
        A :class:`GroupBreakdown`.

    Raises:
        ValueError: bad ``lr``, inputs, or groups that miss or overlap parameters.

    Example:
        >>> import torch
        >>> fm = functional(torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(),
        ...                                     torch.nn.Linear(3, 1)))
        >>> r = by_group(fm, torch.randn(4, 2), lr=0.1)
        >>> r.groups, tuple(r.c02.shape)
        (('0', '2'), (2, 2, 4, 1))
    """
    fm = fm if isinstance(fm, FunctionalModel) else functional(fm)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"`lr` must be a finite number > 0 (the learning rate η), got {lr!r}.")
    params = {k: v.detach() for k, v in (fm.params if params is None else params).items()}
    if set(params) != set(fm.params):
        raise ValueError("`params` must have the model's parameter names; start from fm.params.")
    if not isinstance(X, Tensor) or X.ndim < 1 or len(X) < 1:
        raise ValueError(f"`X` must be a tensor [batch >= 1, ...], got {type(X).__name__}.")
    names = list(params)
    resolved = _resolve(groups, names)
    with torch.no_grad():
        d_y = fm(params, X[:1]).shape[-1]
    eye = torch.eye(d_y, dtype=X.dtype if X.is_floating_point() else None, device=X.device)
    n_g = len(resolved)
    c01 = torch.zeros(n_g, len(X), d_y, dtype=eye.dtype, device=X.device)
    c02 = torch.zeros(n_g, n_g, len(X), d_y, dtype=eye.dtype, device=X.device)
    masks = [{k: (1.0 if k in set(members) else 0.0) for k in names} for members in resolved.values()]
    for b in range(len(X)):
        xb = X[b:b + 1]

        def out_i(p: dict[str, Tensor], e: Tensor, xb: Tensor = xb) -> Tensor:
            return fm(p, xb)[0] @ e

        def grad_i(p: dict[str, Tensor], e: Tensor) -> dict[str, Tensor]:
            return _grad(out_i)(p, e)

        g = vmap(grad_i, in_dims=(None, 0))(params, eye)               # {name: [d_y, ...]}
        parts = [{k: g[k] * m[k] for k in names} for m in masks]
        for a, part in enumerate(parts):
            c01[a, b] = lr * sum(part[k].flatten(1).pow(2).sum(1) for k in names)

        def hvp(e: Tensor, tangent: dict[str, Tensor]) -> dict[str, Tensor]:
            return _jvp(lambda p: grad_i(p, e), (params,), (tangent,))[1]

        for a2, part2 in enumerate(parts):
            hg = vmap(hvp)(eye, part2)                                  # H g_{G'} per output
            for a1, part1 in enumerate(parts):
                c02[a1, a2, b] = 0.5 * lr**2 * sum(
                    (part1[k] * hg[k]).flatten(1).sum(1) for k in names
                )
    return GroupBreakdown(
        groups=tuple(resolved), members=tuple(tuple(m) for m in resolved.values()),
        c01=c01, c02=c02,
    )


def summary(result: GroupBreakdown) -> dict[str, dict[str, float]]:
    """Scalars of a breakdown for reports.

    Returns:
        ``{"c01_share": {group: Σ C^{0,1}_G / Σ C^{0,1}}, "c02_rms": {group: RMS of the
        within-group term, "mixed": RMS of the sum of the mixed-group terms, "total": RMS of
        C^{0,2}}}``, RMS over inputs and outputs.
    """
    c01 = result.c01.double()
    total01 = float(c01.sum())
    share = {g: (float(c01[a].sum()) / total01 if total01 > 0 else math.nan)
             for a, g in enumerate(result.groups)}
    c02 = result.c02.double()
    within = torch.diagonal(c02, dim1=0, dim2=1).movedim(-1, 0)        # [G, B, d_y]
    mixed = c02.sum((0, 1)) - within.sum(0)

    def rms(t: Tensor) -> float:
        return float(t.pow(2).mean().sqrt())

    c02_rms = {g: rms(within[a]) for a, g in enumerate(result.groups)}
    c02_rms.update(mixed=rms(mixed), total=rms(c02.sum((0, 1))))
    return {"c01_share": share, "c02_rms": c02_rms}
