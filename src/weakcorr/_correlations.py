"""Private engine of :mod:`weakcorr.correlations`: checks, gradients, nested jvps, chunking.

Vocabulary: a *pair* is (input row b, output index i); its *direction* is the gradient
``∇_θ f_i(θ)(x_b)`` (one row of the Jacobian, computed by a vjp with a one-hot
cotangent, vmapped over pairs).  Derivatives along directions are nested
``torch.func.jvp`` (exact, no finite differences).  Work is split into chunks of pairs
so that the parameter-sized blocks ``[chunk, N]`` fit in ``max_memory_gb``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor
from torch.func import jvp as _jvp
from torch.func import vjp as _vjp
from torch.func import vmap

from . import functional as F
from ._checks import ensure_checked, refuse_stochastic_modules
from ._memory import GIB, balanced_chunks, check_memory_budget, chunk_size_for
from .functional import FunctionalModel, Params

Progress = Callable[[int, int], None]
"""``progress(n_done, n_total)``, called after each chunk of work."""

MAX_TOTAL_ORDER = 6

# Working memory per pair, in units of one parameter vector (N * itemsize): the gradient
# block itself plus the vjp's and nested jvps' temporaries: about half of this was measured
# on an MLP, the rest is a margin for modules with more temporaries (benchmarks/RESULTS.md,
# "Working memory per (input, output) pair").
PAIR_FACTOR = 2.0
# Memory that is not per pair: the module, θ0, one gradient-sized temporary.
RESERVED_FACTOR = 4.0
RESERVED_FIXED = 512 * 1024**2


def no_progress(n_done: int, n_total: int) -> None:
    """The default progress callback: does nothing."""


# --- argument checks ----------------------------------------------------------------------------


def check_int(value: object, name: str, minimum: int, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}; {fix}")
    if int(value) < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}; {fix}")
    return int(value)


def check_total_order(D: int, d: int, allow_high_order: bool) -> None:
    if D + d > MAX_TOTAL_ORDER and not allow_high_order:
        raise ValueError(
            f"`D + d` must be <= {MAX_TOTAL_ORDER}, got D + d = {D + d}: nested forward mode "
            f"costs ~2^{D + d} forward passes per direction tuple. Pass "
            "allow_high_order=True if you mean it."
        )


def check_lr(lr: object) -> float:
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not math.isfinite(float(lr)):
        raise ValueError(f"`lr` must be a finite number > 0, got {lr!r}; pass e.g. lr=1.0.")
    if float(lr) <= 0:
        raise ValueError(
            f"`lr` must be > 0 (C^(D,d) scales as lr^(D/2 + d)), got {lr}; pass e.g. lr=1.0."
        )
    return float(lr)


def check_fm(fm: object) -> FunctionalModel:
    """``fm`` as a FunctionalModel: an ``nn.Module`` is converted (θ0 = its parameters)."""
    if isinstance(fm, torch.nn.Module):
        fm = F.functional(fm)
    if not isinstance(fm, FunctionalModel):
        raise ValueError(
            f"`fm` must be a weakcorr FunctionalModel or an nn.Module, got {type(fm).__name__}; "
            "pass the model, or weakcorr.functional(model)."
        )
    refuse_stochastic_modules(fm.module)
    return fm


def self_check(fm: FunctionalModel, params: Params, x: Tensor) -> None:
    """The derivative self-check (:func:`weakcorr.functional.check_derivatives`), once per model:
    nested forward mode against forward-over-reverse on two rows of ``x``."""
    ensure_checked(fm, params, x)


def resolve_params(fm: FunctionalModel, params: Mapping[str, Tensor] | None) -> Params:
    if params is None:
        return dict(fm.params)
    if not isinstance(params, Mapping) or set(params) != set(fm.params):
        got = sorted(params) if isinstance(params, Mapping) else type(params).__name__
        raise ValueError(
            f"`params` must be a dict with the model's parameter names {sorted(fm.params)}, "
            f"got {got}; pass params=None for θ0 or a dict shaped like fm.params."
        )
    for name, p in fm.params.items():
        if params[name].shape != p.shape:
            raise ValueError(
                f"`params[{name!r}]` has shape {tuple(params[name].shape)}, the model's "
                f"parameter has {tuple(p.shape)}; pass a dict shaped like fm.params."
            )
    return {name: params[name] for name in fm.params}


def as_batch(fm: FunctionalModel, x: object, name: str) -> Tensor:
    """Check that ``x`` is a batch tensor [B, ...] and move it to the model's dtype/device."""
    if not isinstance(x, Tensor):
        raise ValueError(
            f"`{name}` must be a torch.Tensor batch [B, ...], got {type(x).__name__}; "
            "convert it with torch.as_tensor."
        )
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(
            f"`{name}` must be a non-empty batch [B, ...], got shape {tuple(x.shape)}; "
            f"for a single input use `{name}[None]`."
        )
    if x.is_floating_point():
        x = x.to(dtype=fm.dtype, device=fm.device)
    return x.to(device=fm.device)


