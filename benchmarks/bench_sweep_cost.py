"""Cost of one A.2 run from measured paired_sgd times: per SGD step and per evaluated sample.

For each width, runs of S and 2S steps on MNIST-5k (batch 128, logs every 10 steps, as the
presets) give the per-step time by difference; a 1-step run minus one step is the rest of a run
(setup and the final metrics of f and f_lin on the train and test sets), which divided by
n_train + n_test gives a per-sample evaluation time. Medians of three. Prints a JSON line per width, used by docs/scaling.md.
Run: .venv/bin/python benchmarks/bench_sweep_cost.py [--widths 64 256 1024] [--threads 1]
     [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from weakcorr import data, models
from weakcorr._memory import tune_malloc
from weakcorr.train import paired_sgd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--widths", type=int, nargs="+", default=[64, 256, 1024])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (e.g. for paper-a2 widths)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tune_malloc()
    ds = data.load("mnist5k", n_train=args.n_train, n_test=args.n_test, seed=0)
    n_eval = args.n_train + args.n_test
    for width in args.widths:
        model = models.mlp(784, [width, width], 10, activation="gelu", seed=0)

        def run(steps: int) -> float:
            t0 = time.perf_counter()
            paired_sgd(model, ds, lr=0.01, steps=steps, batch_size=128, seed=0, log_every=10,
                       device=args.device)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            return time.perf_counter() - t0

        run(3)  # warm-up
        steps, fixed = [], []
        for _ in range(3):
            one, short, long_ = run(1), run(args.steps), run(2 * args.steps)
            per_step = (long_ - short) / args.steps
            steps.append(per_step)
            fixed.append(one - per_step)  # setup + final metrics on n_train + n_test samples
        step_s, fixed_s = statistics.median(steps), statistics.median(fixed)
        print(json.dumps({"width": width, "device": args.device, "threads": args.threads, "step_ms": 1e3 * step_s,
                          "eval_us_per_sample": 1e6 * max(fixed_s, 0.0) / n_eval,
                          "run_250_steps_s": 250 * step_s + max(fixed_s, 0.0)}), flush=True)


if __name__ == "__main__":
    main()
