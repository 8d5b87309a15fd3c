"""Refusals and the derivative self-check behind :mod:`weakcorr.functional`.

Two things make a derivative of a module meaningless, and both are caught here before any work:

* **Randomness or batch dependence** (:func:`refuse_stochastic_modules`): Dropout and its
  relatives, RReLU, ``nn.MultiheadAttention`` with ``dropout > 0`` in training mode draw new
  random numbers at every call, and BatchNorm in training mode (or without running statistics)
  normalises each input by the statistics of its batch, so f(θ)(x) is not a function of θ and x
  alone.  The library probes single inputs, vmaps over rows and compares two runs of the same
  batch: every number it would print is noise.  The error names the module path and class and
  the fix (``model.eval()``, or ``weakcorr.functional(model, eval_mode=True)``).

* **Wrong higher-order forward derivatives** (:func:`check_derivatives`): nested forward mode
  through an op whose forward-derivative formula is itself not differentiable gives a silently
  wrong number (see :mod:`weakcorr._ops`).  The self-check compares the second derivative along
  one random direction by nested forward mode with forward-over-reverse (``jvp`` of ``grad``),
  and on disagreement names the first module (in call order) whose output's second derivative
  disagrees.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import grad as _grad
from torch.func import jvp as _jvp
from torch.func import vmap as _vmap
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd

__all__ = ["check_derivatives", "ensure_checked", "refuse_stochastic_modules"]

# rtol of the self-check per dtype: the two routes round differently; a wrong formula is off by
# percents (LayerNorm in torch 2.13: 78 %), far above these.
RTOL = {torch.float64: 1e-7, torch.float32: 1e-3, torch.float16: 5e-2, torch.bfloat16: 5e-2}

EVAL_FIX = "Call model.eval() first (or build it with weakcorr.functional(model, eval_mode=True))"


def _stochastic_reason(module: nn.Module) -> str | None:
    """Why ``module`` makes the output random or batch-dependent now, or None."""
    if isinstance(module, _BatchNorm) and (module.running_mean is None or module.running_var is None):
        return (
            "it has no running statistics (track_running_stats=False), so it normalises every "
            "input by its batch's statistics even in eval mode; build it with "
            "track_running_stats=True and call model.eval()"
        )
    if not module.training:
        return None
    if isinstance(module, _BatchNorm):
        return (
            "it normalises every input by its batch's statistics (and updates its running "
            f"statistics), so the output depends on the whole batch. {EVAL_FIX}"
        )
    if isinstance(module, _DropoutNd) and module.p > 0:
        return f"its output is random (p={module.p}). {EVAL_FIX}"
    if isinstance(module, nn.RReLU):
        return f"its negative slope is drawn at random. {EVAL_FIX}"
    if isinstance(module, nn.MultiheadAttention) and module.dropout > 0:
        return (
            f"its attention weights are randomly dropped (dropout={module.dropout}). {EVAL_FIX}"
        )
    return None


def refuse_stochastic_modules(module: nn.Module, *, name: str = "model") -> None:
    """Raise if any submodule makes ``module``'s output random or batch-dependent.

    Args:
        module: the model.
        name: how the message names the root (submodules are ``name.path``).

    Raises:
        ValueError: one line naming the first such module (path and class) and the fix.
    """
    for path, sub in module.named_modules():
        reason = _stochastic_reason(sub)
        if reason is not None:
            where = f"{name}.{path}" if path else name
            state = "cannot be differentiated per input" if reason.startswith("it has no") \
                else "is in training mode"
            raise ValueError(f"{where} ({type(sub).__name__}) {state}: {reason}.")


# --- derivative self-check ----------------------------------------------------------------------


def _second_along(fn: Callable[[dict[str, Tensor]], Any], p: dict[str, Tensor],
                  v: dict[str, Tensor]) -> tuple[Any, Any]:
    """(∇fn[v], ∇²fn[v, v]) by nested forward mode."""
    return _jvp(lambda q: _jvp(fn, (q,), (v,))[1], (p,), (v,))


def _forward_over_reverse(scalar: Callable[[dict[str, Tensor]], Tensor], p: dict[str, Tensor],
                          v: dict[str, Tensor]) -> Tensor:
    """vᵀ ∇²scalar v as the jvp (along v) of the reverse-mode gradient."""
    hv = _jvp(_grad(scalar), (p,), (v,))[1]
    return sum((hv[k] * v[k]).sum() for k in v)


def _tolerance(dtype: torch.dtype, rtol: float | None, s2: Tensor, s1: Tensor) -> float:
    rtol = RTOL.get(dtype, 1e-3) if rtol is None else rtol
    eps = torch.finfo(dtype).eps
    return float(rtol * s2 + 1e3 * eps * s1)


def _random_like(t: Tensor, gen: torch.Generator) -> Tensor:
    return torch.randn(t.shape, generator=gen, dtype=t.dtype, device="cpu").to(t.device)


def check_derivatives(
    fm: Any,
    x: Tensor,
    *,
    params: Mapping[str, Tensor] | None = None,
    rtol: float | None = None,
    seed: int = 0,
    max_rows: int = 2,
) -> float:
    """Check nested forward mode against forward-over-reverse on ``fm`` (order 2).

    Along one random unit direction v in parameter space, with a random output weighting r,

    .. math::

        r \\cdot \\partial_t^2 f(\\theta + t v)(x)\\big|_{t=0}
        \\quad\\text{(jvp of jvp, the route of Eq. 13)}
        \\quad\\text{vs}\\quad
        v^\\top \\nabla^2_\\theta (r \\cdot f)(\\theta)(x)\\, v
        \\quad\\text{(jvp of grad)}.

    Cost: ~7 forward passes on ``max_rows`` inputs.  On disagreement every submodule's output
    is checked the same way, in call order, and the first that disagrees is named.

    Args:
        fm: a :class:`weakcorr.functional.FunctionalModel`.
        x: a batch [B, ...]; the first ``max_rows`` rows are used.
        params: θ (default ``fm.params``).
        rtol: relative tolerance (default per dtype: 1e-7 for float64, 1e-3 for float32),
            relative to Σ|r|·|∂²f|.
        seed: seeds v and r.
        max_rows: how many rows of ``x`` to use (>= 1).

    Returns:
        The measured discrepancy relative to Σ|r|·|∂²f| (0 when both are 0; NaN when the
        derivatives are not finite, which this check leaves to the callers' finiteness checks).

    Raises:
        ValueError: when the two routes disagree by more than the tolerance, naming the first
            module whose output derivative disagrees (and ``model`` itself when the disagreement
            is in the module's own forward code); when the model cannot run under nested
            forward mode vmapped over inputs (an op without a forward derivative or batching
            rule, e.g. recurrent layers), with PyTorch's message.
    """
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
        raise ValueError(f"`max_rows` must be an integer >= 1, got {max_rows!r}; e.g. 2.")
    if not isinstance(x, Tensor) or x.ndim < 1 or x.shape[0] < 1:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"`x` must be a non-empty batch tensor [B, ...], got {got}.")
    p = dict(fm.params if params is None else params)
    dtype = next(iter(p.values())).dtype
    x = x[:max_rows]
    if x.is_floating_point():
        x = x.to(dtype)
    gen = torch.Generator().manual_seed(seed)
    v = {k: _random_like(t, gen) for k, t in p.items()}
    vnorm = math.sqrt(sum(float((t * t).sum()) for t in v.values()))
    v = {k: t / vnorm for k, t in v.items()}

    def f(q: dict[str, Tensor]) -> Tensor:
        return fm(q, x)

    def per_row(xr: Tensor) -> tuple[Tensor, Tensor]:  # vmapped over rows, as the library runs
        d1r, d2r = _second_along(lambda q: fm(q, xr.unsqueeze(0))[0], p, v)
        return d1r, d2r

    try:
        d1, d2 = _vmap(per_row)(x)
    except (RuntimeError, NotImplementedError) as err:
        raise ValueError(
            f"model ({type(fm.module).__name__}) cannot run under weakcorr's transforms (nested "
            f"forward-mode AD, vmapped over inputs) in torch {torch.__version__}: "
            f"{type(err).__name__}: {str(err).splitlines()[0].rstrip('.')}. Supported: Linear, Conv, pooling, "
            "Flatten, elementwise activations, softmax, the norm layers, Embedding, attention "
            "and transformer layers (weakcorr.functional); recurrent layers (nn.RNN/LSTM/GRU) "
            "do not run under vmap."
        ) from None
    r = _random_like(d2, gen)
    a = (r * d2).sum()
    b = _forward_over_reverse(lambda q: (r * f(q)).sum(), p, v)
    s2, s1 = (r.abs() * d2.abs()).sum(), (r.abs() * d1.abs()).sum()
    gap = float((a - b).abs())
    if not math.isfinite(gap):  # overflow or an undefined derivative: the callers' finiteness
        return math.nan         # checks name the input (see correlations' check_finite)
    rel = gap / float(s2) if float(s2) > 0 else (0.0 if gap == 0 else math.inf)
    if gap <= _tolerance(dtype, rtol, s2, s1):
        return rel
    where, a_m, b_m = _first_disagreeing_module(fm, p, x, v, gen, dtype, rtol)
    if where is None:
        where = f"model ({type(fm.module).__name__}: in its own forward code)"
        a_m, b_m = float(a), float(b)
    raise ValueError(
        f"derivative self-check failed at {where}: the second derivative of its output along a "
        f"random direction is {a_m:.6g} by nested forward mode but {b_m:.6g} by "
        "forward-over-reverse, so nested forward-mode AD (every correlation) would be wrong for "
        "this model. An op in it has a wrong higher-order forward derivative in torch "
        f"{torch.__version__}: write that op with primitive ops (see weakcorr._ops for "
        "LayerNorm, GroupNorm, BatchNorm, RMSNorm and attention)."
    )


def _first_tensor(value: Any) -> Tensor | None:
    if isinstance(value, Tensor):
        return value if value.is_floating_point() else None
    if isinstance(value, (tuple, list)):
        return next((_first_tensor(v) for v in value if _first_tensor(v) is not None), None)
    return None


def _describe(module: nn.Module, name: str, kind: str) -> str:
    """Where the error arises: the module itself (its output is the first to disagree) or, when
    its input already disagrees, the forward code of its parent that computed that input."""
    if kind == "output":
        return f"model.{name} ({type(module.get_submodule(name)).__name__})"
    parent = name.rsplit(".", 1)[0] if "." in name else ""
    owner = module.get_submodule(parent)
    label = f"model.{parent}" if parent else "model"
    return f"{label} ({type(owner).__name__}: in its own forward code, before model.{name})"


def _first_disagreeing_module(
    fm: Any, p: dict[str, Tensor], x: Tensor, v: dict[str, Tensor], gen: torch.Generator,
    dtype: torch.dtype, rtol: float | None,
) -> tuple[str | None, float, float]:
    """Where the first disagreement arises, in the order submodules finish (children before
    their parent): checks each submodule's input, then its output.  None: only in the root's
    own code after its last submodule."""
    module: nn.Module = fm.module
    names = {id(m): n for n, m in module.named_modules() if n}
    seen: list[tuple[str, str, Tensor]] = []

    def hook(mod: nn.Module, args: Any, out: Any) -> None:
        for kind, value in (("input", args), ("output", out)):
            t = _first_tensor(value)
            if t is not None:
                seen.append((names[id(mod)], kind, t))

    handles = [m.register_forward_hook(hook) for n, m in module.named_modules() if n]
    if not handles:
        return None, math.nan, math.nan
    try:
        def all_tensors(q: dict[str, Tensor]) -> tuple[Tensor, ...]:
            seen.clear()
            fm(q, x)
            return tuple(t for _, _, t in seen)

        with torch.no_grad():
            if not all_tensors(p):
                return None, math.nan, math.nan
        _, d2s = _second_along(all_tensors, p, v)
        order = [(n, k) for n, k, _ in seen]
        for m, ((name, kind), d2) in enumerate(zip(order, d2s)):
            r = _random_like(d2, gen)
            a = (r * d2).sum()
            b = _forward_over_reverse(lambda q: (r * all_tensors(q)[m]).sum(), p, v)
            if float((a - b).abs()) > _tolerance(dtype, rtol, (r.abs() * d2.abs()).sum(),
                                                 torch.zeros(())):
                return _describe(module, name, kind), float(a), float(b)
    finally:
        for h in handles:
            h.remove()
    return None, math.nan, math.nan


def ensure_checked(fm: Any, params: Mapping[str, Tensor], x: Tensor) -> None:
    """Run :func:`check_derivatives` once per FunctionalModel (remembered on ``fm``)."""
    if getattr(fm, "_derivatives_checked", False):
        return
    check_derivatives(fm, x, params=params)
    fm._derivatives_checked = True
