"""The one MLP recogniser: a module as a chain of affine layers and elementwise maps, or why not.

A *chain* describes a network

    h_0 = x,   z_k = m_k · h_{k-1} W_kᵀ + c_k · b_k,   h_k = φ_k(z_k)   (or h_k = z_k),

optionally followed by a constant output scale (paper Eq. 1 with the multipliers of the
parameterizations, App. A).  :func:`recognise` is the only code that reads a module's
structure; the structured NTK (:mod:`weakcorr._ntk`), the Taylor-mode correlations
(:mod:`weakcorr._mlp_taylor`) and the hand-written training passes (:mod:`weakcorr._train`,
:mod:`weakcorr._vmap_train`) all take its answer, so they accept the same models and refuse
the others with the same reason.

Recognised:

* ``weakcorr.models.MLP``, by its attribute names (this layer sits below :mod:`weakcorr.models`):
  ``linears`` (an ``nn.ModuleList`` of leaf layers with a 2-D ``weight``, ``bias``,
  ``weight_multiplier`` and ``bias_multiplier``), ``act``, ``activation_name`` and a float
  ``output_scale``;
* ``nn.Sequential``, nested too, of ``nn.Linear`` (exact type), scaled linear layers (as above),
  ``nn.Identity`` and the elementwise activation modules of
  :data:`weakcorr._mlp._activations.ELEMENTWISE` (exact types: a subclass may override forward);
* a single linear layer.

Every trainable parameter must be a weight or bias of the chain, used once (a tied layer's
second use has no parameters of its own), no parameter may be frozen, and the module may
have no buffers.  The children of a Sequential are walked through ``_modules``, not
``named_children()``, which yields a module used twice only once (e3fb5b2).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from ..functional import FunctionalModel
from ._activations import ELEMENTWISE, module_activation_name

__all__ = [
    "ActOp",
    "Chain",
    "Layered",
    "LinearOp",
    "ScaleOp",
    "recognise",
    "recognise_fm",
    "training_layers",
]


@dataclasses.dataclass(frozen=True)
class LinearOp:
    """z = weight_multiplier · h @ Wᵀ + bias_multiplier · b (parameter names in the params dict)."""

    weight: str
    bias: str | None
    weight_multiplier: float = 1.0
    bias_multiplier: float = 1.0


@dataclasses.dataclass(frozen=True)
class ActOp:
    """h = fn(z), elementwise; ``name`` keys the closed forms of the activation table (or None)."""

    fn: Callable[[Tensor], Tensor]
    name: str | None = None


@dataclasses.dataclass(frozen=True)
class ScaleOp:
    """h = scale · z."""

    scale: float


Op = LinearOp | ActOp | ScaleOp
Chain = tuple[Op, ...]

# What a recognisable module looks like, for refusal messages.
EXPECTED = ("a weakcorr.models.MLP, or an nn.Sequential (nested too) of nn.Linear / scaled "
            "linear layers and elementwise activation modules")


def _is_scaled_linear(m: nn.Module) -> bool:
    return (
        isinstance(getattr(m, "weight", None), Tensor)
        and m.weight.ndim == 2
        and hasattr(m, "weight_multiplier")
        and hasattr(m, "bias_multiplier")
        and not m._modules
    )


def _is_linear(m: nn.Module) -> bool:
    return type(m) is nn.Linear or _is_scaled_linear(m)


def _linear_op(prefix: str, lin: nn.Module) -> LinearOp:
    dot = f"{prefix}." if prefix else ""
    has_bias = getattr(lin, "bias", None) is not None
    return LinearOp(
        weight=f"{dot}weight",
        bias=f"{dot}bias" if has_bias else None,
        weight_multiplier=float(getattr(lin, "weight_multiplier", 1.0)),
        bias_multiplier=float(getattr(lin, "bias_multiplier", 1.0)),
    )


def _is_weakcorr_mlp(module: nn.Module) -> bool:
    """Duck-typed :class:`weakcorr.models.MLP` (this layer may not import models)."""
    linears = getattr(module, "linears", None)
    return (
        isinstance(linears, nn.ModuleList)
        and callable(getattr(module, "act", None))
        and isinstance(getattr(module, "activation_name", None), str)
        and isinstance(getattr(module, "output_scale", None), float)
    )


def _mlp_ops(module: nn.Module) -> list[Op] | str:
    linears = module.linears
    if len(linears) == 0:
        return "it has no linear layer"
    ops: list[Op] = []
    seen: set[int] = set()
    for k, lin in enumerate(linears):
        if not _is_scaled_linear(lin):
            return (f"layer 'linears.{k}' is a {type(lin).__name__}, not a scaled linear layer "
                    "(weight, bias, weight_multiplier, bias_multiplier)")
        if id(lin) in seen:
            return f"layer 'linears.{k}' is an earlier layer used again (tied weights)"
        seen.add(id(lin))
        ops.append(_linear_op(f"linears.{k}", lin))
        if k < len(linears) - 1:
            ops.append(ActOp(module.act, module.activation_name))
    if module.output_scale != 1.0:
        ops.append(ScaleOp(module.output_scale))
    return ops


def _sequence_ops(prefix: str, module: nn.Module, seen: set[int]) -> list[Op] | str:
    where = f"layer {prefix!r}" if prefix else "the module"
    if _is_linear(module):
        if id(module) in seen:
            return f"{where} is an earlier linear layer used again (tied weights)"
        seen.add(id(module))
        return [_linear_op(prefix, module)]
    if type(module) is nn.Identity:
        return []
    if type(module) in ELEMENTWISE:
        return [ActOp(module, module_activation_name(module))]
    if type(module) is nn.Sequential:
        ops: list[Op] = []
        # Not named_children(): it yields a module used twice (a shared activation, a tied
        # Linear) once, and the chain would skip its second use.
        for name, child in module._modules.items():
            if child is None:
                continue
            sub = _sequence_ops(f"{prefix}.{name}" if prefix else name, child, seen)
            if isinstance(sub, str):
                return sub
            ops.extend(sub)
        return ops
    if not prefix:
        return f"the module is a {type(module).__name__}, not {EXPECTED}"
    return (f"{where} is a {type(module).__name__}, not a linear layer or an elementwise "
            "activation module")


def recognise(module: nn.Module) -> Chain | str:
    """The layer chain of ``module``, or the reason it is not one (see the module docstring).

    Args:
        module: any ``nn.Module``.

    Returns:
        The chain (a tuple of :class:`LinearOp`, :class:`ActOp`, :class:`ScaleOp`), or a
        lower-case clause saying why the module is not recognised, for error messages.

    Example:
        >>> from torch import nn
        >>> recognise(nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)))[1].name
        'tanh'
        >>> recognise(nn.Sequential(nn.Linear(2, 3), nn.Softmax(-1)))
        "layer '1' is a Softmax, not a linear layer or an elementwise activation module"
    """
    if not isinstance(module, nn.Module):
        return f"it is a {type(module).__name__}, not an nn.Module"
    ops = _mlp_ops(module) if _is_weakcorr_mlp(module) else _sequence_ops("", module, set())
    if isinstance(ops, str):
        return ops
    if not any(isinstance(op, LinearOp) for op in ops):
        return "it has no linear layer"
    names: set[str] = set()
    for op in ops:
        if isinstance(op, LinearOp):
            names.add(op.weight)
            if op.bias is not None:
                names.add(op.bias)
    params = dict(module.named_parameters())
    frozen = sorted(n for n, p in params.items() if not p.requires_grad)
    if frozen:
        return f"its parameters {frozen} are frozen (requires_grad=False)"
    other = sorted(set(params) - names)
    if other:
        return f"its parameters {other} are not weights or biases of its linear layers"
    missing = sorted(names - set(params))
    if missing:
        return f"its layers' {missing} are not parameters (tied or replaced)"
    buffers = [n for n, _ in module.named_buffers()]
    if buffers:
        return f"it has buffers {sorted(buffers)}"
    return tuple(ops)


def recognise_fm(fm: FunctionalModel) -> Chain | str:
    """:func:`recognise` for a functional model: its module's chain, if ``fm`` evaluates that
    module with exactly the chain's parameters (a subclass that evaluates something else, such
    as :func:`weakcorr.linearize.linearize`'s, is refused)."""
    if type(fm).__call__ is not FunctionalModel.__call__:
        return (f"it is a {type(fm).__name__}, which evaluates something other than its "
                "module's forward pass")
    chain = recognise(fm.module)
    if isinstance(chain, str):
        return chain
    if fm.buffers:
        return f"it has buffers {sorted(fm.buffers)}"
    names = {n for op in chain if isinstance(op, LinearOp)
             for n in (op.weight, op.bias) if n is not None}
    if names != set(fm.params):
        return "its parameters are not exactly the weights and biases of its linear layers"
    return chain


