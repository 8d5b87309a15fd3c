"""Model-zoo benchmark: the generic (any-module) paths on a CNN, a ResNet-style family and a ViT.

For each model (``weakcorr.zoo``, float32, single-channel 28×28 inputs, 14×14 for the ResNets,
whose stride-1 convolutions keep the full resolution; 10 outputs):

* ``diag``: exact ``C^{0,2}`` and ``C^{0,3}`` diagonals on ``--n-inputs`` inputs
  (``correlations.diagonal(orders=(2, 3), method="generic")``, one nested call);
* ``ntk-<impl>``: the full empirical NTK [32, 32, 10, 10] of 32 inputs, by ``"jacobian"``
  (per-example Jacobian rows contracted) and ``"vp"`` (NTK-vector products; what ``"auto"``
  picks for these models);
* ``step``: one paired training step (f and f_lin, batch 32, MSE) of ``train.paired_sgd``:
  a 10-step run over 10 (an upper bound: it includes the set-up and the final metrics on 32
  training and 8 test inputs, about one step's worth).

Each task's FLOP count (``GFLOP``) is what ``torch.utils.flop_counter.FlopCounterMode`` counts
(matmuls and convolutions, forward and backward) on ONE input, scaled to the task (see
``bench_model``: the counter over-counts convolution backward under nested vmap quadratically
in the inputs per vmap; the raw count of the whole task is the ``counted`` column).  Nested
forward mode executes ~3^k times the forward pass's bilinear FLOPs for order k (27x for the
order-3 diagonal; Taylor mode would need ~10x), and the count is of that executed work.
Achieved GFLOP/s is that count over the measured time, beside the machine's float32 matmul
peak (2048² GEMM, best of 5) measured in the same run.  Times are the best of ``--repeat`` runs after a warm-up.  On a loaded
machine report ratios (achieved / peak, implementation A / B), not absolute times.

    .venv/bin/python benchmarks/bench_zoo.py [--n-inputs 32] [--models cnn,resnet,vit]
        [--threads 2] [--repeat 2] [--tasks diag,ntk-jacobian,ntk-vp,step] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
import types
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import weakcorr as wc
from weakcorr import zoo
from weakcorr.ntk import empirical_ntk
from weakcorr.train import paired_sgd

MODELS: dict[str, Callable[[], nn.Module]] = {
    "cnn": lambda: zoo.cnn(80, 0, image_size=28),  # 97,690 parameters
    "resnet8": lambda: zoo.resnet(8, 0, blocks=2),
    "resnet16": lambda: zoo.resnet(16, 0, blocks=2),
    "resnet32": lambda: zoo.resnet(32, 0, blocks=2),
    "vit": lambda: zoo.vit(32, 0, image_size=28, patch=7, heads=4, layers=2),
}
SIDE = {"resnet8": 14, "resnet16": 14, "resnet32": 14}
GROUPS = {"cnn": ["cnn"], "resnet": ["resnet8", "resnet16", "resnet32"], "vit": ["vit"]}


def matmul_peak(n: int = 2048, repeat: int = 5) -> float:
    """Best float32 GEMM rate in FLOP/s."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def _best_time(fn: Callable[[], object], repeat: int,
               warm_up: Callable[[], object] | None = None) -> float:
    (warm_up or fn)()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _data(n: int, side: int) -> types.SimpleNamespace:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, 1, side, side, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    Y = nn.functional.one_hot(labels, 10).float()
    return types.SimpleNamespace(X_train=X, Y_train=Y, labels_train=labels, X_test=X[:8],
                                 Y_test=Y[:8], labels_test=labels[:8])


