"""Paired step (network + linearization) vs a plain SGD step, MLP 784-1024-1024-10, batch 128.

Prints the per-step times and their ratio (target <= 2.5; the FLOP limit is about 2.3).
Run: .venv/bin/python benchmarks/bench_training.py [--width 1024] [--steps 20]
"""

from __future__ import annotations

import argparse
import time

import torch

from weakcorr import data, models
from weakcorr._memory import tune_malloc
from weakcorr.train import paired_sgd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--no-malloc-tuning", action="store_true",
                    help="keep glibc's default malloc settings (the CLI tunes them)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not args.no_malloc_tuning:
        tune_malloc()
    ds = data.load("mnist5k", n_train=2560, n_test=10, seed=0)
    model = models.mlp(784, [args.width, args.width], 10, activation="gelu", seed=0)

    def run(linearized: bool, steps: int) -> float:
        t0 = time.perf_counter()
        paired_sgd(model, ds, lr=0.01, steps=steps, batch_size=128, seed=0,
                   linearized=linearized, log_every=10**6)
        return time.perf_counter() - t0

    def per_step(linearized: bool) -> float:
        """Per-step time as the difference of a long and a short run (fixed costs cancel)."""
        return (run(linearized, 2 * args.steps) - run(linearized, args.steps)) / args.steps

    run(False, 3), run(True, 3)  # warm-up
    # Interleaved repetitions, medians: the machine is shared and noisy.
    plains, paireds = [], []
    for _ in range(5):
        plains.append(per_step(False))
        paireds.append(per_step(True))
    plain, paired = sorted(plains)[2], sorted(paireds)[2]
    print(f"width {args.width}, batch 128, threads {args.threads}, "
          f"malloc tuning {'off' if args.no_malloc_tuning else 'on'}")
    print(f"plain SGD step : {plain * 1e3:8.1f} ms")
    print(f"paired step    : {paired * 1e3:8.1f} ms")
    print(f"ratio paired/plain: {paired / plain:.2f}  (target <= 2.5)")
    print("(per-step times from the difference of a 2S- and an S-step run: setup and final")
    print(" evaluation cancel)")


if __name__ == "__main__":
    main()
