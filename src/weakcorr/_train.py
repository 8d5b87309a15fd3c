"""Internals of :mod:`weakcorr.train`: RunResult, losses, batch order, the linear model's
passes, metrics.

The linear model f_lin(θ0 + Δ) = f(θ0) + J(θ0)Δ (Eq. 27) is trained by its exact gradient
J(θ0)ᵀ r, a vjp at θ0 (never a backward pass through the jvp). Two implementations:

* generic (:func:`_primal_and_tangent`): one forward pass at θ0 carrying f(θ0) with its
  autograd graph and J(θ0)Δ as a forward-mode tangent; the backward pass of f(θ0) with
  cotangent r gives J(θ0)ᵀ r;
* fused, for ``weakcorr.models.MLP`` (:func:`_mlp_linear_pass`): the same primal, tangent and
  pullback written out by hand, sharing φ and φ' between them; the structure and φ, φ' come
  from :mod:`weakcorr._mlp` (:func:`fused_refusal` says when it does not apply).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any, Protocol

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor, nn

from . import _mlp
from ._files import json_safe as _json_safe
from .functional import FunctionalModel
from .ntk import empirical_ntk

DIVERGENCE_FACTOR = 1e6

SCHEMA_VERSION = 1


class DatasetLike(Protocol):
    X_train: Tensor
    Y_train: Tensor
    labels_train: Tensor
    X_test: Tensor
    Y_test: Tensor
    labels_test: Tensor


@dataclasses.dataclass
class RunResult:
    """One paired run: configuration, step-wise logs, final metrics, status.

    ``metrics`` keys: ``mse_test``, ``mse_train`` (Eq. 30: mean over points of
    ‖f − f_lin‖² over outputs), ``c_test``, ``c_train`` (Eq. 24 with d_y in place
    of 10), ``loss_{f,lin}_{test,train}``, ``acc_{f,lin}_{test,train}``,
    ``param_distance`` (‖θ − θ0‖) and ``param_distance_lin`` (‖Δ‖). Non-finite
    values are stored as ``None``; with ``linearized=False`` the f_lin metrics are ``None``.

    ``status``: ``"ok"``; ``"diverged"`` (``diverged_step`` is the step whose loss was
    non-finite or 1e6 times its first value; logs stop there); ``"failed"`` is recorded by
    callers that catch an exception (``error`` holds it), e.g. :mod:`weakcorr.experiments`.
    ``versions``: ``{"weakcorr", "torch", "python"}``.

    ``params`` (only with ``paired_sgd(..., return_params=True)``; never serialised): the
    trained parameters, ``{"theta": θ, "theta_lin": θ0 + Δ}`` (``theta_lin`` is ``None`` with
    ``linearized=False``), dicts name → detached tensor. ``fm(params["theta"], x)`` is the
    trained network and ``weakcorr.linearize.linearize(fm)(params["theta_lin"], x)`` the
    trained linearization, at any input ``x``.
    """

    config: dict[str, Any]
    status: str = "ok"
    diverged_step: int | None = None
    error: str | None = None
    logs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    metrics: dict[str, float | None] = dataclasses.field(default_factory=dict)
    seed: int = 0
    wall_time_s: float = 0.0
    versions: dict[str, str] = dataclasses.field(default_factory=dict)
    device: str = "cpu"
    dtype: str = "float32"
    schema_version: int = SCHEMA_VERSION
    params: dict[str, dict[str, Tensor] | None] | None = dataclasses.field(
        default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of every field but ``params`` (non-finite floats become ``None``)."""
        d = dataclasses.asdict(dataclasses.replace(self, params=None))
        del d["params"]
        return _json_safe(d)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunResult:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: unknown or missing fields, or another ``schema_version``.
        """
        names = {f.name for f in dataclasses.fields(cls)} - {"params"}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown RunResult fields {unknown}; valid fields: {sorted(names)}.")
        if "config" not in d:
            raise ValueError("`d` has no 'config' field; pass a dict made by RunResult.to_dict().")
        version = d.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise ValueError(
                f"`schema_version` {version!r} is not supported; this weakcorr reads "
                f"version {SCHEMA_VERSION}."
            )
        return cls(**dict(d))

    def to_json(self, **kwargs: Any) -> str:
        """:meth:`to_dict` as a JSON string (``kwargs`` go to ``json.dumps``)."""
        return json.dumps(self.to_dict(), allow_nan=False, **kwargs)

    @classmethod
    def from_json(cls, s: str) -> RunResult:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(s))


class Loss(StrEnum):
    MSE = "mse"
    CROSS_ENTROPY = "cross_entropy"


def _loss_value(loss: Loss, out: Tensor, y: Tensor) -> Tensor:
    if loss is Loss.MSE:  # nn.MSELoss(reduction="mean"): mean over batch and outputs
        return ((out - y) ** 2).mean()
    return -(y * torch.log_softmax(out, dim=-1)).sum(-1).mean()


def _loss_grad(loss: Loss, out: Tensor, y: Tensor) -> Tensor:
    """C'(out): the derivative of the mean-reduced loss with respect to the outputs."""
    if loss is Loss.MSE:
        return 2.0 * (out - y) / out.numel()
    # d/dout of -(y·log_softmax(out)).sum(-1).mean(): exact also for targets not summing to 1.
    return (torch.softmax(out, dim=-1) * y.sum(-1, keepdim=True) - y) / out.shape[0]