def bench_model(name: str, n_inputs: int, repeat: int, wanted: list[str],
                steps: int = 10) -> list[dict]:
    model = MODELS[name]()
    fm = wc.functional(model)
    data = _data(32, SIDE.get(name, 28))
    X = data.X_train
    wc.functional.check_derivatives(fm, X)
    fm._derivatives_checked = True
    def diag(n: int) -> object:
        return wc.correlations.diagonal(fm, X[:n], orders=(2, 3), lr=1.0, method="generic")

    def ntk(impl: str, n: int = 32) -> object:
        return empirical_ntk(fm, X[:n], implementation=impl)

    tasks: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
        "diag": (lambda: diag(n_inputs), lambda: diag(1)),
        "ntk-jacobian": (lambda: ntk("jacobian"), lambda: ntk("jacobian", 2)),
        "ntk-vp": (lambda: ntk("vp"), lambda: ntk("vp", 2)),
    }
    # Nominal FLOPs: FlopCounterMode over-counts convolution backward under nested vmap
    # (per-example gradients, vmapped over inputs and over one-hot cotangents) quadratically in
    # the inputs per vmap (CNN: 4.8 / 64.7 / 250.8 GFLOP for 4 / 16 / 32 inputs' gradients that
    # take the same ~1 s), so work is counted on one input and scaled: diag x n inputs, the
    # kernel as 32 inputs' gradient rows + the contraction 2 (32 d_y)^2 N (the jacobian
    # algorithm's work; the vp row uses the same figure, the kernel being the same).
    d_y = 10
    one_input = {"diag": lambda: _flops(lambda: diag(1)) * n_inputs,
                 "ntk": lambda: (_flops(lambda: ntk("jacobian", 1)) * 32
                                 + 2 * (32 * d_y) ** 2 * fm.n_params)}
    rows = []
    for task, (fn, warm_up) in tasks.items():
        if task not in wanted:
            continue
        t = _best_time(fn, repeat, warm_up)
        rows.append({"model": name, "n_params": fm.n_params, "task": task, "time_s": t,
                     "flops": one_input[task.split("-")[0]](), "flops_counted": _flops(fn)})

    def train() -> None:
        paired_sgd(model, data, lr=0.01, steps=steps, batch_size=32, seed=0, log_every=steps,
                   implementation="autograd")

    if "step" in wanted:
        counted = _flops(train) // steps
        rows.append({"model": name, "n_params": fm.n_params, "task": "step",
                     "time_s": _best_time(train, repeat) / steps, "flops": counted,
                     "flops_counted": counted})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-inputs", type=int, default=32)
    parser.add_argument("--models", default="cnn,resnet,vit")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--tasks", default="diag,ntk-jacobian,ntk-vp,step")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = [m for g in args.models.split(",") for m in GROUPS.get(g, [g])]
    peak = matmul_peak()
    wanted = args.tasks.split(",")
    rows = [r for name in names for r in bench_model(name, args.n_inputs, args.repeat, wanted)]
    peak_after = matmul_peak()
    for r in rows:
        r["gflops_per_s"] = r["flops"] / r["time_s"] / 1e9
        r["pct_of_peak"] = 100 * r["flops"] / r["time_s"] / max(peak, peak_after)
    if args.json:
        print(json.dumps({"matmul_peak_gflops": [peak / 1e9, peak_after / 1e9], "rows": rows}))
        return
    print(f"float32 matmul peak: {peak / 1e9:.1f} GFLOP/s before, {peak_after / 1e9:.1f} after "
          f"({args.threads} threads); diag on {args.n_inputs} inputs, NTK on 32")
    print(f"{'model':9s} {'params':>8s} {'task':13s} {'time s':>8s} {'GFLOP':>8s} "
          f"{'GFLOP/s':>8s} {'% peak':>7s} {'counted':>8s}")
    for r in rows:
        print(f"{r['model']:9s} {r['n_params']:8d} {r['task']:13s} {r['time_s']:8.3f} "
              f"{r['flops'] / 1e9:8.2f} {r['gflops_per_s']:8.1f} {r['pct_of_peak']:7.1f} "
              f"{r['flops_counted'] / 1e9:8.2f}")


if __name__ == "__main__":
    main()
