"""K seeds of one MLP trained together (weakcorr._vmap_train) vs one after another (paired_sgd).

Three arms: ``together`` (K seeds in one stacked run), ``sequential`` (``paired_sgd`` per seed,
its default implementation: on CPU the same hand-written passes with K = 1) and
``autograd`` (``paired_sgd(implementation="autograd")`` per seed: autodiff for θ, the reference
implementation and the default before the hand-written single-seed path). The speed-up over
``sequential`` is what training seeds together adds; the one over ``autograd`` also counts
the hand-written passes.

The App. A.2 setting on MNIST-5k: 784 -> n -> n -> 10 GELU, standard init, float32, SGD batch
128, lr 0.1, logs every 10 steps, K seeds. Each timing runs in a fresh process that sets up
memory and threads as the CLI does (glibc malloc tuning on, torch threads as given), warms up
with a 3-step run and times the training of all K seeds (final metrics included, model
construction excluded). The two arms alternate; the speed-up is given for each arm's fastest
of ``--repeats`` processes (robust to other load on a shared machine: its slow phases hit a
long sequential arm more often than a short batched one) and for their medians. Separate
processes matter: in one process the sequential runs that follow a batched run slowed down
(heap state), which inflated the speed-up. The per-seed results of the two arms are compared
too. Results: benchmarks/RESULTS.md ("Seeds trained together", "Hand-written passes").

    .venv/bin/python benchmarks/bench_vmap_seeds.py [--widths 64 128 256] [--seeds 8]
        [--steps 250] [--threads N] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time


def _arm(arm: str, width: int, k: int, steps: int, threads: int | None) -> dict:
    """Time one arm in this process; returns wall and CPU seconds and each seed's mse_test."""
    import torch

    from weakcorr import _vmap_train, data, models, train
    from weakcorr._memory import tune_malloc

    tune_malloc()
    if threads:
        torch.set_num_threads(threads)
    ds = data.load("mnist5k", n_train=4000, n_test=1000)
    seeds = list(range(k))
    kw = dict(lr=0.1, steps=steps, batch_size=128, log_every=10)

    def build(s):
        return models.mlp(784, [width, width], 10, activation="gelu", seed=s)

    def run(mlps, **over):
        if arm in ("sequential", "autograd"):
            impl = "autograd" if arm == "autograd" else "auto"
            return [train.paired_sgd(m, ds, seed=s, implementation=impl, **{**kw, **over})
                    for m, s in zip(mlps, seeds, strict=True)]
        return _vmap_train.paired_sgd_seeds(mlps, ds, seeds=seeds, **{**kw, **over})

    run([build(s) for s in seeds], steps=3)  # warm-up
    mlps = [build(s) for s in seeds]
    t0, c0 = time.perf_counter(), time.process_time()
    results = run(mlps)
    return {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0,
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "mse_test": [r.metrics["mse_test"] for r in results]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=250, help="250: the paper's A.2 protocol")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--arm", choices=["autograd", "sequential", "together"],
                    help=argparse.SUPPRESS)
    ap.add_argument("--width", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.arm:  # a timing process started below
        print(json.dumps(_arm(args.arm, args.width, args.seeds, args.steps, args.threads)))
        return

    def spawn(arm: str, width: int) -> dict:
        cmd = [sys.executable, __file__, "--arm", arm, "--width", str(width),
               "--seeds", str(args.seeds), "--steps", str(args.steps)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    header = None
    for n in args.widths:
        runs: dict[str, list[dict]] = {"autograd": [], "sequential": [], "together": []}
        for _ in range(args.repeats):
            for arm in runs:
                runs[arm].append(spawn(arm, n))
        best = {arm: min(rs, key=lambda r: r["wall"]) for arm, rs in runs.items()}
        median = {arm: statistics.median(r["wall"] for r in rs) for arm, rs in runs.items()}
        ref, seq, tog = best["autograd"], best["sequential"], best["together"]
        if header is None:
            header = (f"torch {seq['torch']}, {seq['threads']} threads, K = {args.seeds} seeds, "
                      f"{args.steps} steps, batch 128, mnist5k 4000/1000, best (and median) "
                      f"of {args.repeats} processes per arm; speed-ups of together over "
                      f"sequential (paired_sgd) and over autograd (its reference path)")
            print(header)
            print(f"{'width':>6} {'autograd s':>11} {'sequential s':>13} {'together s':>11} "
                  f"{'over seq':>9} {'over autograd':>14} {'medians s':>20} "
                  f"{'median over seq':>16} {'max rel diff mse_test':>22}")
        diff = max(abs(a - b) / abs(b) for r in (seq, tog)
                   for a, b in zip(r["mse_test"], ref["mse_test"], strict=True))
        medians = " / ".join(f"{median[a]:.2f}" for a in runs)
        print(f"{n:>6} {ref['wall']:>11.2f} {seq['wall']:>13.2f} {tog['wall']:>11.2f} "
              f"{seq['wall'] / tog['wall']:>8.2f}x {ref['wall'] / tog['wall']:>13.2f}x "
              f"{medians:>20} {median['sequential'] / median['together']:>15.2f}x "
              f"{diff:>22.2e}", flush=True)


if __name__ == "__main__":
    main()
