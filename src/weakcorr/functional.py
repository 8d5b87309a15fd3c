"""A PyTorch module viewed as a pure function ``f(params, x)``.

Everything else in weakcorr works on :class:`FunctionalModel`: the parameters θ
are a ``dict`` name → tensor (the layout of ``torch.func.functional_call``),
tangents in parameter space are dicts with the same keys, and derivatives are
exact (forward mode with ``torch.func.jvp``, reverse mode with
``torch.func.vjp``).  Nothing here uses finite differences.

The mixed directional derivative of Eq. 13 of the paper,

.. math::

    \\partial_{a_1} \\cdots \\partial_{a_k}\\,
    f\\Big(\\theta + \\sum_j a_j v_j\\Big)(x)\\Big|_{a=0},

is computed by nesting ``k`` forward-mode passes (cost ~2^k forward passes,
O(N) memory), see :func:`directional_derivative`.

Any ``nn.Module`` works, with no action from the user:

* every call of a :class:`FunctionalModel` runs inside :func:`weakcorr._ops.exact_ops`:
  LayerNorm, GroupNorm, RMSNorm, InstanceNorm and eval-mode BatchNorm are computed from
  primitive ops (PyTorch's native kernels have wrong higher-order forward derivatives, e.g.
  jvp-of-jvp through ``native_layer_norm`` in torch 2.13), scaled-dot-product attention uses the
  math formula and the fused transformer fast path is off (the fused kernels have no forward
  derivative), so ``nn.MultiheadAttention``, ``nn.TransformerEncoderLayer`` and
  ``F.scaled_dot_product_attention`` run under forward-mode AD in train and eval mode;
* modules whose output is random or depends on the batch (Dropout and relatives, RReLU and
  attention dropout in training mode, BatchNorm in training mode or without running
  statistics) are refused with the module's path and the fix (``model.eval()`` or
  ``functional(model, eval_mode=True)``);
* a model whose output is one scalar per input, [B], is viewed as [B, 1] (d_y = 1);
* :func:`check_derivatives` compares nested forward mode with forward-over-reverse on the
  model (the correlation functions run it once per model).
"""

from __future__ import annotations

import math
import sys
import types
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.func import jvp as _torch_jvp
from torch.func import vjp as _torch_vjp

from ._checks import check_derivatives, refuse_stochastic_modules
from ._ops import exact_ops

__all__ = [
    "FunctionalModel",
    "Params",
    "add",
    "check_derivatives",
    "directional_derivative",
    "dot",
    "flatten",
    "functional",
    "jvp",
    "norm",
    "random_unit",
    "scale",
    "sub",
    "unflatten",
    "vjp",
    "zeros_like",
]

Params = dict[str, Tensor]