def output_dim(fm: FunctionalModel, params: Params, x: Tensor, name: str) -> int:
    """d_y, checking that the model maps a batch to a 2-D output."""
    with torch.no_grad():
        out = fm(params, x[:1])
    if out.ndim != 2 or out.shape[0] != 1:
        raise ValueError(
            f"`fm` must map a batch [B, ...] to outputs [B, d_y]; on `{name}[:1]` of shape "
            f"{tuple(x[:1].shape)} it returned shape {tuple(out.shape)}. Reshape the output "
            "inside the module (e.g. end it with nn.Flatten())."
        )
    return int(out.shape[1])


def check_finite(values: Tensor, what: str, arg: str) -> Tensor:
    finite = torch.isfinite(values)
    if not bool(finite.all()):
        first = tuple(int(i) for i in (~finite).nonzero()[0])
        raise ValueError(
            f"{what} is not finite ({int((~finite).sum())} entries, first at index {first}): "
            f"the model's derivatives overflow or are undefined at these `{arg}` and `params`. "
            "Check inputs and parameters for inf/NaN, avoid non-smooth points, or use float64."
        )
    return values


# --- chunking -----------------------------------------------------------------------------------


def pair_chunk_size(
    fm: FunctionalModel, n_items: int, max_memory_gb: float, vectors_per_item: float = 1.0
) -> int:
    """How many pairs (each holding ``vectors_per_item`` parameter-sized blocks) fit the budget."""
    check_memory_budget(max_memory_gb)
    vector_bytes = fm.n_params * torch.empty((), dtype=fm.dtype).element_size()
    budget_bytes = max_memory_gb * GIB
    reserved = RESERVED_FACTOR * vector_bytes + min(RESERVED_FIXED, 0.25 * budget_bytes)
    return chunk_size_for(
        PAIR_FACTOR * vectors_per_item * vector_bytes,
        max_memory_gb,
        n_items=n_items,
        reserved_bytes=reserved,
    )


def chunks(n_items: int, size: int) -> list[slice]:
    return list(balanced_chunks(n_items, size))


# --- derivatives --------------------------------------------------------------------------------


def pair_gradients(
    fm: FunctionalModel, params: Params, x_rows: Tensor, cotangents: Tensor
) -> Params:
    """Directions ``J(x_rows[g])ᵀ cotangents[g]`` for every g, vmapped: dict of [G, *shape]."""

    def one(x: Tensor, c: Tensor) -> Params:
        _, pull = _vjp(lambda p: fm(p, x.unsqueeze(0)), params)
        return pull(c.unsqueeze(0))[0]

    return vmap(one)(x_rows, cotangents)


def _extend(h: Callable[[Params], tuple[Tensor, ...]], v: Params):
    def hk(p: Params) -> tuple[Tensor, ...]:
        primals, tangents = _jvp(h, (p,), (v,))
        return (*primals, tangents[-1])

    return hk


def taylor_along(
    fm: FunctionalModel, params: Params, x_row: Tensor, v: Params, order: int
) -> tuple[Tensor, ...]:
    """``(∇^k f(θ)(x)[v, ..., v])_{k=0..order}``, each [d_y], by ``order`` nested jvps.

    With the same direction at every level, the primal outputs of each jvp are the lower
    orders, so all orders up to ``order`` come out of one nested call.
    """

    def h(p: Params) -> tuple[Tensor, ...]:
        return (fm(p, x_row.unsqueeze(0))[0],)

    for _ in range(order):
        h = _extend(h, v)
    return h(params)


