"""Implementations behind :func:`weakcorr.ntk.empirical_ntk` and the recognised layer chain.

A *chain* describes a network built from affine layers and elementwise maps,

    h_0 = x,   z_k = m_k · h_{k-1} W_kᵀ + c_k · b_k,   h_k = φ_k(z_k)   (or h_k = z_k),

optionally followed by a constant output scale.  For such networks the
per-example gradient of output i with respect to W_k is the outer product
δ_k(x)_i ⊗ m_k h_{k-1}(x), where δ_k(x)_i = ∂f_i/∂z_k, so the NTK (Eq. 9) is

    Θ(x, x')_{ij} = η Σ_k [m_k² h_{k-1}(x)·h_{k-1}(x') + c_k²] · δ_k(x)_i·δ_k(x')_j

without any per-parameter Jacobian ("structured").  The other two implementations
work for any module: explicit per-example Jacobian rows contracted in chunks
("jacobian"), and NTK-vector products that push chunks of gradient rows of the
second input through a forward-mode jvp at the first ("vp").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from enum import StrEnum

import torch
from torch import Tensor, nn
from torch.func import jacrev, vmap
from torch.func import jvp as _torch_jvp

from ._memory import balanced_chunks, chunk_size_for
from ._mlp import ActOp, Chain, LinearOp, ScaleOp, recognise_fm, slope_by_jvp
from .functional import FunctionalModel

__all__ = [
    "ActOp",
    "Chain",
    "LinearOp",
    "NtkImplementation",
    "ScaleOp",
    "chain_forward",
    "chain_of",
    "chain_or_reason",
    "contract",
    "jacobian_kernel",
    "structured_kernel",
    "vp_kernel",
]


class NtkImplementation(StrEnum):
    """How :func:`weakcorr.ntk.empirical_ntk` computes Θ."""

    AUTO = "auto"
    JACOBIAN = "jacobian"
    VP = "vp"
    STRUCTURED = "structured"


# --- the recognised layer chain (one recogniser for every fast path: weakcorr._mlp) -----------


def chain_or_reason(fm: FunctionalModel) -> Chain | str:
    """The layer chain of ``fm`` (:func:`weakcorr._mlp.recognise_fm`), or why it has none."""
    return recognise_fm(fm)


def chain_of(fm: FunctionalModel) -> Chain | None:
    """The layer chain of ``fm.module`` if it is an MLP of affine layers and elementwise maps.

    Recognised (by :func:`weakcorr._mlp.recognise`, shared with the Taylor-mode correlations
    and the training passes): ``weakcorr.models.MLP``, and ``nn.Sequential`` (nested too) of
    ``nn.Linear``/scaled linear layers and elementwise activation modules, or a single linear
    layer. Every trainable parameter must be one of the chain's weights or biases and the
    module must have no buffers.

    Returns:
        The chain, or ``None`` when the structure is not recognised (:func:`chain_or_reason`
        says why).
    """
    chain = recognise_fm(fm)
    return None if isinstance(chain, str) else chain


# φ'(z) of the chain's activations by one jvp of the module's own φ, so that the structured
# kernel agrees with autodiff of the module (the activation table's fallback).
act_and_derivative = slope_by_jvp


def chain_forward(
    chain: Chain, params: Mapping[str, Tensor], x: Tensor
) -> tuple[Tensor, list[Tensor], list[Tensor | None]]:
    """Forward pass recording what the backward pass needs.

    Returns:
        ``(out [B, d_y], inputs, derivs)``: ``inputs[k]`` is the input h of op k when it is
        a :class:`LinearOp`, ``derivs[k]`` is φ'(z) [B, n] when op k is an :class:`ActOp`
        (``None`` elsewhere).
    """
    h = x
    inputs: list[Tensor] = []
    derivs: list[Tensor | None] = []
    for op in chain:
        inputs.append(h)
        if isinstance(op, LinearOp):
            z = h @ params[op.weight].T
            if op.weight_multiplier != 1.0:
                z = op.weight_multiplier * z
            if op.bias is not None:
                z = z + op.bias_multiplier * params[op.bias]
            h = z
            derivs.append(None)
        elif isinstance(op, ActOp):
            h, d = act_and_derivative(op.fn, h)
            derivs.append(d)
        else:
            h = op.scale * h
            derivs.append(None)
    return h, inputs, derivs


def _factors(
    chain: Chain, params: Mapping[str, Tensor], x: Tensor
) -> list[tuple[Tensor, Tensor, float, float]]:
    """Per linear op k: (h_{k-1} [B, n_in], δ_k [B, d_y, n_out], m_k², c_k² or 0)."""
    out, inputs, derivs = chain_forward(chain, params, x)
    b, d_y = out.shape
    g = torch.eye(d_y, dtype=out.dtype, device=out.device).expand(b, d_y, d_y)
    first_linear = next(k for k, op in enumerate(chain) if isinstance(op, LinearOp))
    factors = []
    for k in range(len(chain) - 1, first_linear - 1, -1):
        op = chain[k]
        if isinstance(op, ScaleOp):
            g = op.scale * g
        elif isinstance(op, ActOp):
            g = g * derivs[k].unsqueeze(1)
        else:
            bias2 = op.bias_multiplier**2 if op.bias is not None else 0.0
            factors.append((inputs[k], g, op.weight_multiplier**2, bias2))
            if k > first_linear:
                g = g @ params[op.weight]
                if op.weight_multiplier != 1.0:
                    g = op.weight_multiplier * g
    return factors


def gram(a: Tensor, c: Tensor | None = None) -> Tensor:
    """a @ cᵀ for row matrices a [M, P], c [M2, P]; with ``c=None`` the symmetric a @ aᵀ.

    The symmetric case computes the upper block triangle only (about 5/8 of the products
    for four row blocks) and mirrors it, so the result is exactly symmetric.
    """
    if c is not None:
        return a @ c.T
    m = a.shape[0]
    if m < 512:
        out = a @ a.T
        return (out + out.T) / 2
    out = torch.empty(m, m, dtype=a.dtype, device=a.device)
    blocks = list(balanced_chunks(m, -(-m // 4)))
    for i, si in enumerate(blocks):
        for sj in blocks[i:]:
            blk = a[si] @ a[sj].T
            out[si, sj] = blk
            if sj != si:
                out[sj, si] = blk.T
            else:
                out[si, si] = (blk + blk.T) / 2
    return out


def contract(a: Tensor, c: Tensor | None, *, trace: bool, diagonal: bool) -> Tensor:
    """Inner products of rows: a [B1, d_y, P], c [B2, d_y, P] (``None``: c = a) →

    full [B1, B2, d_y, d_y]; trace (sum over i of the (i, i) entries) [B1, B2];
    diagonal (pairs a_b with c_b, B1 = B2) [B, d_y, d_y]; both [B].
    """
    b1, d_y, p = a.shape
    if diagonal:
        c = a if c is None else c
        return (a * c).sum((1, 2)) if trace else torch.bmm(a, c.transpose(1, 2))
    b2 = b1 if c is None else c.shape[0]
    if trace:
        return gram(a.reshape(b1, d_y * p), None if c is None else c.reshape(b2, d_y * p))
    out = gram(a.reshape(b1 * d_y, p), None if c is None else c.reshape(b2 * d_y, p))
    return out.reshape(b1, d_y, b2, d_y).permute(0, 2, 1, 3)


def _gram(h1: Tensor, h2: Tensor | None, *, diagonal: bool) -> Tensor:
    if diagonal:
        return (h1 * (h1 if h2 is None else h2)).sum(-1)
    return gram(h1, h2)


def _expand(scalar_kernel: Tensor, *, trace: bool) -> Tensor:
    return scalar_kernel if trace else scalar_kernel[..., None, None]


def _pairs(
    b1: int, b2: int, chunk: int, *, diagonal: bool
) -> Iterator[tuple[slice, slice]]:
    if diagonal:
        for s in balanced_chunks(b1, chunk):
            yield s, s
        return
    for s1 in balanced_chunks(b1, chunk):
        for s2 in balanced_chunks(b2, chunk):
            yield s1, s2


def _alloc(b1: int, b2: int, d_y: int, like: Tensor, params: Mapping[str, Tensor], *,
           trace: bool, diagonal: bool) -> Tensor:
    """The kernel's output, in the parameters' dtype: inputs may be integer token ids, whose
    dtype would truncate the kernel."""
    shape: tuple[int, ...] = (b1,) if diagonal else (b1, b2)
    if not trace:
        shape = (*shape, d_y, d_y)
    dtype = next((p.dtype for p in params.values() if p.is_floating_point()), like.dtype)
    return torch.empty(shape, dtype=dtype, device=like.device)


def _place(out: Tensor, block: Tensor, s1: slice, s2: slice, *, diagonal: bool) -> None:
    if diagonal:
        out[s1] = block
    else:
        out[s1, s2] = block


def structured_kernel(
    chain: Chain,
    params: Mapping[str, Tensor],
    x1: Tensor,
    x2: Tensor | None,
    d_y: int,
    *,
    trace: bool,
    diagonal: bool,
    max_memory_gb: float,
) -> Tensor:
    """Θ/η from input Grams and back-propagated output-to-pre-activation Grams (no Jacobians)."""
    same = x2 is None
    x2 = x1 if x2 is None else x2
    itemsize = x1.element_size()
    per_example = 0
    for op in chain:  # h (≤ widest input) and δ (d_y × widest output) per linear op
        if isinstance(op, LinearOp):
            w = params[op.weight]
            per_example += (w.shape[1] + d_y * w.shape[0]) * itemsize
    chunk = chunk_size_for(4 * max(per_example, 1), max_memory_gb, n_items=max(len(x1), len(x2)))
    out = _alloc(len(x1), len(x2), d_y, x1, params, trace=trace, diagonal=diagonal)
    cache: dict[tuple[int, int], list] = {}

    def factors(x: Tensor, s: slice, key: int) -> list:
        k = (key, s.start)
        if k not in cache:
            if len(cache) > 2:
                cache.pop(next(iter(cache)))
            cache[k] = _factors(chain, params, x[s])
        return cache[k]

    for s1, s2 in _pairs(len(x1), len(x2), chunk, diagonal=diagonal):
        f1 = factors(x1, s1, 0)
        sym = same and s1 == s2
        f2 = f1 if sym else factors(x2, s2, 0 if same else 1)
        block = None
        for (h1, g1, w2, c2), (h2, g2, _, _) in zip(f1, f2, strict=True):
            scalar = _gram(h1, None if sym else h2, diagonal=diagonal)
            if w2 != 1.0:
                scalar = w2 * scalar
            if c2:
                scalar = scalar + c2
            term = contract(g1, None if sym else g2, trace=trace, diagonal=diagonal)
            term = term * _expand(scalar, trace=trace)
            block = term if block is None else block + term
        _place(out, block, s1, s2, diagonal=diagonal)
    return out


# --- generic implementations ---------------------------------------------------------------------


def _single(fm: FunctionalModel) -> Callable[[dict[str, Tensor], Tensor], Tensor]:
    def f_single(p: dict[str, Tensor], xi: Tensor) -> Tensor:
        return fm(p, xi.unsqueeze(0)).squeeze(0)

    return f_single


def jacobian_rows(fm: FunctionalModel, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
    """Per-example Jacobians [B, d_y, N] (parameters flattened in ``params`` key order)."""
    jac = vmap(jacrev(_single(fm)), in_dims=(None, 0))(dict(params), x)
    b = x.shape[0]
    return torch.cat([jac[k].reshape(b, jac[k].shape[1], -1) for k in params], dim=-1)


def jacobian_kernel(
    fm: FunctionalModel,
    params: Mapping[str, Tensor],
    x1: Tensor,
    x2: Tensor | None,
    d_y: int,
    *,
    trace: bool,
    diagonal: bool,
    max_memory_gb: float,
) -> Tensor:
    """Θ/η by contracting chunks of per-example Jacobian rows."""
    same = x2 is None
    x2 = x1 if x2 is None else x2
    n = sum(p.numel() for p in params.values())
    # Two chunks of rows are alive, each built with about as much vmap workspace again.
    per_example = 4 * d_y * n * x1.element_size()
    chunk = chunk_size_for(per_example, max_memory_gb, n_items=max(len(x1), len(x2)))
    out = _alloc(len(x1), len(x2), d_y, x1, params, trace=trace, diagonal=diagonal)
    current: tuple[int | None, Tensor | None] = (None, None)
    for s1, s2 in _pairs(len(x1), len(x2), chunk, diagonal=diagonal):
        if current[0] != s1.start:
            current = (s1.start, jacobian_rows(fm, params, x1[s1]))
        j1 = current[1]
        j2 = None if (same and s1 == s2) else jacobian_rows(fm, params, x2[s2])
        _place(out, contract(j1, j2, trace=trace, diagonal=diagonal), s1, s2, diagonal=diagonal)
    return out


def _activation_numel(fm: FunctionalModel, params: Mapping[str, Tensor], x_one: Tensor) -> int:
    """Scalars produced by the leaf modules' forward on one example (activation memory)."""
    total = 0

    def hook(_m: nn.Module, _inp: object, out: object) -> None:
        nonlocal total
        if isinstance(out, Tensor):
            total += out.numel()

    leaves = [m for m in fm.module.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            out = fm(params, x_one)
    finally:
        for h in handles:
            h.remove()
    return max(total, out.numel())


# Gradient rows pushed through one vmapped jvp in "vp": a few dozen are fastest, and far fewer
# than the memory budget allows (benchmarks/RESULTS.md, "NTK vp: gradient rows per vmapped jvp").
VP_MAX_TANGENTS = 48


def vp_kernel(
    fm: FunctionalModel,
    params: Mapping[str, Tensor],
    x1: Tensor,
    x2: Tensor | None,
    d_y: int,
    *,
    trace: bool,
    diagonal: bool,
    max_memory_gb: float,
) -> Tensor:
    """Θ/η by NTK-vector products: gradient rows of x2 pushed through a jvp at x1.

    For a chunk of x2 examples the d_y gradient rows ∇f_j(x2_b) (one vjp per row) are the
    tangents of one vmapped forward-mode pass over x1, giving J(x1)∇f_j(x2_b) = Θ(x1, x2_b)_{:j}/η.
    The Jacobian of x1 is never formed, and of x2 only ``chunk × d_y`` rows at a time.
    """
    same = x2 is None
    x2 = x1 if x2 is None else x2
    params = dict(params)
    n = sum(p.numel() for p in params.values())
    itemsize = x1.element_size()
    act = _activation_numel(fm, params, x1[:1])
    b_fwd = 1 if diagonal else len(x1)
    # Per x2 example: d_y tangent rows (+ jacrev workspace) and d_y tangent activations on x1.
    per_example = d_y * itemsize * (3 * n + 3 * b_fwd * act)
    chunk = chunk_size_for(per_example, max_memory_gb, n_items=len(x2))
    # More tangents per vmapped jvp stop paying early: a few dozen keep the matmuls busy, more
    # only spill the caches (see VP_MAX_TANGENTS).
    chunk = min(chunk, max(1, VP_MAX_TANGENTS // d_y))
    f_single = _single(fm)
    out = _alloc(len(x1), len(x2), d_y, x1, params, trace=trace, diagonal=diagonal)

    if diagonal:

        def pair(x1b: Tensor, x2b: Tensor) -> Tensor:
            rows = jacrev(f_single)(params, x2b)  # dict: [d_y, *shape]

            def push(t: dict[str, Tensor]) -> Tensor:
                return _torch_jvp(lambda p: f_single(p, x1b), (params,), (t,))[1]

            return vmap(push)(rows)  # [j, i]

        for s in balanced_chunks(len(x1), chunk):
            block = vmap(pair)(x1[s], x2[s]).transpose(1, 2)  # [c, i, j]
            out[s] = torch.diagonal(block, dim1=1, dim2=2).sum(-1) if trace else block
        return out

    for s in balanced_chunks(len(x2), chunk):
        c = s.stop - s.start
        # With x2 = x1 only rows a >= s.start are pushed; the rest is Θ(b, a)ᵀ, already known.
        xa = x1[s.start:] if same else x1

        def push_all(t: dict[str, Tensor], xa: Tensor = xa) -> Tensor:
            return _torch_jvp(lambda p: fm(p, xa), (params,), (t,))[1]  # [Ba, d_y]

        rows = vmap(jacrev(f_single), in_dims=(None, 0))(params, x2[s])  # [c, d_y, *shape]
        tangents = {k: v.reshape(c * d_y, *v.shape[2:]) for k, v in rows.items()}
        del rows
        pushed = vmap(push_all)(tangents)  # [(b, j), a, i]
        block = pushed.reshape(c, d_y, len(xa), d_y).permute(2, 0, 3, 1)  # [a, b, i, j]
        if trace:
            block = torch.diagonal(block, dim1=2, dim2=3).sum(-1)
        if same:
            out[s.start:, s] = block
            mirrored = block[c:].transpose(0, 1)
            out[s, s.stop:] = mirrored if trace else mirrored.transpose(2, 3)
            diag = out[s, s]
            out[s, s] = (diag + (diag.transpose(0, 1) if trace else diag.permute(1, 0, 3, 2))) / 2
        else:
            out[:, s] = block
    return out


def frobenius(t: Tensor) -> float:
    return math.sqrt(float((t.double() ** 2).sum()))
