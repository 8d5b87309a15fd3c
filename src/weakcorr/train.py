"""A network trained beside its first-order linearization (paper Eq. 7, 8, 27; App. A.2).

:func:`paired_sgd` trains the network f(θ) and its linearization
f_lin(θ0 + Δ) = f(θ0) + J(θ0)Δ from one initialisation θ0 on one shuffled batch
order with plain SGD (no momentum, no weight decay). The linear model's gradient is
J(θ0)ᵀ r — reverse mode at θ0 — never a backward pass through the jvp: one forward
pass at θ0 carries both f(θ0) (with its autograd graph) and J(θ0)Δ (as a
forward-mode tangent), then one backward pass of f(θ0) with cotangent r gives the
update. :func:`kernel_dynamics` is the independent function-space check (Eq. 8).
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from typing import Any, Protocol

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor, nn

from . import __version__
from ._memory import check_memory_budget
from .functional import FunctionalModel, functional
from .ntk import empirical_ntk

__all__ = ["Loss", "RunResult", "kernel_dynamics", "paired_sgd"]

SCHEMA_VERSION = 1
DIVERGENCE_FACTOR = 1e6


class Loss(StrEnum):
    MSE = "mse"
    CROSS_ENTROPY = "cross_entropy"


class DatasetLike(Protocol):
    X_train: Tensor
    Y_train: Tensor
    labels_train: Tensor
    X_test: Tensor
    Y_test: Tensor
    labels_test: Tensor


def _loss_value(loss: Loss, out: Tensor, y: Tensor) -> Tensor:
    if loss is Loss.MSE:  # nn.MSELoss(reduction="mean"): mean over batch and outputs
        return ((out - y) ** 2).mean()
    return -(y * torch.log_softmax(out, dim=-1)).sum(-1).mean()


def _loss_grad(loss: Loss, out: Tensor, y: Tensor) -> Tensor:
    """C'(out): the derivative of the mean-reduced loss with respect to the outputs."""
    if loss is Loss.MSE:
        return 2.0 * (out - y) / out.numel()
    return (torch.softmax(out, dim=-1) - y) / out.shape[0]


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