def mixed_derivative(
    fm: FunctionalModel, params: Params, x_row: Tensor, directions: Sequence[Params]
) -> Tensor:
    """``∇^k f(θ)(x)[v_1, ..., v_k]`` [d_y] (paper Eq. 13), nested jvps."""
    return F.directional_derivative(fm, params, x_row.unsqueeze(0), directions)[0]


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
    """``∇^k f_i(x)[g, ..., g]`` with ``g = P ∇f_i(x)`` for k = 0..max_order: [K+1, B, d_y].

    ``P`` is the optional 0/1 ``mask`` (the paper's sampled index set), identity if None.
    """
    B = X.shape[0]
    n_pairs = B * d_y
    rows = torch.arange(B, device=X.device).repeat_interleave(d_y)
    outs = torch.arange(d_y, device=X.device).repeat(B)
    eye = torch.eye(d_y, dtype=fm.dtype, device=fm.device)
    result = torch.empty(max_order + 1, n_pairs, dtype=fm.dtype, device=fm.device)
    size = pair_chunk_size(fm, n_pairs, max_memory_gb)

    def one(x: Tensor, g: Params) -> tuple[Tensor, ...]:
        return taylor_along(fm, params, x, g, max_order)

    if size >= d_y:  # whole inputs per chunk: one forward per input, d_y cotangents vmapped
        slices = [slice(b.start * d_y, b.stop * d_y) for b in chunks(B, size // d_y)]
    else:
        slices = chunks(n_pairs, size)
    done = 0
    for sl in slices:
        x_rows, idx = X[rows[sl]], outs[sl]
        if size >= d_y:
            grads = input_gradients(fm, params, X[sl.start // d_y : sl.stop // d_y], d_y)
            grads = {k: v.flatten(0, 1) for k, v in grads.items()}
        else:
            grads = pair_gradients(fm, params, x_rows, eye[idx])
        if mask is not None:
            grads = {k: v * mask[k] for k, v in grads.items()}
        orders = vmap(one)(x_rows, grads)
        del grads
        picked = torch.arange(idx.shape[0], device=idx.device)
        for k, values in enumerate(orders):
            result[k, sl] = values[picked, idx]
        done += sl.stop - sl.start
        progress(done, n_pairs)
    return result.reshape(max_order + 1, B, d_y)


def input_gradients(fm: FunctionalModel, params: Params, x_rows: Tensor, d_y: int) -> Params:
    """All d_y output gradients of each row: dict of [G, d_y, *shape].  One vjp (one forward
    pass) per row, its pullback vmapped over the d_y one-hot cotangents; ~1.5x faster than
    :func:`pair_gradients` on repeated rows (a CNN of 98k parameters, 10 outputs)."""
    eye = torch.eye(d_y, dtype=fm.dtype, device=fm.device)

    def per_input(x: Tensor) -> Params:
        _, pull = _vjp(lambda p: fm(p, x.unsqueeze(0)), params)
        return vmap(lambda c: pull(c.unsqueeze(0))[0])(eye)

    return vmap(per_input)(x_rows)


def jacobians(fm: FunctionalModel, params: Params, x: Tensor, d_y: int) -> Params:
    """All output gradients of every row: dict of [B, d_y, *shape] (B vjps, each pulled back
    along the d_y one-hot cotangents, vmapped)."""
    return input_gradients(fm, params, x, d_y)


def tensor_raw(
    fm: FunctionalModel,
    params: Params,
    x0: Tensor,
    xs: Sequence[Tensor],
    d_y: int,
    *,
    max_memory_gb: float,
    progress: Progress,
) -> Tensor:
    """``∇^d f_{i0}(x0)[∇f_{i1}(x1), ..., ∇f_{id}(xd)]`` for all indices: [B, d_y, ..., d_y]."""
    B, d = x0.shape[0], len(xs)
    n_tuples = d_y**d
    # index tuples (i1..id) in row-major order
    grid = torch.cartesian_prod(*[torch.arange(d_y)] * d).reshape(n_tuples, d)
    result = torch.empty(B, n_tuples, d_y, dtype=fm.dtype, device=fm.device)
    # gradients of one input hold d * d_y vectors; the tuples of a chunk hold d each
    per_input = pair_chunk_size(fm, B, max_memory_gb / 2, vectors_per_item=d * d_y)
    per_tuple = pair_chunk_size(fm, n_tuples, max_memory_gb / 2, vectors_per_item=d)
    total, done = B * n_tuples, 0

    def one(x: Tensor, *dirs: Params) -> Tensor:
        return mixed_derivative(fm, params, x, dirs)

    for bsl in chunks(B, per_input):
        grads = [jacobians(fm, params, xk[bsl], d_y) for xk in xs]
        for b in range(bsl.start, bsl.stop):
            for tsl in chunks(n_tuples, per_tuple):
                idx = grid[tsl]
                dirs = [
                    {k: v[b - bsl.start][idx[:, j]] for k, v in grads[j].items()} for j in range(d)
                ]
                n = idx.shape[0]
                result[b, tsl] = vmap(one, in_dims=(None, *([0] * d)))(x0[b], *dirs)
                done += n
                progress(done, total)
        del grads
    # result[b, tuple, i0] -> [b, i0, i1, ..., id]
    return result.reshape(B, *([d_y] * d), d_y).movedim(-1, 1)


def sample_layer_masks(
    params: Mapping[str, Tensor], per_layer: int, generator: torch.Generator | None
) -> tuple[dict[str, Tensor], int]:
    """The paper's sampled index set D: ``per_layer`` parameters drawn uniformly without
    replacement in each layer (parameters grouped by module path: ``0.weight`` and ``0.bias``
    form layer ``0``), all of them where a layer has fewer.

    Returns:
        ``(masks, |D|)``: 0/1 masks shaped like ``params`` and the number of sampled indices.
    """
    layers: dict[str, list[str]] = {}
    for name in params:
        layers.setdefault(name.rsplit(".", 1)[0], []).append(name)
    masks = {k: torch.zeros_like(v) for k, v in params.items()}
    total = 0
    for names in layers.values():
        sizes = [params[n].numel() for n in names]
        n_layer = sum(sizes)
        k = min(per_layer, n_layer)
        chosen = torch.randperm(n_layer, generator=generator)[:k]
        flat = torch.zeros(n_layer, dtype=next(iter(params.values())).dtype)
        flat[chosen] = 1
        offset = 0
        for n, s in zip(names, sizes):
            masks[n] = flat[offset : offset + s].reshape(params[n].shape).to(
                device=params[n].device, dtype=params[n].dtype
            )
            offset += s
        total += k
    return masks, total