def _check_positive(name: str, value: float, *, integer: bool = False) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) if integer else isinstance(value, (int, float))
    if not ok or not math.isfinite(value) or value <= 0:
        kind = "a positive integer" if integer else "a finite positive number"
        raise ValueError(f"`{name}` must be {kind}, got {value!r}.")


def _check_shapes(
    fm: FunctionalModel, theta0: Mapping[str, Tensor], x_tr: Tensor, y_tr: Tensor,
    x_te: Tensor, y_te: Tensor,
) -> None:
    try:
        with torch.no_grad():
            out = fm(theta0, x_tr[:1])
    except RuntimeError as err:
        raise ValueError(
            f"the model cannot take the data's inputs of shape {tuple(x_tr.shape[1:])}: {err}. "
            "Match the model's input dimension to the dataset (e.g. d_in=784 for MNIST)."
        ) from None
    if out.ndim != 2 or out.shape[1] != y_tr.shape[1]:
        raise ValueError(
            f"the model's output shape {tuple(out.shape[1:])} does not match the targets' "
            f"{tuple(y_tr.shape[1:])}; set the model's d_out to {y_tr.shape[1]}."
        )
    if x_te.shape[1:] != x_tr.shape[1:] or y_te.shape[1:] != y_tr.shape[1:]:
        raise ValueError("`data` has train and test sets of different feature or target shapes.")
    for name, t in (("X_train", x_tr), ("Y_train", y_tr), ("X_test", x_te), ("Y_test", y_te)):
        if not torch.isfinite(t).all():
            raise ValueError(f"`data.{name}` contains NaN or infinite values; clean the data first.")


def _batch_order(
    n: int, batch_size: int, steps: int, seed: int, device: torch.device | str
) -> list[Tensor]:
    """One shuffled order per epoch with drop_last, seeded, shared by both models."""
    gen = torch.Generator().manual_seed(seed)
    per_epoch = n // batch_size
    out: list[Tensor] = []
    while len(out) < steps:
        perm = torch.randperm(n, generator=gen)
        out.extend(perm[i * batch_size:(i + 1) * batch_size].to(device) for i in range(per_epoch))
    return out[:steps]


def _primal_and_tangent(
    fm: FunctionalModel, theta0_leaf: Mapping[str, Tensor], delta: Mapping[str, Tensor], x: Tensor
) -> tuple[Tensor, Tensor]:
    """One forward pass at θ0 giving f(θ0)(x) (with its autograd graph) and J(θ0)(x)Δ."""
    with fwAD.dual_level():
        duals = {k: fwAD.make_dual(theta0_leaf[k], delta[k]) for k in theta0_leaf}
        out = fm(duals, x)
        primal, tangent = fwAD.unpack_dual(out)
    if tangent is None:  # Δ = 0 on a path that never touched the tangent
        tangent = torch.zeros_like(primal)
    return primal, tangent.detach()


def fused_refusal(model: nn.Module, params: Mapping[str, Tensor]) -> str | None:
    """Why the hand-written MLP passes do not apply to ``model`` (None: they do).

    The structure comes from the one recogniser, :func:`weakcorr._mlp.training_layers`, which
    the structured NTK, the Taylor-mode correlations and :mod:`weakcorr._vmap_train` share.
    """
    spec = _mlp.training_layers(model)
    if isinstance(spec, str):
        return spec
    names = {n for op in spec.linears for n in (op.weight, op.bias) if n is not None}
    if names != set(params):
        return "its parameters are not exactly the weights and biases of its linear layers"
    return None


def _is_plain_mlp(model: nn.Module, params: Mapping[str, Tensor]) -> bool:
    """True for models the hand-written MLP passes take (:func:`fused_refusal` is None)."""
    return fused_refusal(model, params) is None


def _spec(model: nn.Module | _mlp.Layered) -> _mlp.Layered:
    if isinstance(model, _mlp.Layered):
        return model
    spec = _mlp.training_layers(model)
    if isinstance(spec, str):
        raise ValueError(f"`model` is not a weakcorr MLP for the hand-written passes: {spec}.")
    return spec


