"""K seeds of one MLP trained together (weakcorr._vmap_train) vs one after another (paired_sgd).

The App. A.2 setting on MNIST-5k: 784 -> n -> n -> 10 GELU, standard init, float32, SGD batch
128, lr 0.1, K seeds. Times the training loop (final metrics included, model construction
excluded) and checks that the per-seed results agree. Each timing is the minimum over
``--repeats`` alternating repetitions (robust to other load on a shared machine); the CPU
time of the process is shown too. Run once, on an otherwise idle machine if possible:

    .venv/bin/python benchmarks/bench_vmap_seeds.py [--widths 64 128 256] [--seeds 8] [--steps 100]
"""

from __future__ import annotations

import argparse
import time

import torch

from weakcorr import _vmap_train, data, models, train
from weakcorr._memory import tune_malloc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--malloc-tuning", action="store_true",
                    help="tune glibc malloc as the CLI does. Off by default: with it, the "
                         "sequential runs that follow a batched run in this process slowed "
                         "from 4.6 s to 6.0-6.2 s at width 256 (heap state), which inflates "
                         "the speed-up to 2.3-2.4x")
    args = ap.parse_args()
    tuned = tune_malloc() if args.malloc_tuning else False
    if args.threads:
        torch.set_num_threads(args.threads)
    ds = data.load("mnist5k", n_train=4000, n_test=1000)
    kw = dict(lr=0.1, steps=args.steps, batch_size=128, log_every=10)
    seeds = list(range(args.seeds))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, K = {args.seeds} seeds, "
          f"{args.steps} steps, batch 128, mnist5k 4000/1000, malloc tuning "
          f"{'on' if tuned else 'off'}")
    print(f"{'width':>6} {'sequential s':>13} {'together s':>11} {'speed-up':>9} "
          f"{'CPU-time ratio':>15} {'max rel diff mse_test':>22}")

    def build(n, s):
        return models.mlp(784, [n, n], 10, activation="gelu", seed=s)

    def timed(fn):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        return out, time.perf_counter() - t0, time.process_time() - c0

    for n in args.widths:
        train.paired_sgd(build(n, 0), ds, seed=0, **{**kw, "steps": 3})  # warm-up
        best = {"seq": (float("inf"), 0.0), "tog": (float("inf"), 0.0)}
        for _ in range(args.repeats):
            mlps = [build(n, s) for s in seeds]
            seq, w, c = timed(lambda: [train.paired_sgd(m, ds, seed=s, **kw)
                                       for m, s in zip(mlps, seeds)])
            best["seq"] = min(best["seq"], (w, c))
            mlps = [build(n, s) for s in seeds]
            tog, w, c = timed(lambda: _vmap_train.paired_sgd_seeds(mlps, ds, seeds=seeds, **kw))
            best["tog"] = min(best["tog"], (w, c))
        diff = max(abs(a.metrics["mse_test"] - b.metrics["mse_test"]) / abs(b.metrics["mse_test"])
                   for a, b in zip(tog, seq))
        (ws, cs), (wt, ct) = best["seq"], best["tog"]
        print(f"{n:>6} {ws:>13.2f} {wt:>11.2f} {ws / wt:>8.2f}x {cs / ct:>14.2f}x {diff:>22.2e}",
              flush=True)


if __name__ == "__main__":
    main()
