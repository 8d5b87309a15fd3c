"""The one activation table: φ, φ′ in closed form where known, derivatives by jvp otherwise.

Every fast path takes its activation values from here:

* :func:`value_and_slope` — φ(z) and φ′(z) for the hand-written training passes
  (``weakcorr._train``, ``weakcorr._vmap_train``): the closed form of :data:`CLOSED_FORMS` when
  the activation has a name there, else one forward-mode jvp of φ with unit tangent;
* :func:`slope_by_jvp` — φ(z), φ′(z) by one jvp of the module's own φ (the structured NTK,
  :mod:`weakcorr._ntk`, which must agree with autodiff of the module to the bit);
* :func:`derivatives` — ``[φ, φ′, …, φ^(k)]`` by nested jvps (the Taylor-mode correlations,
  :mod:`weakcorr._mlp_taylor`), or the closed forms of :data:`HIGHER` for the modules whose
  ATen kernels have no second forward derivative (``nn.Hardsigmoid``);
* :data:`PHI` — φ as :mod:`weakcorr.models` computes it (the network's own forward pass).

All values are exact (closed forms or automatic differentiation); nothing here uses finite
differences.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import jvp as _jvp

__all__ = [
    "CLOSED_FORMS",
    "ELEMENTWISE",
    "HIGHER",
    "PHI",
    "ClosedForm",
    "derivatives",
    "module_activation_name",
    "slope_by_jvp",
    "value_and_slope",
]

Pair = Callable[[Tensor], tuple[Tensor, Tensor]]


def exact_gelu(z: Tensor) -> Tensor:
    """GELU in its exact (erf) form z · Φ(z), as :class:`weakcorr.models.MLP` computes it."""
    return 0.5 * z * (1.0 + torch.erf(z / math.sqrt(2.0)))


def _gelu_pair(z: Tensor) -> tuple[Tensor, Tensor]:
    # φ(z) = zΦ(z), φ'(z) = Φ(z) + zφ(z): ATen's fused kernels, one pass each, much faster on
    # CPU than the same formulas as separate erf/exp/mul ops (the seed batches' hot loop). The
    # incoming gradient of ones is a real tensor: broadcast from a scalar, gelu_backward is
    # slower (benchmarks/RESULTS.md, "GELU pair").
    return torch.nn.functional.gelu(z), torch.ops.aten.gelu_backward(torch.ones_like(z), z)


def _sigmoid_pair(z: Tensor) -> tuple[Tensor, Tensor]:
    s = torch.sigmoid(z)
    return s, s * (1.0 - s)


def _tanh_pair(z: Tensor) -> tuple[Tensor, Tensor]:
    t = torch.tanh(z)
    return t, 1.0 - t * t


def _erf_pair(z: Tensor) -> tuple[Tensor, Tensor]:
    return torch.erf(z), (2.0 / math.sqrt(math.pi)) * torch.exp(-z * z)


def _relu_pair(z: Tensor) -> tuple[Tensor, Tensor]:
    return torch.relu(z), (z > 0).to(z.dtype)


@dataclass(frozen=True)
class ClosedForm:
    """A named activation's closed forms.

    Attributes:
        phi: φ as the network computes it (:data:`PHI`).
        fast_phi: φ alone by the kernel the ``pair`` uses (GELU: ATen's, which differs from
            ``phi`` in the last bits); for outputs that need no φ′.
        pair: ``z ↦ (φ(z), φ′(z))`` in closed form (tested against autodiff of ``phi``).
    """

    phi: Callable[[Tensor], Tensor]
    fast_phi: Callable[[Tensor], Tensor]
    pair: Pair


# φ and φ' in closed form for the named activations of weakcorr.models (and the nn modules
# that compute exactly the same function, see module_activation_name).
CLOSED_FORMS: dict[str, ClosedForm] = {
    "relu": ClosedForm(torch.relu, torch.relu, _relu_pair),
    "gelu": ClosedForm(exact_gelu, torch.nn.functional.gelu, _gelu_pair),
    "erf": ClosedForm(torch.erf, torch.erf, _erf_pair),
    "sigmoid": ClosedForm(torch.sigmoid, torch.sigmoid, _sigmoid_pair),
    "tanh": ClosedForm(torch.tanh, torch.tanh, _tanh_pair),
}

PHI: dict[str, Callable[[Tensor], Tensor]] = {k: v.phi for k, v in CLOSED_FORMS.items()}

# Modules that act elementwise (φ' is a diagonal Jacobian), matched by exact type: a subclass
# may override forward. Their derivatives come from jvp unless module_activation_name names them.
ELEMENTWISE: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.ELU, nn.SiLU, nn.Softplus, nn.LeakyReLU,
    nn.Mish, nn.SELU, nn.CELU, nn.Hardtanh, nn.Hardsigmoid, nn.Hardswish, nn.Tanhshrink,
    nn.Softsign, nn.LogSigmoid, nn.ReLU6,
)


def module_activation_name(module: nn.Module) -> str | None:
    """The :data:`CLOSED_FORMS` name of an activation module computing exactly that φ, or None."""
    kind = type(module)
    if kind is nn.Tanh:
        return "tanh"
    if kind is nn.Sigmoid:
        return "sigmoid"
    if kind is nn.ReLU:
        return "relu"
    if kind is nn.GELU and module.approximate == "none":
        return "gelu"
    return None


def slope_by_jvp(fn: Callable[[Tensor], Tensor], z: Tensor) -> tuple[Tensor, Tensor]:
    """φ(z) and φ′(z) for an elementwise φ, exactly, by one forward-mode pass."""
    return _jvp(fn, (z,), (torch.ones_like(z),))


def value_and_slope(fn: Callable[[Tensor], Tensor], name: str | None, z: Tensor
                    ) -> tuple[Tensor, Tensor]:
    """φ(z), φ′(z): the closed form of activation ``name`` if the table has one, else a jvp
    of ``fn``."""
    form = CLOSED_FORMS.get(name) if name is not None else None
    if form is not None:
        return form.pair(z)
    return slope_by_jvp(fn, z)


def fast_value(fn: Callable[[Tensor], Tensor], name: str | None) -> Callable[[Tensor], Tensor]:
    """φ alone, by the same kernel as :func:`value_and_slope`'s φ (``fn`` without a closed form)."""
    form = CLOSED_FORMS.get(name) if name is not None else None
    return form.fast_phi if form is not None else fn


