"""Top eigenvalues of the empirical NTK by Lanczos on NTK-vector products (no kernel built).

The operator is Θ = J Jᵀ on R^{B·d_y} (J the [B·d_y, N] Jacobian of the outputs on X at θ,
η = 1); one product Θv is a vjp (Jᵀv, reusing one recorded reverse pass) and a jvp
(J·(Jᵀv), a forward-mode pass).  Lanczos with full reorthogonalisation builds the Krylov
basis Q_m and the tridiagonal T_m = Q_mᵀ Θ Q_m; the Ritz values (eigenvalues of T_m) lie in
[λ_min, λ_max] and each is within its residual β_m |s_{m,i}| of an eigenvalue of Θ.
Exposed as :func:`weakcorr.ntk.spectrum`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import torch
from torch import Tensor
from torch.func import jvp as _torch_jvp
from torch.func import vjp as _torch_vjp

from .functional import FunctionalModel, functional

__all__ = ["Spectrum", "spectrum"]


@dataclasses.dataclass(frozen=True)
class Spectrum:
    """Result of :func:`spectrum`.

    Attributes:
        eigenvalues: the top-k eigenvalues of Θ (η = 1), descending, [k].
        eigenvectors: the matching Ritz vectors, [k, B, d_y] (unit norm over both axes).
        residuals: ‖Θv − λv‖ of each Ritz pair, [k]: each eigenvalue is within its residual
            of an eigenvalue of Θ.
        lambda_min: the smallest Ritz value of the run, an upper bound on λ_min(Θ) (exact when
            the run spans the whole space, ``n_iterations == B·d_y``); 0 when B·d_y exceeds the
            number of parameters (Θ is then singular).
        condition_number: λ_max / ``lambda_min`` — a lower bound on κ(Θ) (inf when singular).
        critical_lr: B·d_y / λ_max, the largest stable learning rate of full-batch GD on X for
            the library's MSE (``nn.MSELoss(reduction="mean")``: the loss Hessian of the
            linearized model is 2Θ/(B·d_y), and GD is stable below 2/its top eigenvalue).
        converged: every top-k residual is below ``tol · λ_max``.
        n_iterations: Lanczos steps taken (= NTK-vector products).
    """

    eigenvalues: Tensor
    eigenvectors: Tensor
    residuals: Tensor
    lambda_min: float
    condition_number: float
    critical_lr: float
    converged: bool
    n_iterations: int


def spectrum(
    fm: FunctionalModel | torch.nn.Module,
    X: Tensor,
    *,
    k: int = 10,
    params: Mapping[str, Tensor] | None = None,
    tol: float = 1e-8,
    max_iter: int | None = None,
    generator: torch.Generator | None = None,
) -> Spectrum:
    """The top-k eigenvalues of the empirical NTK Θ(X, X) (Eq. 9, η = 1) without forming it.

    Lanczos with full reorthogonalisation on products v ↦ J(Jᵀv) (one vjp and one jvp each,
    :mod:`weakcorr._spectrum`); the Ritz pairs are checked every few steps and the run stops
    when the top k residuals are below ``tol · λ_max``, at ``max_iter`` or when the Krylov
    space is exhausted (then the values are exact to rounding).  Memory: the reverse pass
    of X and the basis, ``max_iter × B·d_y`` numbers — never the [B·d_y]² kernel.

    Args:
        fm: the functional model (an ``nn.Module`` is converted).
        X: inputs [B, ...].
        k: the number of top eigenvalues, 1 <= k <= B·d_y.
        params: θ (default θ0).
        tol: relative residual tolerance (> 0).
        max_iter: the most NTK-vector products (default min(B·d_y, max(4k, k + 60))).
        generator: the random start vector's source (default seeded with 0: deterministic).

    Returns:
        A :class:`Spectrum` (eigenvalues, residuals, condition-number estimate, critical lr).

    Raises:
        ValueError: bad ``k``, ``tol``, ``max_iter``, inputs or ``params``.

    Example:
        >>> import torch
        >>> fm = functional(torch.nn.Linear(3, 1, dtype=torch.float64))
        >>> s = spectrum(fm, torch.eye(3, dtype=torch.float64), k=1)  # Θ = I + 11ᵀ
        >>> round(float(s.eigenvalues[0]), 10), round(s.critical_lr, 10)
        (4.0, 0.75)
    """
    fm = fm if isinstance(fm, FunctionalModel) else functional(fm)
    params = dict(fm.params if params is None else params)
    if set(params) != set(fm.params):
        raise ValueError("`params` must have the model's parameter names; start from fm.params.")
    if not isinstance(X, Tensor) or X.ndim < 1 or len(X) < 1:
        raise ValueError(f"`X` must be a tensor [batch >= 1, ...], got {type(X).__name__}.")
    out, pullback = _torch_vjp(lambda p: fm(p, X), params)
    out = out.detach()
    n = out.numel()
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise ValueError(f"`k` must be an integer in [1, B·d_y = {n}], got {k!r}.")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol > 0:
        raise ValueError(f"`tol` must be a number > 0, got {tol!r}.")
    if max_iter is None:
        max_iter = min(n, max(4 * k, k + 60))
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < k:
        raise ValueError(f"`max_iter` must be an integer >= k = {k}, got {max_iter!r}.")
    max_iter = min(max_iter, n)

    def matvec(v: Tensor) -> Tensor:
        (u,) = pullback(v.reshape(out.shape))
        _, jv = _torch_jvp(lambda p: fm(p, X), (params,), (u,))
        return jv.reshape(-1).detach()

    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    start = torch.randn(n, generator=gen, dtype=torch.float64).to(out.dtype)
    basis = torch.empty(max_iter + 1, n, dtype=out.dtype, device=out.device)
    basis[0] = start.to(out.device) / start.norm()
    alpha, beta = [], []
    evals = evecs = None
    converged = False
    m = 0
    scale = 0.0
    for j in range(max_iter):
        w = matvec(basis[j])
        a = float(basis[j] @ w)
        w = w - a * basis[j] - (beta[-1] * basis[j - 1] if j > 0 else 0.0)
        for _ in range(2):  # full reorthogonalisation, twice is enough
            w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)
        b = float(w.norm())
        alpha.append(a)
        beta.append(b)
        m = j + 1
        scale = max(scale, abs(a) + b)
        exhausted = b <= 64 * torch.finfo(out.dtype).eps * max(scale, 1e-300)
        if exhausted:
            beta[-1] = 0.0
        else:
            basis[j + 1] = w / b
        if m >= k and (exhausted or m == max_iter or m % 4 == 0):
            evals, evecs = _ritz(alpha, beta)
            res = (beta[-1] * evecs[-1, -k:]).abs()
            if exhausted or bool((res <= tol * max(float(evals[-1]), 1e-300)).all()):
                converged = True
                break
        if exhausted:
            break
    assert evals is not None and evecs is not None
    top = evals[-k:].flip(0)
    s = evecs[:, -k:].flip(1)
    vectors = (s.T.to(out.dtype) @ basis[:m]).reshape(k, *out.shape)
    residuals = (beta[-1] * s[-1]).abs()
    lam_max = float(top[0])
    n_params = sum(p.numel() for p in params.values())
    lam_min = 0.0 if n > n_params else max(float(evals[0]), 0.0)
    cond = lam_max / lam_min if lam_min > 0 else math.inf
    return Spectrum(
        eigenvalues=top.to(out.dtype),
        eigenvectors=vectors,
        residuals=residuals.to(out.dtype),
        lambda_min=lam_min,
        condition_number=cond,
        critical_lr=n / lam_max if lam_max > 0 else math.inf,
        converged=converged,
        n_iterations=m,
    )


def _ritz(alpha: list[float], beta: list[float]) -> tuple[Tensor, Tensor]:
    """Eigenpairs of the Lanczos tridiagonal T_m (float64, ascending)."""
    m = len(alpha)
    t = torch.diag(torch.tensor(alpha, dtype=torch.float64))
    if m > 1:
        off = torch.tensor(beta[: m - 1], dtype=torch.float64)
        t = t + torch.diag(off, 1) + torch.diag(off, -1)
    return torch.linalg.eigh(t)
