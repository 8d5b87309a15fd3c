"""``weakcorr diagnose``: is a model family's linearization consistent with Theorems 3.1/3.2, Cor. 4.1?

Parses arguments and calls :func:`weakcorr._diagnose.diagnose`; nothing else.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

EPILOG = """\
examples:
  weakcorr diagnose                                  # the demo family: 784-n-n-10 GELU, standard init
  weakcorr diagnose --width 64 128 256 512 --parameterization ntk --activation erf --lr 1
  weakcorr diagnose --lr-exponent -0.5 --r -0.5 --out runs/diag   # also train with lr * n^-0.5
  weakcorr diagnose --model my_models:cnn --model-kwargs channels=1 --no-flatten --dataset digits

--model MODULE:FUNCTION (MODULE importable from the current directory or PYTHONPATH) or
path/to/file.py:FUNCTION names your family: make_model(width, seed) -> nn.Module, or
make_model(width) (then seeded by weakcorr); --model-kwargs KEY=VALUE ... are passed to every
call. It replaces the MLP flags (--depth, --activation, --parameterization). --no-flatten keeps
images as [N, C, H, W] for CNNs.

For each width and seed: exact C^{0,2}, C^{0,3} (RMS of the diagonal over --n-inputs inputs),
the norm of C^{1,1} and the Hessian/gradient ratio at init (with the training lr), for
weakcorr MLPs also ||Theta_n - Theta_inf||_F/||Theta_inf||_F (weakcorr.limits; expected n^-1/2)
and, for MSE, the lr against the critical lr B*d_y/lambda_max (weakcorr.ntk.spectrum), then f
and f_lin trained --steps steps. Exponents over width come from quantile fits over seeds (at least
5 seeds, 3 widths); the verdicts compare them with Eq. 14 (Thm 3.1), Eq. 17 (Thm 3.2), Eq. 22
(Cor. 4.1) and, with --r, Eq. 18. The defaults take under a minute on 2 idle CPU cores
(measured: benchmarks/RESULTS.md).
"""


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "diagnose",
        help="measure correlation and linearization exponents vs width and check the theorems",
        description="Diagnose how a model family (the built-in MLP, or your own with --model) "
        "linearizes with width (paper Thms. 3.1, 3.2, Cor. 4.1, Eq. 18).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--width", type=int, nargs="+", default=[32, 64, 128, 256], metavar="N",
                   help="hidden widths, at least 3 (default 32 64 128 256)")
    p.add_argument("--model", default=None, metavar="MODULE:FUNCTION",
                   help="your model family make_model(width, seed) (or path/to/file.py:FUNCTION);"
                        " default: the built-in MLP")
    p.add_argument("--model-kwargs", nargs="+", default=[], metavar="KEY=VALUE",
                   help="keyword arguments for --model (YAML values: 2, 0.5, true, [1, 2], text)")
    p.add_argument("--depth", type=int, default=None,
                   help="MLP: number of hidden layers (default 2)")
    p.add_argument("--activation", default=None,
                   help="MLP: relu, gelu (default), erf, sigmoid, tanh")
    p.add_argument("--parameterization", default=None, choices=["standard", "ntk", "mup"],
                   help="MLP: standard (default), ntk, mup")
    p.add_argument("--no-flatten", action="store_true",
                   help="keep images as [N, C, H, W] (for --model CNNs)")
    p.add_argument("--dataset", default="mnist5k", help="mnist5k, digits, teacher, mnist, ...")
    p.add_argument("--data-dir", default=None, help="folder of local datasets (MNIST, CIFAR-10)")
    p.add_argument("--n-train", type=int, default=1000, help="training points (default 1000)")
    p.add_argument("--n-test", type=int, default=200, help="test points (default 200)")
    p.add_argument("--lr", type=float, default=0.1, help="η0 (default 0.1)")
    p.add_argument("--lr-exponent", type=float, default=0.0, metavar="ALPHA",
                   help="lr = η0 · n^ALPHA (default 0)")
    p.add_argument("--r", type=float, default=None, metavar="RHO",
                   help="also train with lr · n^RHO and compare the error exponents (Eq. 18)")
    p.add_argument("--steps", type=int, default=100, help="training steps S (default 100)")
    p.add_argument("--batch-size", type=int, default=128,
                   help="SGD batch size (default 128; 0 = full batch)")
    p.add_argument("--seeds", type=int, default=5, help="seeds per width, >= 5 (default 5)")
    p.add_argument("--n-inputs", type=int, default=16,
                   help="inputs of the correlations (default 16)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="write diagnose.md, diagnose.json and figures/ there")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON object and nothing else")
    p.set_defaults(func=run)


def _check_flags(args: argparse.Namespace) -> None:
    """Every flag checked before any work: one-line errors that name the flag."""
    import math

    import torch

    from .. import _diagnose, _factory, models
    from ..asymptotics import MIN_NS, MIN_SAMPLES

    _factory.check_cli_flags(args)
    if args.model is None and args.no_flatten:
        raise ValueError("`--no-flatten` needs `--model`: the built-in MLP takes flat inputs; "
                         "add --model MODULE:FUNCTION (e.g. a CNN) or drop --no-flatten")
    args.depth = 2 if args.depth is None else args.depth
    args.activation = args.activation or "gelu"
    args.parameterization = args.parameterization or "standard"
    if args.model is not None:  # imported and its signature checked before any work
        args.family = _factory.load(args.model, _factory.parse_kwargs(args.model_kwargs))
    for name in ("depth", "n_train", "n_test", "steps", "seeds", "n_inputs"):
        if getattr(args, name) < 1:
            raise ValueError(f"`--{name.replace('_', '-')}` must be >= 1, got {getattr(args, name)}")
    widths = sorted(set(args.width))
    if len(widths) < MIN_NS or widths[0] < 1:
        raise ValueError(f"`--width` must give at least {MIN_NS} distinct positive widths (width "
                         f"exponents), got {' '.join(map(str, args.width))}; e.g. --width 32 64 "
                         "128 256")
    if args.seeds < MIN_SAMPLES:
        raise ValueError(f"`--seeds` must be >= {MIN_SAMPLES} (quantile exponents over seeds), "
                         f"got {args.seeds}; e.g. --seeds 5")
    if args.batch_size < 0:
        raise ValueError(f"`--batch-size` must be >= 0 (0 = full batch), got {args.batch_size}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise ValueError(f"`--lr` must be a finite number > 0, got {args.lr!r}; e.g. --lr 0.1")
    if not math.isfinite(args.lr_exponent):
        raise ValueError(f"`--lr-exponent` must be a finite number (lr = η0 · n^ALPHA), got "
                         f"{args.lr_exponent!r}; e.g. --lr-exponent -0.5")
    if args.r is not None and not math.isfinite(args.r):
        raise ValueError(f"`--r` must be a finite number (r(n) = n^RHO), got {args.r!r}; "
                         "e.g. --r -0.5")
    exponents = [("--lr-exponent", 0.0)] + ([("--r", args.r)] if args.r is not None else [])
    for w in widths:
        for flag, rho in exponents:  # the training learning rates lr · n^ALPHA (· n^RHO)
            try:
                lr = args.lr * float(w) ** (args.lr_exponent + rho)
            except (ArithmeticError, ValueError):
                lr = math.inf
            if not (math.isfinite(lr) and lr > 0):
                raise ValueError(f"`{flag}`: the learning rate at width {w} would be {lr!r} "
                                 f"(--lr {args.lr:g}, --lr-exponent {args.lr_exponent:g}"
                                 + (f", --r {args.r:g}" if flag == "--r" else "")
                                 + "), not a finite number > 0; use an exponent of smaller "
                                 "magnitude")
    if args.device not in ("cpu", "cuda") and not args.device.startswith("cuda:"):
        raise ValueError(f"`--device` must be cpu or cuda, got {args.device!r}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"`--device` is {args.device!r} but CUDA is not available here; use "
                         "--device cpu")
    if args.activation not in [a.value for a in models.Activation]:
        raise ValueError(f"`--activation` must be one of "
                         f"{', '.join(a.value for a in models.Activation)}, got {args.activation!r}")
    if args.out is not None:
        _diagnose.check_writable_dir(args.out, "--out", subdirs=("figures",))


def run(args: argparse.Namespace) -> int:
    from .. import _diagnose, _factory, data, models

    _check_flags(args)
    ds = data.load(args.dataset, n_train=args.n_train, n_test=args.n_test,
                   data_dir=args.data_dir, flatten=not args.no_flatten,
                   **({"grayscale": True} if args.dataset == "cifar10" else {}))
    if args.model is not None:
        make_model = args.family
        _factory.check_member(make_model, min(args.width), 0, ds.X_train,
                              name=f"`--model` {args.model!r}")
    else:
        d_in, d_out = ds.X_train.shape[1], ds.Y_train.shape[1]

        def mlp(width: int, seed: int):
            return models.mlp(d_in, [width] * args.depth, d_out, activation=args.activation,
                              parameterization=args.parameterization, seed=seed)

        make_model = _factory.Family(
            mlp, spec=f"weakcorr.models.mlp({d_in} -> width x {args.depth} -> {d_out}, "
                      f"{args.activation}, {args.parameterization})")

    bar = lines = None
    if not (args.quiet or args.json) and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=len(set(args.width)) * args.seeds, unit="net", desc="diagnose",
                   file=sys.stderr, leave=False)
    elif not (args.quiet or args.json):
        from .sweep import count_progress

        lines = count_progress("diagnose", "networks")

    def progress(done: int, total: int) -> None:
        if lines is not None:
            lines(done, total)
        if bar is not None:
            bar.n = done
            bar.refresh()

    try:
        result = _diagnose.diagnose(
            make_model, ds, widths=args.width, lr=args.lr, steps=args.steps, seeds=args.seeds,
            batch_size=args.batch_size or None, lr_exponent=args.lr_exponent, r=args.r,
            n_inputs=min(args.n_inputs, args.n_train), device=args.device, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    paths = _diagnose.write_report(result, args.out) if args.out else None
    if args.json:
        print(json.dumps(result.to_dict()))
        return 0
    print("\n".join(result.lines()))
    if paths:
        print(f"report: {paths['markdown']}")
    return 0
