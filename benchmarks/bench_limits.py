"""Infinite-width kernels and the Lanczos NTK spectrum (issue 17), timed.

(a) :func:`weakcorr.limits.ntk` and :func:`weakcorr.limits.nngp` on 1000 × 1000 inputs of an
    MLP with 3 hidden layers (784 inputs, float64, ``per_output=True``: the [1000, 1000]
    scalar kernel) for the closed-form activations (relu, erf) — target ≤ 2 s on 2 cores;
    and, for scale, gelu/tanh (quadrature, automatic order) on 100 × 100 inputs.
(b) :func:`weakcorr.ntk.spectrum` with k = 10 on 512 mnist-like inputs of the
    784-1024-1024-10 GELU MLP (float32, standard init): Lanczos on NTK-vector products, never
    the 5120 × 5120 kernel; its time against one NTK-vector product, the number of products,
    the top eigenvalues, the critical lr and the peak RSS; with ``--check-dense`` also the
    dense eigendecomposition of the structured ``empirical_ntk`` for comparison.

Timings depend on the load on the machine; run once, not in loops. Results:
benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/bench_limits.py [--n 1000] [--spectrum-inputs 512]
        [--width 1024] [--check-dense] [--skip-spectrum] [--skip-kernels]
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from weakcorr import limits
from weakcorr.models import mlp
from weakcorr.ntk import empirical_ntk, spectrum


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _timed(fn, repeats: int = 3) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def bench_kernels(n: int) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, 784, generator=gen, dtype=torch.float64)
    print(f"(a) analytic kernels, {n} x {n} inputs, 784-h-h-h-10, float64, "
          f"{torch.get_num_threads()} threads")
    for act in ("relu", "erf"):
        net = mlp(784, [64, 64, 64], 10, activation=act, parameterization="ntk", seed=0)
        t_ntk, _ = _timed(lambda net=net: limits.ntk(net, x, per_output=True))
        t_nngp, _ = _timed(lambda net=net: limits.nngp(net, x, per_output=True))
        print(f"    {act:5s} ntk {t_ntk:.3f} s   nngp {t_nngp:.3f} s   (target <= 2 s)")
    xs = x[:100]
    for act in ("gelu", "tanh"):
        net = mlp(784, [64, 64, 64], 10, activation=act, parameterization="ntk", seed=0)
        t_q, _ = _timed(lambda net=net: limits.ntk(net, xs, per_output=True), repeats=1)
        print(f"    {act:5s} ntk on 100 x 100 (quadrature) {t_q:.3f} s")


def bench_spectrum(n_inputs: int, width: int, check_dense: bool) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(n_inputs, 784, generator=gen)
    net = mlp(784, [width, width], 10, activation="gelu", seed=0)
    print(f"(b) spectrum k=10, {n_inputs} inputs, 784-{width}-{width}-10 gelu, float32")
    t0 = time.perf_counter()
    s = spectrum(net, x, k=10, tol=1e-6)
    t_spec = time.perf_counter() - t0
    # one NTK-vector product (vjp + jvp) for scale
    from torch.func import jvp, vjp

    from weakcorr.functional import functional

    fm = functional(net)
    out, pull = vjp(lambda p: fm(p, x), fm.params)
    v = torch.randn_like(out)
    t0 = time.perf_counter()
    (u,) = pull(v)
    jvp(lambda p: fm(p, x), (fm.params,), (u,))
    t_mv = time.perf_counter() - t0
    print(f"    {t_spec:.2f} s, {s.n_iterations} products ({t_mv:.3f} s each: ratio "
          f"{t_spec / max(t_mv, 1e-9):.1f} products' worth), converged={s.converged}")
    print(f"    top eigenvalues {[f'{v:.4g}' for v in s.eigenvalues.tolist()]}")
    print(f"    critical lr {s.critical_lr:.4g}, condition number >= {s.condition_number:.3g}, "
          f"peak RSS {_rss_gb():.2f} GB")
    if check_dense:
        t0 = time.perf_counter()
        k = empirical_ntk(net, x)
        m = k.permute(0, 2, 1, 3).reshape(n_inputs * 10, n_inputs * 10).double()
        dense = torch.linalg.eigvalsh(m).flip(0)[:10]
        t_dense = time.perf_counter() - t0
        rel = float(((s.eigenvalues.double() - dense).abs() / dense).max())
        print(f"    dense: {t_dense:.2f} s (ratio dense/Lanczos {t_dense / t_spec:.2f}), "
              f"max relative difference of the top 10: {rel:.2e}, peak RSS {_rss_gb():.2f} GB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--spectrum-inputs", type=int, default=512)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--check-dense", action="store_true")
    ap.add_argument("--skip-spectrum", action="store_true")
    ap.add_argument("--skip-kernels", action="store_true")
    args = ap.parse_args()
    if not args.skip_kernels:
        bench_kernels(args.n)
    if not args.skip_spectrum:
        bench_spectrum(args.spectrum_inputs, args.width, args.check_dense)


if __name__ == "__main__":
    main()