def _act_and_derivative(model: nn.Module, z: Tensor) -> tuple[Tensor, Tensor]:
    """φ(z), φ'(z) of a weakcorr MLP's activation (the activation table's closed form, else jvp)."""
    return _mlp.value_and_slope(model.act, getattr(model, "activation_name", None), z)


Primal = tuple[Tensor, list[Tensor], list[Tensor]]  # f(θ0)(x), hidden h_l(θ0), φ'(z_l(θ0))


@torch.no_grad()
def _mlp_primal(model: nn.Module | _mlp.Layered, theta0: Mapping[str, Tensor], x: Tensor
                ) -> Primal:
    """The forward pass at θ0 of an MLP, keeping what the tangent and the pullback need."""
    spec = _spec(model)
    linears = spec.linears
    hs, dphis = [], []
    h = x
    for i, lin in enumerate(linears):
        z = h @ theta0[lin.weight].T
        if lin.weight_multiplier != 1.0:
            z = lin.weight_multiplier * z
        if lin.bias is not None:
            z = z + lin.bias_multiplier * theta0[lin.bias]
        if i == len(linears) - 1:
            f0 = spec.scale * z if spec.scale != 1.0 else z
            return f0, hs, dphis
        act = spec.acts[i]
        h, dphi = _mlp.value_and_slope(act.fn, act.name, z)
        hs.append(h)
        dphis.append(dphi)
    raise AssertionError("unreachable: an MLP has an output layer")


@torch.no_grad()
def _mlp_linear_pass(
    model: nn.Module | _mlp.Layered, theta0: Mapping[str, Tensor], delta: Mapping[str, Tensor],
    x: Tensor, primal: Primal | None = None,
) -> tuple[Tensor, Tensor, Callable[[Tensor], list[Tensor]]]:
    """f(θ0)(x), J(θ0)(x)Δ and the pullback r ↦ J(θ0)(x)ᵀr for an MLP, written out by hand.

    The same mathematics as :func:`_primal_and_tangent` plus a backward pass, without
    autograd bookkeeping: φ and φ' are computed once per layer (closed forms for the named
    activations, else one jvp of the elementwise activation: :mod:`weakcorr._mlp`'s table) and
    shared by the tangent and the backward pass. ``primal`` (from :func:`_mlp_primal` on the
    same rows, e.g. cached from an earlier epoch) skips the forward pass at θ0.
    """
    spec = _spec(model)
    linears = spec.linears
    f0, hs, dphis = primal if primal is not None else _mlp_primal(spec, theta0, x)
    inputs = [x, *hs]
    h_dot = None
    for i, lin in enumerate(linears):
        h, dw = inputs[i], delta[lin.weight]
        z_dot = h @ dw.T
        if h_dot is not None:
            z_dot = z_dot.addmm_(h_dot, theta0[lin.weight].T)
        if lin.weight_multiplier != 1.0:
            z_dot = lin.weight_multiplier * z_dot
        if lin.bias is not None:
            z_dot = z_dot + lin.bias_multiplier * delta[lin.bias]
        if i < len(linears) - 1:
            h_dot = dphis[i] * z_dot
    jd = spec.scale * z_dot if spec.scale != 1.0 else z_dot

    def pullback(r: Tensor) -> list[Tensor]:
        grads: dict[str, Tensor] = {}
        g = spec.scale * r
        for i in range(len(linears) - 1, -1, -1):
            lin = linears[i]
            a, c = lin.weight_multiplier, lin.bias_multiplier
            grads[lin.weight] = a * (g.T @ inputs[i])
            if lin.bias is not None:
                grads[lin.bias] = c * g.sum(0)
            if i > 0:
                g = a * (g @ theta0[lin.weight]) * dphis[i - 1]
        return [grads[k] for k in theta0]

    return f0, jd, pullback


PRIMAL_CACHE_GB = 1.0


class _PrimalCache:
    """f(θ0), h_l(θ0) and φ'(z_l(θ0)) of every training example, filled on first use.

    From the second epoch on a batch's forward pass at θ0 is a lookup: the linear model's
    step then costs its tangent and pullback only. Used when the whole cache fits in
    :data:`PRIMAL_CACHE_GB` and some batch repeats examples already seen.
    """

    def __init__(self, model: nn.Module, n: int, like: Tensor) -> None:
        widths = self._widths(model)
        kw = dict(dtype=like.dtype, device=like.device)
        self.f0 = torch.empty(n, widths[-1], **kw)
        self.hs = [torch.empty(n, w, **kw) for w in widths[:-1]]
        self.dphis = [torch.empty(n, w, **kw) for w in widths[:-1]]

    @staticmethod
    def _widths(model: nn.Module) -> list[int]:
        params = dict(model.named_parameters())
        return [params[lin.weight].shape[0] for lin in _spec(model).linears]

    @staticmethod
    def nbytes(model: nn.Module, n: int, itemsize: int) -> int:
        widths = _PrimalCache._widths(model)
        return n * itemsize * (widths[-1] + 2 * sum(widths[:-1]))

    def get(self, idx: Tensor) -> Primal:
        return self.f0[idx], [h[idx] for h in self.hs], [d[idx] for d in self.dphis]

    def put(self, idx: Tensor, primal: Primal) -> None:
        f0, hs, dphis = primal
        self.f0[idx] = f0
        for store, value in zip(self.hs + self.dphis, hs + dphis, strict=True):
            store[idx] = value