class FunctionalModel:
    """An ``nn.Module`` as a function of its parameters.

    Attributes:
        module: the wrapped module (its own parameters are never used by
            :meth:`__call__`; ``params`` are passed explicitly).
        params: θ0, a dict name → detached copy of each trainable parameter.
        buffers: a dict name → detached copy of each buffer.
        exact_ops: run calls inside :func:`weakcorr._ops.exact_ops` (default True; False uses
            PyTorch's native kernels, whose higher-order forward derivatives can be wrong).
    """

    def __init__(self, module: nn.Module, *, eval_mode: bool = False) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(
                f"`model` must be a torch.nn.Module, got {type(module).__name__}. "
                "Wrap plain functions in an nn.Module first."
            )
        if not isinstance(eval_mode, bool):
            raise TypeError(f"`eval_mode` must be True or False, got {eval_mode!r}.")
        if eval_mode:
            module.eval()
        refuse_stochastic_modules(module)
        self.module = module
        self.exact_ops = True
        self.params: Params = {
            name: p.detach().clone() for name, p in module.named_parameters() if p.requires_grad
        }
        if not self.params:
            raise ValueError("`model` has no trainable parameters; weakcorr needs at least one.")
        self.buffers: Params = {name: b.detach().clone() for name, b in module.named_buffers()}
        self._output_dim: int | None = _infer_output_dim(module)

    def __call__(self, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
        """Evaluate f(params)(x) for a batch ``x`` (the module's own weights are ignored).

        Runs inside :func:`weakcorr._ops.exact_ops` (unless ``exact_ops`` is False); an output
        of shape [B] is returned as [B, 1].
        """
        if self.exact_ops:
            with exact_ops():
                out = functional_call(self.module, (dict(params), self.buffers), (x,))
        else:
            out = functional_call(self.module, (dict(params), self.buffers), (x,))
        return out.unsqueeze(-1) if out.ndim == 1 else out

    @property
    def n_params(self) -> int:
        """N, the number of trainable scalars."""
        return sum(p.numel() for p in self.params.values())

    @property
    def output_dim(self) -> int | None:
        """d_y, the size of the last output axis (None until known: call the model once)."""
        return self._output_dim

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.params.values())).dtype

    @property
    def device(self) -> torch.device:
        return next(iter(self.params.values())).device

    def output(self, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
        """Like ``__call__`` but checks that the output is 2-D [B, d_y] and records d_y."""
        out = self(params, x)
        if out.ndim != 2:
            raise ValueError(
                f"the model's output must be 2-D [batch, d_y], got shape {tuple(out.shape)}; "
                "flatten or reshape the output inside the module (e.g. nn.Flatten())."
            )
        self._output_dim = int(out.shape[-1])
        return out

    def __repr__(self) -> str:
        return (
            f"FunctionalModel({type(self.module).__name__}, n_params={self.n_params}, "
            f"output_dim={self.output_dim}, dtype={self.dtype})"
        )


def _infer_output_dim(module: nn.Module) -> int | None:
    last = None
    for sub in module.modules():
        if hasattr(sub, "out_features"):
            last = sub
    return int(last.out_features) if last is not None else None


def functional(model: nn.Module, *, eval_mode: bool = False) -> FunctionalModel:
    """View ``model`` as ``f(params, x)`` with θ0 frozen as a dict of tensor copies.

    Args:
        model: any ``nn.Module`` mapping a batch [B, ...] to outputs [B, d_y] (or [B]: d_y = 1).
        eval_mode: call ``model.eval()`` first (in place), so Dropout is off and BatchNorm uses
            its running statistics.

    Returns:
        A :class:`FunctionalModel`; ``fm.params`` is θ0.

    Raises:
        TypeError: if ``model`` is not an ``nn.Module``.
        ValueError: if a submodule makes the output random or batch-dependent (Dropout or
            BatchNorm in training mode, ...), naming it and the fix.

    Example:
        >>> import torch
        >>> fm = functional(torch.nn.Linear(3, 2))
        >>> fm.n_params, fm.output_dim
        (8, 2)
        >>> fm(fm.params, torch.zeros(5, 3)).shape
        torch.Size([5, 2])
    """
    return FunctionalModel(model, eval_mode=eval_mode)


def _check_tangent(params: Mapping[str, Tensor], tangent: Mapping[str, Tensor], arg: str) -> None:
    if set(tangent) != set(params):
        missing = sorted(set(params) - set(tangent))
        extra = sorted(set(tangent) - set(params))
        raise ValueError(
            f"`{arg}` must have the same keys as the parameters; missing {missing}, "
            f"unexpected {extra}. Build it with weakcorr.functional.zeros_like(params)."
        )
    for name, p in params.items():
        if tangent[name].shape != p.shape:
            raise ValueError(
                f"`{arg}[{name!r}]` has shape {tuple(tangent[name].shape)}, "
                f"the parameter has {tuple(p.shape)}."
            )


def jvp(
    fm: FunctionalModel, params: Mapping[str, Tensor], x: Tensor, tangent: Mapping[str, Tensor]
) -> tuple[Tensor, Tensor]:
    """Forward mode: ``(f(params)(x), J(params)(x) · tangent)``, both [B, d_y]."""
    _check_tangent(params, tangent, "tangent")
    return _torch_jvp(lambda p: fm(p, x), (dict(params),), (dict(tangent),))


def vjp(
    fm: FunctionalModel, params: Mapping[str, Tensor], x: Tensor, cotangent: Tensor
) -> Params:
    """Reverse mode: ``J(params)(x)ᵀ · cotangent`` as a dict like ``params``.

    Args:
        cotangent: [B, d_y], the same shape as the output on ``x``.
    """
    out, pullback = _torch_vjp(lambda p: fm(p, x), dict(params))
    if cotangent.shape != out.shape:
        raise ValueError(
            f"`cotangent` must have the output's shape {tuple(out.shape)}, "
            f"got {tuple(cotangent.shape)}."
        )
    return pullback(cotangent)[0]


def directional_derivative(
    fm: FunctionalModel,
    params: Mapping[str, Tensor],
    x: Tensor,
    directions: Sequence[Mapping[str, Tensor]],
) -> Tensor:
    """Exact mixed directional derivative of the output, by nested forward mode.

    .. math::

        \\partial_{a_1}\\cdots\\partial_{a_k} f\\Big(\\theta + \\sum_{j=1}^k a_j v_j\\Big)(x)
        \\Big|_{a=0} = \\nabla^k f(\\theta)(x)[v_1, \\dots, v_k]

    (paper Eq. 13).  Directions may repeat: ``[v, v]`` gives the second
    derivative along ``v``.  Cost: ~2^k forward passes, O(N) memory.

    Args:
        fm: the functional model.
        params: θ at which to differentiate.
        x: a batch [B, ...]; the derivative is computed for every row.
        directions: k >= 1 tangents (dicts like ``params``).

    Returns:
        Tensor [B, d_y].

    Example:
        >>> import torch
        >>> fm = functional(torch.nn.Linear(2, 1))
        >>> v = zeros_like(fm.params)
        >>> directional_derivative(fm, fm.params, torch.ones(1, 2), [v, v]).abs().sum().item()
        0.0
    """
    if len(directions) < 1:
        raise ValueError(
            f"`directions` must hold at least one tangent, got {len(directions)}; "
            "for the value itself call fm(params, x)."
        )
    for j, v in enumerate(directions):
        _check_tangent(params, v, f"directions[{j}]")

    def base(p: Params) -> Tensor:
        return fm(p, x)

    g = base
    for v in directions:
        g = _differentiate_along(g, dict(v))
    return g(dict(params))


def _differentiate_along(g, v: Params):
    def dg(p: Params) -> Tensor:
        return _torch_jvp(g, (p,), (v,))[1]

    return dg


# --- tangent algebra ----------------------------------------------------------------------------


def add(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> Params:
    """a + b, key by key."""
    return {k: a[k] + b[k] for k in a}


def sub(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> Params:
    """a − b, key by key."""
    return {k: a[k] - b[k] for k in a}


def scale(a: Mapping[str, Tensor], s: float | Tensor) -> Params:
    """s · a, key by key."""
    return {k: v * s for k, v in a.items()}


def dot(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> Tensor:
    """Euclidean inner product ⟨a, b⟩ over all parameters (a 0-d tensor)."""
    return sum((a[k] * b[k]).sum() for k in a)


def norm(a: Mapping[str, Tensor]) -> Tensor:
    """Euclidean norm ‖a‖ over all parameters (a 0-d tensor)."""
    return torch.sqrt(dot(a, a))


def zeros_like(a: Mapping[str, Tensor]) -> Params:
    """A zero tangent with the keys, shapes, dtypes and devices of ``a``."""
    return {k: torch.zeros_like(v) for k, v in a.items()}


def random_unit(a: Mapping[str, Tensor], *, generator: torch.Generator | None = None) -> Params:
    """A uniformly random direction on the unit sphere of parameter space."""
    v = {
        k: torch.randn(t.shape, generator=generator, dtype=t.dtype, device="cpu").to(t.device)
        for k, t in a.items()
    }
    return scale(v, 1.0 / norm(v))


def flatten(a: Mapping[str, Tensor]) -> Tensor:
    """Concatenate a tangent into one vector [N] (in key order)."""
    return torch.cat([t.reshape(-1) for t in a.values()])


def unflatten(vec: Tensor, like: Mapping[str, Tensor]) -> Params:
    """Inverse of :func:`flatten`: split ``vec`` [N] into a dict shaped like ``like``."""
    n = sum(t.numel() for t in like.values())
    if vec.ndim != 1 or vec.numel() != n:
        raise ValueError(f"`vec` must be a vector of {n} entries, got shape {tuple(vec.shape)}.")
    out, i = {}, 0
    for k, t in like.items():
        out[k] = vec[i : i + t.numel()].reshape(t.shape)
        i += t.numel()
    return out


def n_elements(a: Mapping[str, Tensor]) -> int:
    """Number of scalars in a tangent."""
    return sum(math.prod(t.shape) for t in a.values())


class _CallableModule(types.ModuleType):
    """Lets ``weakcorr.functional(model)`` and ``weakcorr.functional.jvp`` coexist.

    The paper-facing API spells the conversion ``wc.functional(model)`` while the
    module of the same name holds the derivative tools; a callable module keeps
    both spellings without shadowing the module by the function.
    """

    def __call__(self, model: nn.Module, *, eval_mode: bool = False) -> FunctionalModel:
        return functional(model, eval_mode=eval_mode)


sys.modules[__name__].__class__ = _CallableModule