@dataclasses.dataclass
class RunResult:
    """One paired run: configuration, step-wise logs, final metrics, status.

    ``metrics`` keys: ``mse_test``, ``mse_train`` (Eq. 30: mean over points of
    ‖f − f_lin‖² over outputs), ``c_test``, ``c_train`` (Eq. 24 with d_y in place
    of 10), ``loss_{f,lin}_{test,train}``, ``acc_{f,lin}_{test,train}``,
    ``param_distance`` (‖θ − θ0‖) and ``param_distance_lin`` (‖Δ‖). Non-finite
    values are stored as ``None``.
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

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of every field (non-finite floats become ``None``)."""
        return _json_safe(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunResult:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: unknown or missing fields, or another ``schema_version``.
        """
        names = {f.name for f in dataclasses.fields(cls)}
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


def _check_positive(name: str, value: float, *, integer: bool = False) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) if integer else isinstance(value, (int, float))
    if not ok or not math.isfinite(value) or value <= 0:
        kind = "a positive integer" if integer else "a finite positive number"
        raise ValueError(f"`{name}` must be {kind}, got {value!r}.")


def paired_sgd(
    model: nn.Module,
    data: DatasetLike,
    *,
    lr: float,
    steps: int,
    batch_size: int,
    seed: int,
    loss: str = "mse",
    log_every: int = 10,
    linearized: bool = True,
    probe_ntk: bool = False,
    progress: Callable[[int, int], None] | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    full_batch: bool = False,
    eval_every: int | None = None,
    extra_config: Mapping[str, Any] | None = None,
) -> RunResult:
    """Train a network and its linearization side by side (the A.2 protocol).

    Args:
        model: the initialised network (θ0); it is not modified.
        data: a dataset with ``X_train, Y_train, labels_train, X_test, Y_test, labels_test``.
        lr: SGD learning rate η for both models.
        steps: number of SGD steps.
        batch_size: mini-batch size; batches follow one shuffled order (``drop_last``),
            reshuffled each epoch, shared by both models.
        seed: seeds the batch order (the caller seeds the initialisation).
        loss: ``"mse"`` (``nn.MSELoss(reduction="mean")`` on one-hot targets) or
            ``"cross_entropy"``.
        log_every: log every this many steps (and at the last step). Entry ``step`` = s
            holds ``loss_f``, ``loss_lin`` and the discrepancy mean_b ‖f − f_lin‖² over
            output indices, all on step s's mini-batch before its update (what the SGD step
            computed), and ``param_distance`` ‖θ − θ0‖, ``param_distance_lin`` ‖Δ‖,
            ``kernel_change`` and ``mse_test`` after the update (s + 1 updates done).
        linearized: also train f_lin (``False``: the network only).
        probe_ntk: also log ‖Θ_s − Θ_0‖_F / ‖Θ_0‖_F on a fixed probe batch (≤ 16 points).
        progress: called as ``progress(step, steps)`` after every step.
        device, dtype: where and in which precision to train (default: the model's).
        full_batch: every step uses the whole training set (``batch_size`` ignored).
        eval_every: also log ``mse_test`` (Eq. 30 on the test set) every this many steps.
        extra_config: merged into ``RunResult.config`` (e.g. the sweep's width and α).

    Returns:
        A :class:`RunResult`; divergence (a non-finite loss or one 1e6 times its first
        value) ends the run with status ``"diverged"`` and never raises.
    """
    start = time.perf_counter()
    allowed = [v.value for v in Loss]
    if loss not in allowed:
        raise ValueError(f"`loss` must be one of {allowed}, got {loss!r}.")
    loss_kind = Loss(loss)
    _check_positive("lr", lr)
    _check_positive("steps", steps, integer=True)
    _check_positive("log_every", log_every, integer=True)
    if eval_every is not None:
        _check_positive("eval_every", eval_every, integer=True)
    n_train = len(data.X_train)
    if not full_batch:
        _check_positive("batch_size", batch_size, integer=True)
        if batch_size > n_train:
            raise ValueError(
                f"`batch_size` ({batch_size}) is larger than the training set ({n_train}); "
                "use at most the training set size or full_batch=True."
            )
    fm = functional(model)
    device = torch.device(device) if device is not None else fm.device
    dtype = dtype or fm.dtype
    theta0 = {k: v.to(device=device, dtype=dtype) for k, v in fm.params.items()}
    fm.buffers = {k: v.to(device=device) for k, v in fm.buffers.items()}
    x_tr, y_tr = data.X_train.to(device, dtype), data.Y_train.to(device, dtype)
    x_te, y_te = data.X_test.to(device, dtype), data.Y_test.to(device, dtype)
    _check_shapes(fm, theta0, x_tr, y_tr, x_te, y_te)

    config = {
        "lr": float(lr), "steps": steps, "batch_size": n_train if full_batch else batch_size,
        "seed": seed, "loss": loss_kind.value, "log_every": log_every, "linearized": linearized,
        "probe_ntk": probe_ntk, "full_batch": full_batch, "eval_every": eval_every,
        "n_params": fm.n_params, "model": repr(model), "n_train": n_train, "n_test": len(x_te),
        **dict(extra_config or {}),
    }
    result = RunResult(
        config=config, seed=seed, device=str(device), dtype=str(dtype).removeprefix("torch."),
        versions={"weakcorr": __version__, "torch": torch.__version__,
                  "python": platform.python_version()},
    )
    theta = {k: v.clone().requires_grad_(True) for k, v in theta0.items()}
    theta0_leaf = {k: v.clone().requires_grad_(True) for k, v in theta0.items()}
    delta = {k: torch.zeros_like(v) for k, v in theta0.items()}
    batches = _batch_order(n_train, n_train if full_batch else batch_size, steps, seed, device)
    probe = x_tr[: min(16, n_train)]
    kernel0 = _probe_kernel(fm, theta0, probe) if probe_ntk else None
    first_loss: float | None = None
    fused = linearized and _is_plain_mlp(model, theta0)

    for step, idx in enumerate(batches):
        xb, yb = x_tr[idx], y_tr[idx]
        out = fm(theta, xb)
        loss_f = _loss_value(loss_kind, out, yb)
        grads = torch.autograd.grad(loss_f, list(theta.values()))
        entry: dict[str, Any] = {"step": step, "loss_f": loss_f.item()}
        if linearized:
            if fused:
                f0, jd, pullback = _mlp_linear_pass(model, theta0, delta, xb)
            else:
                f0, jd = _primal_and_tangent(fm, theta0_leaf, delta, xb)
            f_lin = f0.detach() + jd
            loss_lin = _loss_value(loss_kind, f_lin, yb)
            r = _loss_grad(loss_kind, f_lin, yb)
            if fused:
                grads_lin = pullback(r)
            else:
                grads_lin = torch.autograd.grad(f0, list(theta0_leaf.values()), grad_outputs=r)
            entry["loss_lin"] = loss_lin.item()
            entry["discrepancy"] = ((out.detach() - f_lin) ** 2).sum(-1).mean().item()
        first_loss = first_loss if first_loss is not None else max(
            entry["loss_f"], entry.get("loss_lin", 0.0))
        if _diverged(entry, first_loss):
            result.status, result.diverged_step = "diverged", step
            result.logs.append(_json_safe(entry))
            break
        with torch.no_grad():
            for (k, p), g in zip(theta.items(), grads, strict=True):
                p.sub_(lr * g)
            if linearized:
                for (k, d), g in zip(delta.items(), grads_lin, strict=True):
                    d.sub_(lr * g)
        last = step == steps - 1
        if step % log_every == 0 or last or (eval_every and step % eval_every == 0):
            with torch.no_grad():
                entry["param_distance"] = _distance(theta, theta0)
                if linearized:
                    entry["param_distance_lin"] = _norm(delta)
            if kernel0 is not None:
                kernel = _probe_kernel(fm, {k: v.detach() for k, v in theta.items()}, probe)
                entry["kernel_change"] = (torch.linalg.norm(kernel - kernel0) / torch.linalg.norm(kernel0)).item()
            if eval_every and linearized and (step % eval_every == 0 or last):
                f_te, lin_te = _outputs(fm, theta, theta0, delta, x_te)
                entry["mse_test"] = ((f_te - lin_te) ** 2).sum(-1).mean().item()
            if step % log_every == 0 or last:
                result.logs.append(_json_safe(entry))
            elif "mse_test" in entry:
                result.logs.append(_json_safe({k: entry[k] for k in ("step", "mse_test")}))
        if progress is not None:
            progress(step + 1, steps)

    result.metrics = _final_metrics(fm, theta, theta0, delta, linearized, loss_kind, data,
                                    x_tr, y_tr, x_te, y_te)
    result.wall_time_s = time.perf_counter() - start
    return result


def _check_shapes(fm, theta0, x_tr, y_tr, x_te, y_te) -> None:
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


def _batch_order(n: int, batch_size: int, steps: int, seed: int, device) -> list[Tensor]:
    """One shuffled order per epoch with drop_last, seeded, shared by both models."""
    gen = torch.Generator().manual_seed(seed)
    per_epoch = n // batch_size
    out: list[Tensor] = []
    while len(out) < steps:
        perm = torch.randperm(n, generator=gen)
        out.extend(perm[i * batch_size:(i + 1) * batch_size].to(device) for i in range(per_epoch))
    return out[:steps]


def _primal_and_tangent(fm: FunctionalModel, theta0_leaf, delta, x) -> tuple[Tensor, Tensor]:
    """One forward pass at θ0 giving f(θ0)(x) (with its autograd graph) and J(θ0)(x)Δ."""
    with fwAD.dual_level():
        duals = {k: fwAD.make_dual(theta0_leaf[k], delta[k]) for k in theta0_leaf}
        out = fm(duals, x)
        primal, tangent = fwAD.unpack_dual(out)
    if tangent is None:  # Δ = 0 on a path that never touched the tangent
        tangent = torch.zeros_like(primal)
    return primal, tangent.detach()


def _is_plain_mlp(model: nn.Module, params: Mapping[str, Tensor]) -> bool:
    """True for weakcorr.models.MLP-shaped modules (recognised by attribute names)."""
    linears = getattr(model, "linears", None)
    if linears is None or not callable(getattr(model, "act", None)):
        return False
    names = set()
    for i, lin in enumerate(linears):
        if not all(hasattr(lin, a) for a in ("weight", "bias", "weight_multiplier", "bias_multiplier")):
            return False
        names.add(f"linears.{i}.weight")
        if lin.bias is not None:
            names.add(f"linears.{i}.bias")
    return names == set(params) and not any(True for _ in model.buffers())


_SQRT_2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _gelu_pair(z: Tensor) -> tuple[Tensor, Tensor]:
    cdf = 0.5 * (1.0 + torch.erf(z / _SQRT_2))
    pdf = torch.exp(-0.5 * z * z) * _INV_SQRT_2PI
    return z * cdf, cdf + z * pdf


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


# φ and φ' in closed form for the named activations of weakcorr.models (tested against autodiff).
_ACT_PAIRS = {"gelu": _gelu_pair, "sigmoid": _sigmoid_pair, "tanh": _tanh_pair,
              "erf": _erf_pair, "relu": _relu_pair}


def _act_and_derivative(model, z: Tensor) -> tuple[Tensor, Tensor]:
    pair = _ACT_PAIRS.get(getattr(model, "activation_name", ""))
    if pair is not None:
        return pair(z)
    return torch.func.jvp(model.act, (z,), (torch.ones_like(z),))


@torch.no_grad()
def _mlp_linear_pass(model, theta0: Mapping[str, Tensor], delta: Mapping[str, Tensor], x: Tensor):
    """f(θ0)(x), J(θ0)(x)Δ and the pullback r ↦ J(θ0)(x)ᵀr for an MLP, written out by hand.

    The same mathematics as :func:`_primal_and_tangent` plus a backward pass, without
    autograd bookkeeping: φ and φ' are computed once per layer (exactly, by one jvp of the
    elementwise activation) and shared by the tangent and the backward pass.
    """
    linears = model.linears
    hs, dphis = [x], []
    h, h_dot = x, None
    for i, lin in enumerate(linears):
        w, dw = theta0[f"linears.{i}.weight"], delta[f"linears.{i}.weight"]
        a, c = lin.weight_multiplier, lin.bias_multiplier
        z = h @ w.T
        z_dot = h @ dw.T if h_dot is None else h @ dw.T + h_dot @ w.T
        if a != 1.0:
            z, z_dot = a * z, a * z_dot
        if lin.bias is not None:
            z = z + c * theta0[f"linears.{i}.bias"]
            z_dot = z_dot + c * delta[f"linears.{i}.bias"]
        if i == len(linears) - 1:
            scale = model.output_scale
            f0, jd = (scale * z, scale * z_dot) if scale != 1.0 else (z, z_dot)
            break
        h, dphi = _act_and_derivative(model, z)
        h_dot = dphi * z_dot
        hs.append(h)
        dphis.append(dphi)

    def pullback(r: Tensor) -> list[Tensor]:
        grads: dict[str, Tensor] = {}
        g = model.output_scale * r
        for i in range(len(linears) - 1, -1, -1):
            lin = linears[i]
            a, c = lin.weight_multiplier, lin.bias_multiplier
            grads[f"linears.{i}.weight"] = a * (g.T @ hs[i])
            if lin.bias is not None:
                grads[f"linears.{i}.bias"] = c * g.sum(0)
            if i > 0:
                g = a * (g @ theta0[f"linears.{i}.weight"]) * dphis[i - 1]
        return [grads[k] for k in theta0]

    return f0, jd, pullback


def _diverged(entry: Mapping[str, float], first: float) -> bool:
    for key in ("loss_f", "loss_lin"):
        value = entry.get(key)
        if value is not None and (not math.isfinite(value) or value > DIVERGENCE_FACTOR * max(first, 1e-12)):
            return True
    return False


def _norm(t: Mapping[str, Tensor]) -> float:
    return math.sqrt(sum(float((v.double() ** 2).sum()) for v in t.values()))


def _distance(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> float:
    return math.sqrt(sum(float(((a[k].detach() - b[k]).double() ** 2).sum()) for k in a))


@torch.no_grad()
def _outputs(fm, theta, theta0, delta, x, chunk: int = 1024) -> tuple[Tensor, Tensor]:
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


def _final_metrics(fm, theta, theta0, delta, linearized, loss_kind, data, x_tr, y_tr, x_te, y_te):
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


def kernel_dynamics(
    fm: FunctionalModel | nn.Module,
    batches: Sequence[tuple[Tensor, Tensor]],
    x_eval: Tensor,
    *,
    lr: float,
    loss: str = "mse",
    params: Mapping[str, Tensor] | None = None,
    implementation: str = "auto",
    max_memory_gb: float = 4,
) -> Tensor:
    """F_lin on ``x_eval`` after SGD on ``batches``, by the function-space recursion of Eq. 8.

    .. math:: F_{lin}(s+1) = F_{lin}(s) - \\Theta_0(\\cdot, x_s)\\, C'(F_{lin}(s)(x_s), \\hat y(x_s)),

    with Θ0 = η ∇f(θ0)ᵀ∇f(θ0) the empirical NTK (:func:`weakcorr.ntk.empirical_ntk`) between
    every point involved (the evaluation points and every batch) and the batch points, and
    C' the derivative of the mean-reduced loss: for MSE (``nn.MSELoss(reduction="mean")``
    over B·d_y entries) C' = 2(F − y)/(B·d_y); for cross-entropy (softmax(F) − y)/B. No
    parameter is updated: an independent check of :func:`paired_sgd`'s linear model, and a
    fast path when only F_lin on few points is wanted. Memory: F on E + S·B points, and the
    kernel columns of as many steps at a time as ``max_memory_gb`` allows.

    Args:
        fm: the functional model (an ``nn.Module`` is converted).
        batches: the training batches in order, each ``(x_s [B, ...], y_s)`` with ``y_s``
            [B, d_y] (one-hot or soft targets) or, for cross-entropy, integer labels [B].
        x_eval: points at which F_lin is returned, [E, ...].
        lr: the learning rate η (> 0).
        loss: ``"mse"`` or ``"cross_entropy"``.
        params: θ0 (default ``fm.params``).
        implementation: passed to :func:`weakcorr.ntk.empirical_ntk`.
        max_memory_gb: budget for the kernel columns held at once (GiB).

    Returns:
        F_lin after all batches on ``x_eval``, [E, d_y].
    """
    allowed = [v.value for v in Loss]
    if loss not in allowed:
        raise ValueError(f"`loss` must be one of {allowed}, got {loss!r}.")
    _check_positive("lr", lr)
    budget = check_memory_budget(max_memory_gb)
    loss_kind = Loss(loss)
    fm = fm if isinstance(fm, FunctionalModel) else functional(fm)
    params = dict(params if params is not None else fm.params)
    with torch.no_grad():
        d_y = fm.output(params, x_eval[:1]).shape[-1]
    targets = []
    for s, pair in enumerate(batches):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise ValueError(f"`batches[{s}]` must be a pair (x, y), got {type(pair).__name__}.")
        xb, yb = pair
        if xb.shape[1:] != x_eval.shape[1:]:
            raise ValueError(
                f"`batches[{s}]` inputs have rows of shape {tuple(xb.shape[1:])}, `x_eval` "
                f"{tuple(x_eval.shape[1:])}."
            )
        if loss_kind is Loss.CROSS_ENTROPY and yb.ndim == 1 and not yb.is_floating_point():
            yb = nn.functional.one_hot(yb, d_y).to(x_eval.dtype)
        if yb.shape != (len(xb), d_y):
            raise ValueError(
                f"`batches[{s}]` targets must have shape {(len(xb), d_y)}, got {tuple(yb.shape)}."
            )
        targets.append(yb)
    if not targets:
        with torch.no_grad():
            return fm(params, x_eval)
    xs = [xb for xb, _ in batches]
    points = torch.cat([x_eval, *xs])
    with torch.no_grad():
        f = fm(params, points).clone()
    # Kernel columns of several steps at once: Θ(points, x_s..x_t) [P, ΣB, d_y, d_y].
    per_point = len(points) * d_y * d_y * points.element_size()
    group = max(1, int(budget * 2**30 / 2 // max(per_point * max(len(x) for x in xs), 1)))
    row = len(x_eval)
    for g0 in range(0, len(xs), group):
        cols = xs[g0:g0 + group]
        kernel = empirical_ntk(fm, points, torch.cat(cols), lr=lr, params=params,
                               implementation=implementation, max_memory_gb=budget)
        col = 0
        for xb, yb in zip(cols, targets[g0:g0 + group], strict=True):
            b = len(xb)
            r = _loss_grad(loss_kind, f[row:row + b], yb)  # C' on the batch [B, d_y]
            f = f - torch.einsum("pbij,bj->pi", kernel[:, col:col + b], r)
            row, col = row + b, col + b
    return f[: len(x_eval)]
