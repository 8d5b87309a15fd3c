"""Exact diagonal correlations vs a finite-difference sampled estimator (the paper's approach).

One process, MLP 784-1024-1024-10 (GELU, standard PyTorch init, float32), 160 mnist5k
inputs x 10 outputs:

(a) exact ``C^{0,2}(x;x,x)_{i;i,i}`` and ``C^{0,3}`` for all 1600 (input, output) pairs with
    :func:`weakcorr.correlations.diagonal` (``orders=(2, 3)``, one nested call), timed for
    ``method="mlp"`` (exact Taylor-mode path for MLPs) and ``method="generic"`` (any module,
    the library default);
(b) the baseline: the paper's sampled estimator (Eq. 25) with 60 parameters per layer and
    central differences, correctly implemented (parameters restored exactly after every
    perturbation, no shallow copies):
      * first derivatives ∂_α f_i(x) for α in D: (f(θ+h1 e_α) - f(θ-h1 e_α)) / 2h1, batched over
        all inputs and outputs (2 |D| forward passes);
      * the d-th order sum Σ_{α∈D^d} ∂_{α1}f_i..∂_{αd}f_i ∂^d_{α1..αd} f_i, which equals the d-th
        derivative of f_i(x) along u = (∂_α f_i(x))_{α∈D} (multilinearity), by central
        stencils along û = u/‖u‖: (f(+h) - 2f(0) + f(-h))/h² and
        (f(2h) - 2f(h) + 2f(-h) - f(-2h))/(2h³), times ‖u‖^d; 4 single-input passes per pair.
    This is the cheapest FD scheme for Eq. 25 we know (entrywise mixed differences would
    need |D|^d stencils per pair); its error is reported against the exact
    :func:`weakcorr.correlations.paper_estimate` on the same indices.  Steps h1 = 1e-3,
    h2 = 0.1, h3 = 0.3 (along a unit vector, float32) come from a scan at width 256 against
    the exact values: smaller third-order steps drown in float32 round-off, larger ones in
    truncation error (benchmarks/RESULTS.md, "Finite-difference baseline steps").

Prints both times and the ratio (b)/(a), and the process's peak RSS after each stage.
Timings depend on other load on the machine; run once, not in loops. Results:
benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/bench_correlations.py [--width 1024] [--n-inputs 160]
        [--skip-generic] [--no-malloc-tuning]

glibc's allocator is tuned by default, as the ``weakcorr`` CLI does at start
(:func:`weakcorr._memory.tune_malloc`); ``--no-malloc-tuning`` measures the defaults (tuning
is faster because fresh pages of large temporaries no longer fault on every call:
benchmarks/RESULTS.md, "glibc malloc tuning").
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch
from torch import Tensor, nn

import weakcorr.correlations as C
import weakcorr.functional as F
from weakcorr import _correlations
from weakcorr._memory import peak_rss_bytes, tune_malloc


def _peak_gb() -> float:
    return peak_rss_bytes() / 1e9


def _model(width: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(784, width), nn.GELU(), nn.Linear(width, width), nn.GELU(), nn.Linear(width, 10)
    )


def _inputs(n: int) -> Tensor:
    try:
        from weakcorr import data
    except ImportError:  # pragma: no cover - before weakcorr.data exists
        data = None
    if data is not None:
        ds = data.load("mnist5k", n_train=n, n_test=1, seed=0)
        return torch.as_tensor(ds.X_train, dtype=torch.float32).reshape(n, -1)
    return torch.rand(n, 784, generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def fd_paper_estimate(
    fm: F.FunctionalModel, X: Tensor, masks: dict[str, Tensor], n_sampled: int, *,
    lr: float, h1: float = 1e-3, h2: float = 0.1, h3: float = 0.3,
) -> dict[int, float]:
    """The baseline (b): Eq. 25 for d = 2, 3 by central differences (see module docstring)."""
    params = {k: v.clone() for k, v in fm.params.items()}
    idx = {k: m.reshape(-1).nonzero().squeeze(1) for k, m in masks.items()}
    B = X.shape[0]
    # first derivatives on the sampled entries: [B, d_y, |D|]
    cols = []
    for k, ids in idx.items():
        flat = params[k].view(-1)
        for a in ids.tolist():
            saved = flat[a].clone()
            flat[a] = saved + h1
            plus = fm(params, X)
            flat[a] = saved - h1
            minus = fm(params, X)
            flat[a] = saved
            cols.append((plus - minus) / (2 * h1))
    grads = torch.stack(cols, dim=-1)
    d_y = grads.shape[1]
    f0 = fm(params, X)
    sums = {2: torch.zeros(B, d_y), 3: torch.zeros(B, d_y)}
    splits = [ids.numel() for ids in idx.values()]
    for b in range(B):
        x = X[b : b + 1]
        for i in range(d_y):
            u = grads[b, i]
            norm_u = float(u.norm())
            if norm_u == 0.0:
                continue
            parts = torch.split(u / norm_u, splits)

            def along(step: float) -> Tensor:
                return _along(fm, params, idx, parts, x, i, step)

            d2 = (along(h2) - 2 * f0[b, i] + along(-h2)) / h2**2
            d3 = (along(2 * h3) - 2 * along(h3) + 2 * along(-h3) - along(-2 * h3)) / (2 * h3**3)
            sums[2][b, i] = d2 * norm_u**2
            sums[3][b, i] = d3 * norm_u**3
    out = {}
    for d, s in sums.items():
        inner = s / float(n_sampled) ** d
        out[d] = lr**d / math.factorial(d) * float(inner.pow(2).sum().div(d_y).sqrt()) / math.sqrt(B)
    return out


def _along(fm, params, idx, parts, x, i, step) -> Tensor:
    """f(θ + step·û)(x)_i, moving only the sampled entries; θ is restored exactly after."""
    saved = {}
    for (k, ids), part in zip(idx.items(), parts):
        flat = params[k].view(-1)
        saved[k] = flat[ids].clone()
        flat[ids] = saved[k] + step * part
    value = fm(params, x)[0, i]
    for k, ids in idx.items():
        params[k].view(-1)[ids] = saved[k]
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--n-inputs", type=int, default=160)
    parser.add_argument("--lr", type=float, default=1.0)
    parser.add_argument("--skip-generic", action="store_true")
    parser.add_argument("--no-malloc-tuning", action="store_true",
                        help="keep glibc's default malloc settings (the CLI tunes them)")
    args = parser.parse_args()
    tuned = False if args.no_malloc_tuning else tune_malloc()
    malloc = {k: os.environ.get(k) for k in ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_")}
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, malloc env {malloc}, "
          f"mallopt tuning (as `weakcorr` does at start) {'on' if tuned else 'off'}")
    fm = F.functional(_model(args.width, seed=0))
    X = _inputs(args.n_inputs)
    print(f"MLP 784-{args.width}-{args.width}-10 GELU, N = {fm.n_params:,}, "
          f"{X.shape[0]} inputs x 10 outputs, {fm.dtype}; peak RSS {_peak_gb():.2f} GB")
    C.diagonal(fm, X[:2], orders=(2, 3), lr=args.lr, method="mlp")  # warm up (torch scripts
    C.diagonal(fm, X[:1], orders=(2, 3), lr=args.lr)  # its forward-AD rules on first use)

    times = []
    for _ in range(3):  # cheap: report the first call and the median of three
        t = time.perf_counter()
        exact = C.diagonal(fm, X, orders=(2, 3), lr=args.lr, method="mlp")
        times.append(time.perf_counter() - t)
    t_mlp = sorted(times)[1]
    print(f"(a) exact diagonal C2, C3, method='mlp':     {t_mlp:8.3f} s  (first call "
          f"{times[0]:.3f} s)  peak RSS {_peak_gb():.2f} GB")
    t_generic = math.nan
    if not args.skip_generic:
        t = time.perf_counter()
        generic = C.diagonal(fm, X, orders=(2, 3), lr=args.lr, method="generic")
        t_generic = time.perf_counter() - t
        dev = max(float(((generic[k] - exact[k]).abs().max() / exact[k].abs().max())) for k in (2, 3))
        print(f"(a) exact diagonal C2, C3, method='generic': {t_generic:8.2f} s  peak RSS "
              f"{_peak_gb():.2f} GB  (max rel. deviation from 'mlp' {dev:.1e})")

    gen = torch.Generator().manual_seed(0)
    masks, n_sampled = _correlations.sample_layer_masks(fm.params, 60, gen)
    t = time.perf_counter()
    fd = fd_paper_estimate(fm, X, masks, n_sampled, lr=args.lr)
    t_fd = time.perf_counter() - t
    print(f"(b) FD sampled estimator (60/layer, central): {t_fd:8.2f} s  peak RSS {_peak_gb():.2f} GB")
    t = time.perf_counter()
    ref = {d: C.paper_estimate(fm, X, d=d, lr=args.lr, method="mlp",
                               generator=torch.Generator().manual_seed(0))
           for d in (2, 3)}
    t_pe = time.perf_counter() - t
    for d in (2, 3):
        print(f"    Eq. 25, d={d}: FD {fd[d]:.6e}  exact (same indices) {ref[d]:.6e}  "
              f"rel. error {abs(fd[d] / ref[d] - 1):.1e}")
    print(f"    exact paper_estimate (method='mlp', d=2 and d=3 separately): {t_pe:.2f} s")
    print(f"ratio (b)/(a): mlp {t_fd / t_mlp:.1f}x" + (
        f", generic {t_fd / t_generic:.1f}x" if not args.skip_generic else ""))
    print(f"mean |C2| = {float(exact[2].abs().mean()):.4e}, mean |C3| = {float(exact[3].abs().mean()):.4e}")


if __name__ == "__main__":
    main()
