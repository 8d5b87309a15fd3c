"""A network trained beside its first-order linearization (paper Eq. 7, 8, 27; App. A.2).

:func:`paired_sgd` trains the network f(θ) and its linearization
f_lin(θ0 + Δ) = f(θ0) + J(θ0)Δ from one initialisation θ0 on one shuffled batch
order with plain SGD (no momentum, no weight decay). The linear model's gradient is
J(θ0)ᵀ r — reverse mode at θ0 — never a backward pass through the jvp: one forward
pass at θ0 carries both f(θ0) (with its autograd graph) and J(θ0)Δ (as a
forward-mode tangent), then one backward pass of f(θ0) with cotangent r gives the
update. :func:`kernel_dynamics` is the independent function-space check (Eq. 8).

That is ``paired_sgd(implementation="autograd")``, the reference. For weakcorr MLPs on CPU the
default runs every pass written out by hand instead (``weakcorr._vmap_train`` with one seed:
faster, the same numbers to round-off); see ``paired_sgd``'s ``implementation``.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from . import __version__, _precision, _torchdata
from ._memory import check_memory_budget
from ._train import (  # noqa: F401 - re-exported for the tests and user code
    DIVERGENCE_FACTOR,
    PRIMAL_CACHE_GB,
    SCHEMA_VERSION,
    DatasetLike,
    RunResult,
    Loss,
    _PrimalCache,
    _act_and_derivative,
    _batch_order,
    _check_positive,
    _check_shapes,
    _diverged,
    _distance,
    _final_metrics,
    _is_plain_mlp,
    _json_safe,
    _loss_grad,
    _loss_value,
    _mlp_linear_pass,
    _mlp_primal,
    _norm,
    _outputs,
    _primal_and_tangent,
    _probe_kernel,
    _repeat_flags,
)
from .functional import FunctionalModel, functional
from .ntk import empirical_ntk

__all__ = ["Loss", "RunResult", "kernel_dynamics", "paired_sgd"]

@_precision.trains_in_full_precision
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
    return_params: bool = False,
    implementation: str = "auto",
) -> RunResult:
    """Train a network and its linearization side by side (the A.2 protocol).

    Args:
        model: the initialised network (θ0); it is not modified.
        data: a dataset with ``X_train, Y_train, labels_train, X_test, Y_test, labels_test``
            (:func:`weakcorr.data.load`), or a pair ``(train, test)`` of torch Datasets,
            DataLoaders or ``(X, Y)`` tensor tuples (:func:`weakcorr.data.as_dataset`: class
            labels become one-hot targets; float targets that are not one-hot are regression
            targets, and the ``acc_*`` metrics are None).
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
        return_params: keep the trained θ and θ0 + Δ in ``RunResult.params`` (in memory
            only), to evaluate both trained models at new inputs.
        implementation: how the passes are computed; each gives the same result to float
            round-off (tested against each other and against Eq. 8):

            - ``"autograd"``: θ's gradient by reverse-mode autodiff; f_lin by a hand-written
              pass for weakcorr MLPs, else one jvp and one vjp at θ0. Any module, any option.
            - ``"mlp"``: every pass written out (``weakcorr._vmap_train`` with one seed), input
              features that are zero on the whole training set left out. Weakcorr MLPs
              (``models.mlp``) with ``linearized=True`` and no ``probe_ntk``.
              Faster than ``"autograd"`` on CPU, most at small widths (benchmarks/RESULTS.md,
              "Hand-written passes vs autodiff, one seed").
            - ``"auto"`` (default): ``"mlp"`` where it applies on a CPU device, else
              ``"autograd"`` (``"mlp"`` has not been measured on GPUs).

    Returns:
        A :class:`RunResult`; divergence (a non-finite loss or one 1e6 times its first
        value) ends the run with status ``"diverged"`` and never raises.
    """
    start = time.perf_counter()
    data, unlabelled = _torchdata.for_training(data)  # (train, test) pairs, no labels: regression
    allowed = [v.value for v in Loss]
    if loss not in allowed:
        raise ValueError(f"`loss` must be one of {allowed}, got {loss!r}.")
    loss_kind = Loss(loss)
    _check_positive("lr", lr)
    _check_positive("steps", steps, integer=True)
    _check_positive("log_every", log_every, integer=True)
    if eval_every is not None:
        _check_positive("eval_every", eval_every, integer=True)
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"`implementation` must be one of {list(IMPLEMENTATIONS)}, got "
                         f"{implementation!r}.")
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
    # token ids stay integers; [N] targets (a model with [B] outputs, d_y = 1) become [N, 1]
    x_tr, x_te = (x.to(device, dtype) if x.is_floating_point() else x.to(device)
                  for x in (data.X_train, data.X_test))
    y_tr, y_te = (y.to(device, dtype).reshape(len(y), -1) for y in (data.Y_train, data.Y_test))
    _check_shapes(fm, theta0, x_tr, y_tr, x_te, y_te)

    implementation = _implementation(implementation, model, linearized, probe_ntk, device)
    config = {
        "lr": float(lr), "steps": steps, "batch_size": n_train if full_batch else batch_size,
        "seed": seed, "loss": loss_kind.value, "log_every": log_every, "linearized": linearized,
        "probe_ntk": probe_ntk, "full_batch": full_batch, "eval_every": eval_every,
        "n_params": fm.n_params, "model": repr(model), "n_train": n_train, "n_test": len(x_te),
        "implementation": implementation, **dict(extra_config or {}),
    }
    if implementation == "mlp":
        from . import _vmap_train  # same layer; it builds on this module

        (result,) = _vmap_train.paired_sgd_seeds(
            [model], data, seeds=[seed], lr=lr, steps=steps, batch_size=batch_size, loss=loss,
            log_every=log_every, eval_every=eval_every, full_batch=full_batch, device=device,
            dtype=dtype, progress=progress, return_params=return_params)
        result.config = config
        result.wall_time_s = time.perf_counter() - start
        if unlabelled:
            _torchdata.drop_accuracies(result.metrics)
        return result
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
    cache, repeats = _primal_cache(model, fused, n_train, n_train if full_batch else batch_size,
                                   steps, seed, x_tr)

    for step, idx in enumerate(batches):
        xb, yb = x_tr[idx], y_tr[idx]
        out = fm(theta, xb)
        loss_f = _loss_value(loss_kind, out, yb)
        grads = torch.autograd.grad(loss_f, list(theta.values()))
        entry: dict[str, Any] = {"step": step, "loss_f": loss_f.item()}
        if linearized:
            if fused:
                primal = None
                if cache is not None:
                    primal = cache.get(idx) if repeats[step] else _mlp_primal(model, theta0, xb)
                    if not repeats[step]:
                        cache.put(idx, primal)
                f0, jd, pullback = _mlp_linear_pass(model, theta0, delta, xb, primal)
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
    if unlabelled:
        _torchdata.drop_accuracies(result.metrics)
    if return_params:
        with torch.no_grad():
            result.params = {
                "theta": {k: v.detach().clone() for k, v in theta.items()},
                "theta_lin": {k: theta0[k] + d for k, d in delta.items()} if linearized else None,
            }
    result.wall_time_s = time.perf_counter() - start
    return result


IMPLEMENTATIONS = ("auto", "autograd", "mlp")


def _implementation(requested: str, model: nn.Module, linearized: bool, probe_ntk: bool,
                    device: torch.device) -> str:
    """The implementation ``paired_sgd`` uses: "auto" resolved, "mlp" checked."""
    if requested == "autograd":
        return requested
    from . import _vmap_train

    why = None
    refused = _vmap_train.refusal([model])
    if refused is not None:
        why = (f"the model is not a weakcorr MLP (models.mlp) the hand-written passes take "
               f"({refused}), got {type(model).__name__}")
    elif not linearized:
        why = "linearized=False"
    elif probe_ntk:
        why = "probe_ntk=True"
    if requested == "mlp" and why is not None:
        raise ValueError(f"`implementation='mlp'` does not apply: {why}; use "
                         "implementation='auto' or 'autograd'.")
    return "mlp" if why is None and (requested == "mlp" or device.type == "cpu") else "autograd"


def _primal_cache(
    model: nn.Module, fused: bool, n: int, batch_size: int, steps: int, seed: int, like: Tensor
) -> tuple[_PrimalCache | None, list[bool]]:
    """The θ0 forward-pass cache of the fused MLP path, when batches repeat and it fits."""
    if not fused:
        return None, []
    repeats = _repeat_flags(_batch_order(n, batch_size, steps, seed, "cpu"), n)
    fits = _PrimalCache.nbytes(model, n, like.element_size()) <= PRIMAL_CACHE_GB * 2**30
    return (_PrimalCache(model, n, like) if fits and any(repeats) else None), repeats


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
