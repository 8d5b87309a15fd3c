"""GPU readiness check: the CUDA training paths against CPU float64, then their throughput.

1. Correctness on a small grid (MNIST-5k 4,000 / 1,000, the A.2 protocol with 50 steps, widths
   64 and 256, alpha 0 and -1, seeds 0 and 1): the CPU float64 autodiff reference
   (``paired_sgd(implementation="autograd")``) against CUDA float64 and float32, both as one seed
   at a time (autograd) and as seed batches (the hand-written passes of ``weakcorr._vmap_train``).
   float64 must agree to 1e-9 relative in MSE_test(f, f_lin) and the final losses; float32 is
   printed with its relative difference (float32 rounding is itself part of f - f_lin there).
2. Throughput at widths 2048 and 8192: seconds per SGD step of one seed (autograd; the
   hand-written passes) and of 4 seeds trained together, GFLOP/s by the paired-step model
   ``12 · batch · weights`` per seed-step, beside the fp32 / fp64 matmul rates measured here
   (steps timed as the difference of runs of s and 3s steps, so setup and final metrics cancel).

Writes a JSON summary to ``--json`` and exits 1 if a float64 check fails.

    python benchmarks/gpu_check.py --json gpu_check.json [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import torch

from weakcorr import _precision, _vmap_train, config, experiments, train

PROTOCOL = ["training.steps=50", "seeds=2", "model.widths=[64,256]", "training.alphas=[0,-1]",
            "data.n_train=4000", "data.n_test=1000"]
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_rate(device: str, dtype: torch.dtype, n: int = 8192, reps: int = 5) -> float:
    """FLOP/s of an n×n×n product (TF32 off)."""
    with _precision.full_precision(device):
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        for _ in range(2):
            a @ b
        sync(device)
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start)


def _run(run_cfg: dict, device: str, implementation: str) -> dict:
    ds = experiments.load_data(run_cfg["data"], run_cfg["training"]["dtype"])
    model = experiments.build_model(run_cfg, ds.X_train.shape[1], ds.Y_train.shape[1])
    kw = experiments._train_kwargs(run_cfg, device)
    res = train.paired_sgd(model, ds, implementation=implementation, **kw)
    return {"mse_test": res.metrics["mse_test"], "loss_f": res.logs[-1]["loss_f"],
            "loss_lin": res.logs[-1]["loss_lin"], "status": res.status}


def _group(run_cfgs: list[dict], device: str) -> list[dict]:
    recs = experiments.run_group(run_cfgs, device=device)
    return [{"mse_test": r["metrics"]["mse_test"], "loss_f": r["logs"][-1]["loss_f"],
             "loss_lin": r["logs"][-1]["loss_lin"], "status": r["status"],
             "implementation": r.get("train_config", {}).get("implementation")} for r in recs]


def correctness(device: str) -> tuple[list[dict], bool]:
    rows, ok = [], True
    cpu64: dict[tuple, dict] = {}
    for dtype in ("float64", "float32"):
        cfg = config.load("paper-widths-cpu", [*PROTOCOL, f"training.dtype={dtype}"])
        runs = config.expand(cfg)
        ref_cfg = config.load("paper-widths-cpu", [*PROTOCOL, "training.dtype=float64"])
        refs = {(r["model"]["width"], r["training"]["alpha"], r["seed"]): r
                for r in config.expand(ref_cfg)}
        groups: dict[tuple, list[dict]] = {}
        for r in runs:
            groups.setdefault((r["model"]["width"], r["training"]["alpha"]), []).append(r)
        for (width, alpha), members in groups.items():
            batched = _group(members, device)
            for r, b in zip(members, batched, strict=True):
                key = (width, alpha, r["seed"])
                if key not in cpu64:
                    cpu64[key] = _run(refs[key], "cpu", "autograd")
                ref = cpu64[key]
                single = _run(r, device, "autograd")
                for arm, got in (("seed batch", b), ("one seed, autograd", single)):
                    rel = {k: abs(got[k] - ref[k]) / abs(ref[k]) for k in ("mse_test", "loss_f",
                                                                          "loss_lin")}
                    passed = max(rel.values()) <= 1e-9 if dtype == "float64" else None
                    ok &= passed is not False
                    rows.append({"dtype": dtype, "width": width, "alpha": alpha,
                                 "seed": r["seed"], "arm": arm, "mse_test": got["mse_test"],
                                 "mse_test_cpu64": ref["mse_test"], "rel": rel, "pass": passed})
                    print(f"  {dtype} width {width:4d} alpha {alpha:+.2f} seed {r['seed']} "
                          f"{arm:19s} mse_test {got['mse_test']:.6e} (cpu64 {ref['mse_test']:.6e}) "
                          f"max rel diff {max(rel.values()):.2e}"
                          + ("" if passed is None else ("  PASS" if passed else "  FAIL")),
                          flush=True)
    return rows, ok


def throughput(device: str, widths: tuple[int, ...] = (2048, 8192), k: int = 4,
               steps: int = 20) -> list[dict]:
    rows = []
    for width in widths:
        cfg = config.load("paper-widths-cpu", [f"model.widths=[{width}]", "training.alphas=[-0.5]",
                                              f"seeds={k}", f"training.steps={steps}"])
        runs = config.expand(cfg)
        ds = experiments.load_data(runs[0]["data"])
        p = 784 * width + width * width + width * 10
        flop_seed_step = 12 * 128 * p
        models = [experiments.build_model(r, 784, 10) for r in runs]
        kw = experiments._train_kwargs(runs[0], device)
        kw.pop("seed")

        def wall_of(fn, n: int) -> float:
            sync(device)
            start = time.perf_counter()
            fn(n)
            sync(device)
            return time.perf_counter() - start

        def timed(fn) -> float:
            """Seconds of ``steps`` SGD steps alone: runs of s and 3s steps, differenced (the
            model's setup and final metrics cancel)."""
            fn(2)  # warm-up
            return (wall_of(fn, 3 * steps) - wall_of(fn, steps)) / 2

        arms = {
            "one seed, autograd": (1, lambda s: train.paired_sgd(
                models[0], ds, seed=0, implementation="autograd", **{**kw, "steps": s})),
            "one seed, hand-written": (1, lambda s: train.paired_sgd(
                models[0], ds, seed=0, implementation="mlp", **{**kw, "steps": s})),
            f"{k} seeds together": (k, lambda s: _vmap_train.paired_sgd_seeds(
                models, ds, seeds=list(range(k)), **{**kw, "steps": s})),
        }
        for arm, (n_seeds, fn) in arms.items():
            wall = timed(fn)
            rate = flop_seed_step * n_seeds * steps / wall
            rows.append({"width": width, "arm": arm, "seeds": n_seeds,
                         "s_per_seed_step": wall / (steps * n_seeds), "gflops": rate / 1e9})
            print(f"  width {width:5d} {arm:24s} {1e3 * wall / (steps * n_seeds):8.2f} ms per "
                  f"seed-step  {rate / 1e9:8.0f} GFLOP/s", flush=True)
        base = rows[-3]["s_per_seed_step"]
        print(f"  width {width:5d} seed batch x{base / rows[-1]['s_per_seed_step']:.2f} over one "
              f"seed (autograd), x{rows[-2]['s_per_seed_step'] / rows[-1]['s_per_seed_step']:.2f}"
              " over one seed (hand-written)", flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--json", default=None)
    ap.add_argument("--throughput-widths", type=int, nargs="+", default=[2048, 8192])
    ap.add_argument("--quick", action="store_true", help="a 5-step, width-16 grid (a CPU smoke test)")
    args = ap.parse_args()
    if args.quick:
        PROTOCOL[:] = ["training.steps=5", "seeds=2", "model.widths=[16]", "training.alphas=[0,-1]",
                       "data.n_train=256", "data.n_test=64"]
    device = args.device
    info = {"torch": torch.__version__, "python": platform.python_version(),
            "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
            "tf32_before": _precision.tf32_state()}
    print(f"gpu_check: {info}", flush=True)
    n = 1024 if args.quick else 8192
    info["matmul_fp32_gflops"] = matmul_rate(device, torch.float32, n) / 1e9
    info["matmul_fp64_gflops"] = matmul_rate(device, torch.float64, n) / 1e9
    print(f"  matmul {n}^3: fp32 (no TF32) {info['matmul_fp32_gflops']:.0f} GFLOP/s, "
          f"fp64 {info['matmul_fp64_gflops']:.0f} GFLOP/s", flush=True)
    print("correctness against CPU float64 autograd:", flush=True)
    info["correctness"], ok = correctness(device)
    print("throughput:", flush=True)
    info["throughput"] = throughput(device, tuple(args.throughput_widths),
                                    steps=3 if args.quick else 20)
    info["float64_checks_pass"] = bool(ok)
    print(f"gpu_check: float64 checks {'PASS' if ok else 'FAIL'}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(info, fh, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