def _repeat_flags(batches_cpu: list[Tensor], n: int) -> list[bool]:
    """For each step, whether every example of its batch appeared in an earlier batch."""
    seen = torch.zeros(n, dtype=torch.bool)
    flags = []
    for idx in batches_cpu:
        flags.append(bool(seen[idx].all()))
        seen[idx] = True
    return flags


def _diverged(entry: Mapping[str, float], first: float) -> bool:
    """Whether a loss of ``entry`` is not finite or over 1e6 times the first one in size.

    Magnitudes, so that a loss that can be negative (cross-entropy with targets that are not
    probability vectors) is not "diverged" at once; the same test for losses >= 0.
    """
    limit = DIVERGENCE_FACTOR * max(abs(first), 1e-12)
    for key in ("loss_f", "loss_lin"):
        value = entry.get(key)
        if value is not None and (not math.isfinite(value) or abs(value) > limit):
            return True
    return False


def _norm(t: Mapping[str, Tensor]) -> float:
    return math.sqrt(sum(float((v.double() ** 2).sum()) for v in t.values()))


def _distance(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> float:
    return math.sqrt(sum(float(((a[k].detach() - b[k]).double() ** 2).sum()) for k in a))


@torch.no_grad()
def _outputs(
    fm: FunctionalModel, theta: Mapping[str, Tensor], theta0: Mapping[str, Tensor],
    delta: Mapping[str, Tensor], x: Tensor, chunk: int = 1024,
) -> tuple[Tensor, Tensor]:
    """f(θ)(x) and f_lin(θ0 + Δ)(x), in chunks."""
    f_parts, lin_parts = [], []
    th = {k: v.detach() for k, v in theta.items()}
    for i in range(0, len(x), chunk):
        xc = x[i:i + chunk]
        f_parts.append(fm(th, xc))
        with fwAD.dual_level():
            out = fm({k: fwAD.make_dual(theta0[k], delta[k]) for k in theta0}, xc)
            primal, tangent = fwAD.unpack_dual(out)
        lin_parts.append(primal + (tangent if tangent is not None else 0.0))
    return torch.cat(f_parts), torch.cat(lin_parts)


def _final_metrics(
    fm: FunctionalModel, theta: Mapping[str, Tensor], theta0: Mapping[str, Tensor],
    delta: Mapping[str, Tensor], linearized: bool, loss_kind: Loss, data: Any,
    x_tr: Tensor, y_tr: Tensor, x_te: Tensor, y_te: Tensor,
) -> dict[str, float | None]:
    metrics: dict[str, float | None] = {"param_distance": _distance(theta, theta0)}
    for split, x, y, labels in (("test", x_te, y_te, data.labels_test),
                                ("train", x_tr, y_tr, data.labels_train)):
        if len(x) == 0:
            continue
        f, lin = _outputs(fm, theta, theta0, delta, x)
        labels = labels.to(f.device)
        metrics[f"loss_f_{split}"] = _loss_value(loss_kind, f, y).item()
        metrics[f"acc_f_{split}"] = (f.argmax(-1) == labels).double().mean().item()
        if linearized:
            diff2 = ((f - lin) ** 2).sum().item()
            metrics[f"mse_{split}"] = diff2 / len(x)  # Eq. 30
            metrics[f"c_{split}"] = math.sqrt(diff2) / (f.shape[1] * len(x))  # Eq. 24
            metrics[f"loss_lin_{split}"] = _loss_value(loss_kind, lin, y).item()
            metrics[f"acc_lin_{split}"] = (lin.argmax(-1) == labels).double().mean().item()
        else:
            for key in ("mse", "c", "loss_lin", "acc_lin"):
                metrics[f"{key}_{split}"] = None
    metrics["param_distance_lin"] = _norm(delta) if linearized else None
    return _json_safe(metrics)


def _probe_kernel(fm: FunctionalModel, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
    """Θ(θ)(x, x)/η on the probe batch (structured when the model allows it)."""
    return empirical_ntk(fm, x, params=params)
