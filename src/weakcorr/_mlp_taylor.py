"""Exact Taylor-mode diagonal correlations for MLPs (``method="mlp"`` of ``correlations.diagonal``).

For an MLP ``z_l = c_w W_l a_{l-1} + c_b b_l``, ``a_l = σ(z_l)``, the gradient of output i
at input x is rank one per layer: ``∇_{W_l} f_i = c_w δ_l a_{l-1}ᵀ``, ``∇_{b_l} f_i = c_b δ_l``
with ``δ_l = ∂f_i/∂z_l``.  Along ``θ(t) = θ + t ∇f_i(x)`` the pre-activations at the same
input x are power series in t whose coefficients (``z(t) = Σ_k z^{(k)} t^k``) obey

.. math::

    z_l^{(k)} = c_w W_l a_{l-1}^{(k)} + c_w^2\\,\\delta_l\\,(a_{l-1}^{(0)}\\cdot a_{l-1}^{(k-1)})
                + [k = 1]\\,c_b^2\\,\\delta_l

and ``a_l(t) = σ(z_l(t))`` by composition of power series with the exact derivatives
``σ^{(m)}(z^{(0)})`` (nested jvps of the elementwise activation, :func:`weakcorr._mlp.derivatives`).
The models it takes are those :func:`weakcorr._mlp.recognise` accepts.  Then
``∇^k f_i(x)[g, ..., g] = k! · z_L^{(k)}[i]`` — the same numbers as the generic nested-jvp
path, with O(width) instead of O(N) work per (input, output) pair beyond the shared GEMMs.
Exact arithmetic on truncated power series; no finite differences.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from . import _mlp
from ._correlations import Progress, chunks
from ._memory import chunk_size_for
from .functional import FunctionalModel, Params


@dataclass(frozen=True)
class Affine:
    weight: str
    bias: str | None
    weight_mult: float = 1.0
    bias_mult: float = 1.0


@dataclass(frozen=True)
class Elementwise:
    fn: Callable[[Tensor], Tensor]


Step = Affine | Elementwise


def _unsupported(fm: FunctionalModel, why: str) -> ValueError:
    return ValueError(
        f"`method='mlp'` needs a weakcorr.models.MLP or an nn.Sequential (nested too) of linear "
        f"layers and elementwise activations; {type(fm.module).__name__} is not one: {why}. "
        "Use method='generic'."
    )


def _step(op: _mlp.LinearOp | _mlp.ActOp | _mlp.ScaleOp) -> Step:
    if isinstance(op, _mlp.LinearOp):
        return Affine(op.weight, op.bias, op.weight_multiplier, op.bias_multiplier)
    if isinstance(op, _mlp.ActOp):
        return Elementwise(op.fn)
    scale = op.scale
    return Elementwise(lambda z: scale * z)


def mlp_steps(fm: FunctionalModel) -> list[Step]:
    """The module as affine and elementwise steps (the chain of :func:`weakcorr._mlp.recognise`),
    or ValueError saying why it is not such an MLP."""
    chain = _mlp.recognise_fm(fm)
    if isinstance(chain, str):
        raise _unsupported(fm, chain)
    return [_step(op) for op in chain]


def _compose(derivs: list[Tensor], z: list[Tensor | None], order: int) -> list[Tensor | None]:
    """Taylor coefficients of σ(z(t)) from those of z (``z[0]`` shared, the rest per pair).

    ``[t^k] σ(z(t)) = Σ_m σ^{(m)}(z0)/m! · [t^k] (z(t) - z0)^m`` for k >= 1.
    """
    out: list[Tensor | None] = [derivs[0]] + [None] * order
    power: list[Tensor | None] = [None] + list(z[1:])  # (z - z0)^1, coefficients 0..order
    for m in range(1, order + 1):
        if m > 1:  # power <- power * (z - z0), truncated
            new: list[Tensor | None] = [None] * (order + 1)
            for k in range(m, order + 1):
                acc = None
                for j in range(m - 1, k):
                    a, b = power[j], z[k - j]
                    if a is not None and b is not None:
                        acc = a * b if acc is None else torch.addcmul(acc, a, b)
                new[k] = acc
            power = new
        coef = derivs[m] / math.factorial(m)
        for k in range(m, order + 1):
            if power[k] is not None:
                out[k] = (coef * power[k] if out[k] is None
                          else torch.addcmul(out[k], coef, power[k]))
    return out


def diagonal_raw(
    fm: FunctionalModel,
    params: Params,
    X: Tensor,
    d_y: int,
    max_order: int,
    *,
    max_memory_gb: float,
    progress: Progress,
    mask: Mapping[str, Tensor] | None = None,
) -> Tensor:
    """Same contract as ``_correlations.diagonal_raw``: [K+1, B, d_y] of ∇^k f_i(x)[g^k],
    ``g = P ∇f_i(x)`` with the optional 0/1 ``mask`` P (the paper's sampled indices).

    With a mask the rank-one perturbation ``c_w δ a0ᵀ`` of a weight is kept only on the
    sampled entries (r, c), so its action ``c_w² Σ_c δ_r a0_c a_c`` is a gather/scatter over
    the sampled entries instead of a dot product.  Pair tensors are laid out [inputs, d_y, width] so that per-input quantities (activations,
    σ^{(m)}(z0)) broadcast over the outputs without copies, and every layer's power-series
    coefficients go through one GEMM.
    """
    steps = mlp_steps(fm)
    sampled = None if mask is None else _sampled_entries(steps, mask)
    K = max_order
    B = X.shape[0]
    x = X.reshape(B, -1)
    # shared forward pass: inputs of every step and activation derivatives at z0
    inputs: list[Tensor] = []
    derivs: list[list[Tensor] | None] = []
    a = x
    for s in steps:
        inputs.append(a)
        if isinstance(s, Affine):
            z = s.weight_mult * a @ params[s.weight].T
            if s.bias is not None:
                z = z + s.bias_mult * params[s.bias]
            a = z
            derivs.append(None)
        else:
            ds = _mlp.derivatives(s.fn, a, K)
            derivs.append(ds)
            a = ds[0]
    out0 = a
    if out0.shape[1] != d_y:
        raise _unsupported(fm, "the last step's width differs from the output dimension")
    widths = sum(t.shape[1] for t in inputs) + d_y
    item = torch.empty((), dtype=fm.dtype).element_size()
    per_input = (3 * K + 6) * widths * item * d_y
    size = chunk_size_for(per_input, max_memory_gb, n_items=B)
    eye = torch.eye(d_y, dtype=fm.dtype, device=fm.device)
    result = torch.empty(K + 1, B, d_y, dtype=fm.dtype, device=fm.device)
    result[0] = out0
    for sl in chunks(B, size):
        # backward: δ at the output of every step, [inputs, d_y, width] (or broadcastable)
        deltas: list[Tensor] = [None] * len(steps)  # type: ignore[list-item]
        grad = eye.unsqueeze(0)  # [1, d_y (pair's output i), d_y]
        for j in range(len(steps) - 1, -1, -1):
            s = steps[j]
            deltas[j] = grad
            if j == 0:
                break
            if isinstance(s, Affine):
                grad = _scaled(grad @ params[s.weight], s.weight_mult)
            else:
                grad = grad * derivs[j][1][sl].unsqueeze(1)
        # forward power series along g = ∇f_i(x): coefficients 1..K of each step's input
        coeffs: list[Tensor | None] = [None] * (K + 1)
        for j, s in enumerate(steps):
            a0 = inputs[j][sl].unsqueeze(1)  # [inputs, 1, width]
            if isinstance(s, Affine):
                entries = None if sampled is None else sampled[j]
                coeffs = _affine_series(s, params, a0, deltas[j], coeffs, K, entries)
            else:
                ds = [t[sl].unsqueeze(1) for t in derivs[j]]
                coeffs = _compose(ds, coeffs, K)
                coeffs[0] = None
        for k in range(1, K + 1):
            c = coeffs[k]
            result[k, sl] = 0.0 if c is None else math.factorial(k) * torch.diagonal(
                c, dim1=-2, dim2=-1
            )
        progress(sl.stop * d_y, B * d_y)
    return result


Entries = tuple[Tensor, Tensor, Tensor | None]  # sampled weight rows, columns, bias indices


def _sampled_entries(steps: list[Step], mask: Mapping[str, Tensor]) -> list[Entries | None]:
    out: list[Entries | None] = []
    for s in steps:
        if isinstance(s, Affine):
            rows, cols = mask[s.weight].nonzero(as_tuple=True)
            bias = mask[s.bias].nonzero().squeeze(1) if s.bias is not None else None
            out.append((rows, cols, bias))
        else:
            out.append(None)
    return out


def _scaled(t: Tensor, c: float) -> Tensor:
    """``c · t`` in place (``t`` is a fresh product); no pass over memory when c = 1."""
    return t if c == 1.0 else t.mul_(c)


def _scatter(values: Tensor, index: Tensor, width: int) -> Tensor:
    out = values.new_zeros(*values.shape[:-1], width)
    return out.index_add_(-1, index, values)


def _affine_series(
    s: Affine, params: Params, a0: Tensor, delta: Tensor, coeffs: list[Tensor | None], K: int,
    entries: Entries | None = None,
) -> list[Tensor | None]:
    """``z^{(k)} = c_w W a^{(k)} + c_w² δ (a0·a^{(k-1)}) + [k=1] c_b² δ`` for k = 1..K
    (with sampled ``entries``, the last two terms restricted to them)."""
    W = params[s.weight]
    present = [k for k in range(1, K + 1) if coeffs[k] is not None]
    linear: dict[int, Tensor] = {}
    if present:  # one GEMM for all orders
        stacked = torch.stack(
            [torch.broadcast_to(coeffs[k], coeffs[present[0]].shape) for k in present]
        )
        products = _scaled(stacked @ W.T, s.weight_mult)
        linear = dict(zip(present, products))
    new: list[Tensor | None] = [None] * (K + 1)
    for k in range(1, K + 1):
        acc = linear.get(k)
        prev = a0 if k == 1 else coeffs[k - 1]
        if prev is not None and entries is None:
            dot = s.weight_mult**2 * (prev @ a0.transpose(-1, -2))  # a0·a^{(k-1)}, [.., 1]
            if k == 1 and s.bias is not None:
                dot = dot + s.bias_mult**2
            acc = delta * dot if acc is None else torch.addcmul(acc, delta, dot)
        elif prev is not None:
            rows, cols, bias = entries
            width = W.shape[0]
            vals = delta[..., rows] * (a0[..., cols] * prev[..., cols])
            term = s.weight_mult**2 * _scatter(vals, rows, width)
            if k == 1 and bias is not None:
                term = term + s.bias_mult**2 * _scatter(delta[..., bias], bias, width)
            acc = term if acc is None else acc + term
        new[k] = acc
    return new