def _hardsigmoid_derivatives(fn: Callable[[Tensor], Tensor], z: Tensor, order: int
                             ) -> list[Tensor]:
    # relu6(z + 3) / 6: slope 1/6 on (-3, 3) (where ATen's backward passes the gradient), 0
    # elsewhere, no curvature. ATen's hardsigmoid_backward has no forward derivative, so nested
    # jvps stop at the first order.
    inside = (z > -3.0) & (z < 3.0)
    slope = torch.where(inside, torch.full_like(z, 1.0 / 6.0), torch.zeros_like(z))
    return [fn(z), slope, *(torch.zeros_like(z) for _ in range(order - 1))][: order + 1]


# Derivatives of every order in closed form, for modules whose kernels nested jvps cannot take.
HIGHER: dict[type[nn.Module], Callable[[Callable[[Tensor], Tensor], Tensor, int], list[Tensor]]] = {
    nn.Hardsigmoid: _hardsigmoid_derivatives,
}


def derivatives(fn: Callable[[Tensor], Tensor], z: Tensor, order: int) -> list[Tensor]:
    """``[φ(z), φ′(z), ..., φ^(order)(z)]`` elementwise: the closed forms of :data:`HIGHER`
    where the activation has them, else nested jvps with unit tangents."""
    closed = HIGHER.get(type(fn))
    if closed is not None:
        return closed(fn, z, order)
    ones = torch.ones_like(z)

    def h(u: Tensor) -> tuple[Tensor, ...]:
        return (fn(u),)

    for _ in range(order):
        h = _extend(h, ones)
    return list(h(z))


def _extend(h: Callable[[Tensor], tuple[Tensor, ...]], v: Tensor
            ) -> Callable[[Tensor], tuple[Tensor, ...]]:
    def hk(u: Tensor) -> tuple[Tensor, ...]:
        primals, tangents = _jvp(h, (u,), (v,))
        return (*primals, tangents[-1])

    return hk
