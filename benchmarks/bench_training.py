"""Paired step (network + linearization) vs a plain SGD step, MLP 784-1024-1024-10, batch 128;
then the empirical NTK 128×128×10×10 per implementation at widths 256 and 1024.

Prints the per-step times and their ratio (target <= 2.5; the FLOP limit is about 2.3), and
for each NTK implementation the time and the peak memory (targets: "structured" at 1024
<= 0.2 s, "vp" <= 16 s and <= 2 GB).

Peak memory: tracemalloc does not see torch's allocations, so each NTK measurement runs in
its own subprocess, which reports its peak resident set (``VmHWM``: ``ru_maxrss`` would
include the parent's peak, which Linux carries across fork + exec) before the call (model, inputs and a 4-row warm-up already
done) and after it; the difference is the call's extra peak, the after value the whole
process's peak.

Run: .venv/bin/python benchmarks/bench_training.py [--width 1024] [--steps 20] [--threads 1]
     [--skip-training] [--skip-ntk]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch

from weakcorr import data, models, train
from weakcorr._memory import peak_rss_bytes, tune_malloc
from weakcorr.ntk import empirical_ntk
from weakcorr.train import paired_sgd

NTK_CASES = [("structured", 256), ("vp", 256), ("jacobian", 256),
             ("structured", 1024), ("vp", 1024), ("jacobian", 1024)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--no-malloc-tuning", action="store_true",
                    help="keep glibc's default malloc settings (the CLI tunes them)")
    ap.add_argument("--skip-training", action="store_true")
    ap.add_argument("--skip-ntk", action="store_true")
    ap.add_argument("--max-memory-gb", type=float, default=4.0,
                    help="empirical_ntk's working-memory budget")
    ap.add_argument("--ntk-one", nargs=2, metavar=("IMPL", "WIDTH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.ntk_one:
        ntk_one(args.ntk_one[0], int(args.ntk_one[1]), args.max_memory_gb)
        return
    if not args.skip_training:
        training(args)
    if not args.skip_ntk:
        ntk_table(args)


def training(args: argparse.Namespace) -> None:
    if not args.no_malloc_tuning:
        tune_malloc()
    ds = data.load("mnist5k", n_train=2560, n_test=10, seed=0)
    model = models.mlp(784, [args.width, args.width], 10, activation="gelu", seed=0)

    def run(linearized: bool, steps: int, cache: bool = True) -> float:
        train.PRIMAL_CACHE_GB = 1.0 if cache else 0.0
        t0 = time.perf_counter()
        paired_sgd(model, ds, lr=0.01, steps=steps, batch_size=128, seed=0,
                   linearized=linearized, log_every=10**6)
        return time.perf_counter() - t0

    def per_step(linearized: bool, cache: bool = True) -> float:
        """Per-step time as the difference of a long and a short run (fixed costs cancel).

        2560 training points are 20 batches: steps S..2S of the long run (S = 20) are all in
        the second epoch, where the fused MLP pass finds f(θ0) and the activations at θ0 in
        its cache; with ``cache=False`` every step does the forward pass at θ0 too (the cost
        of every first-epoch step, and of every step when no example repeats, as in A.2 on
        the full 60k MNIST).
        """
        return (run(linearized, 2 * args.steps, cache) - run(linearized, args.steps, cache)
                ) / args.steps

    run(False, 3), run(True, 3)  # warm-up
    # Interleaved repetitions, medians: the machine is shared and noisy.
    plains, paireds, uncached = [], [], []
    for _ in range(5):
        plains.append(per_step(False))
        paireds.append(per_step(True))
        uncached.append(per_step(True, cache=False))
    plain, paired, paired_nc = sorted(plains)[2], sorted(paireds)[2], sorted(uncached)[2]
    train.PRIMAL_CACHE_GB = 1.0
    print(f"width {args.width}, batch 128, threads {args.threads}, "
          f"malloc tuning {'off' if args.no_malloc_tuning else 'on'}")
    print(f"plain SGD step                 : {plain * 1e3:8.1f} ms")
    print(f"paired step, θ0 pass cached    : {paired * 1e3:8.1f} ms  "
          f"ratio {paired / plain:.2f}  (target <= 2.5)")
    print(f"paired step, θ0 pass recomputed: {paired_nc * 1e3:8.1f} ms  "
          f"ratio {paired_nc / plain:.2f}")
    print("(per-step times from the difference of a 2S- and an S-step run: setup and final")
    print(" evaluation cancel; medians of 5 interleaved repetitions)")
    optim_step = _torch_optim_step(model, ds, args.steps)
    print(f"reference: torch.optim.SGD + nn.MSELoss step of the same network: "
          f"{optim_step * 1e3:8.1f} ms")


def _torch_optim_step(model: torch.nn.Module, ds: object, steps: int) -> float:
    """Median step time of the textbook loop: zero_grad, forward, MSELoss, backward, step."""
    import copy

    net = copy.deepcopy(model)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    lossf = torch.nn.MSELoss()
    x, y = ds.X_train[:128], ds.Y_train[:128]
    times = []
    for _ in range(steps + 3):
        t0 = time.perf_counter()
        opt.zero_grad()
        lossf(net(x), y).backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return sorted(times[3:])[len(times[3:]) // 2]


def ntk_one(impl: str, width: int, max_memory_gb: float) -> None:
    """One measurement (run in its own process): print time and peak RSS before/after."""
    model = models.mlp(784, [width, width], 10, activation="gelu", seed=0)
    x = data.load("mnist5k", n_train=128, n_test=1, seed=0).X_train[:128]
    empirical_ntk(model, x[:4], implementation=impl)  # warm-up (first-call costs)
    before = peak_rss_bytes()
    t0 = time.perf_counter()
    k = empirical_ntk(model, x, implementation=impl, max_memory_gb=max_memory_gb)
    seconds = time.perf_counter() - t0
    after = peak_rss_bytes()
    print(json.dumps({"impl": impl, "width": width, "seconds": seconds, "shape": list(k.shape),
                      "rss_before": before, "rss_peak": after}))


def ntk_table(args: argparse.Namespace) -> None:
    print(f"\nempirical NTK 128x128x10x10, GELU MLP 784-n-n-10, float32, threads {args.threads}, "
          f"max_memory_gb {args.max_memory_gb}")
    print(f"{'impl':>10} {'width':>6} {'seconds':>9} {'extra peak GB':>14} {'process peak GB':>16}")
    for impl, width in NTK_CASES:
        cmd = [sys.executable, __file__, "--ntk-one", impl, str(width), "--threads",
               str(args.threads), "--max-memory-gb", str(args.max_memory_gb)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        extra = (r["rss_peak"] - r["rss_before"]) / 2**30
        print(f"{impl:>10} {width:>6} {r['seconds']:>9.3f} {extra:>14.2f} "
              f"{r['rss_peak'] / 2**30:>16.2f}", flush=True)


if __name__ == "__main__":
    main()