@dataclasses.dataclass(frozen=True)
class Layered:
    """A chain in the layered form the hand-written training passes take.

    ``linears[0], acts[0], linears[1], …, acts[-1], linears[-1]`` then ``· scale``.
    """

    linears: tuple[LinearOp, ...]
    acts: tuple[ActOp, ...]
    scale: float

    def signature(self, params: dict[str, Any]) -> tuple[Any, ...]:
        """What seeds trained together must share (shapes, multipliers, dtypes, activations)."""
        layers = tuple((tuple(params[op.weight].shape), op.bias is not None,
                        op.weight_multiplier, op.bias_multiplier, params[op.weight].dtype)
                       for op in self.linears)
        acts = tuple(a.name if a.name is not None else repr(a.fn) for a in self.acts)
        return (layers, acts, self.scale)


def training_layers(module: nn.Module) -> Layered | str:
    """The layered form of a ``weakcorr.models.MLP`` for the hand-written training passes, or
    why not.

    These passes (and their tests) cover the weakcorr MLP; other recognised chains (a
    Sequential) train through autodiff, which computes the same mathematics.
    """
    chain = recognise(module)
    if isinstance(chain, str):
        return chain
    if not _is_weakcorr_mlp(module):
        return "the hand-written training passes take weakcorr MLPs (models.mlp) only"
    scale = 1.0
    if isinstance(chain[-1], ScaleOp):
        scale, chain = chain[-1].scale, chain[:-1]
    linears = tuple(op for op in chain if isinstance(op, LinearOp))
    acts = tuple(op for op in chain if isinstance(op, ActOp))
    return Layered(linears, acts, scale)
