"""``weakcorr correlations``: exact C^{0,d} diagonals of MLPs (or your family) at init vs width.

Parses arguments and calls :mod:`weakcorr._corr_experiment`; nothing else.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

EPILOG = """\
examples:
  weakcorr correlations --width 64 128 256 --depth 2 --activation gelu \\
      --parameterization ntk --dataset mnist5k --n-inputs 160 --orders 2 3 \\
      --lr 1.0 --seeds 3 --out runs/corr

  weakcorr correlations --width 4 8 16 --model my_models:cnn --model-kwargs channels=1 \\
      --no-flatten --dataset digits --n-inputs 8

--model MODULE:FUNCTION (importable from the current directory or PYTHONPATH) or
path/to/file.py:FUNCTION is your family, make_model(width, seed) -> nn.Module or
make_model(width) (seeded by weakcorr), called with --model-kwargs; it replaces --depth,
--activation and --parameterization, and its records carry the factory's source sha256 (an
edited factory is other settings). --no-flatten keeps images as [N, C, H, W].

One JSON per (width, seed) is written atomically to --out (corr_w<width>_s<seed>.json);
records with the same configuration are reused unless --no-resume.  A --out holding records
of other settings is refused (pass a new --out): only --width, --seeds, --seed-offset,
--device, --max-memory-gb and --data-dir may change between runs into one folder.

--method auto (the default) uses the exact Taylor-mode path for these MLPs, far faster
than --method generic at large widths (benchmarks/RESULTS.md); both agree to float rounding.
"""


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "correlations",
        help="exact derivative correlations C^{0,d} of MLPs at init, swept over width",
        description="Exact diagonal derivative correlations C^{0,d}(x;x..x)_{i;i..i} "
        "(paper Eq. 11) of MLPs at initialisation, for a sweep of widths and seeds.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--width", type=int, nargs="+", required=True, metavar="N",
                   help="hidden widths to sweep")
    p.add_argument("--model", default=None, metavar="MODULE:FUNCTION",
                   help="your model family make_model(width, seed) (or path/to/file.py:FUNCTION);"
                        " default: the built-in MLP")
    p.add_argument("--model-kwargs", nargs="+", default=[], metavar="KEY=VALUE",
                   help="keyword arguments for --model (YAML values: 2, 0.5, true, [1, 2], text)")
    p.add_argument("--no-flatten", action="store_true",
                   help="keep images as [N, C, H, W] (for --model CNNs)")
    p.add_argument("--depth", type=int, default=None,
                   help="MLP: number of hidden layers (default 2)")
    p.add_argument("--activation", default=None,
                   help="MLP: relu, gelu (default), erf, sigmoid, tanh")
    p.add_argument("--parameterization", default=None, choices=["standard", "ntk", "mup"],
                   help="MLP: standard, ntk (default), mup")
    p.add_argument("--dataset", default="mnist5k", help="mnist5k, digits, teacher, mnist, ...")
    p.add_argument("--data-dir", default=None, help="folder of local datasets (MNIST, CIFAR-10)")
    p.add_argument("--n-inputs", type=int, default=160, help="inputs x (default 160)")
    p.add_argument("--orders", type=int, nargs="+", default=[2, 3], metavar="D",
                   help="correlation orders d (default 2 3)")
    p.add_argument("--lr", type=float, default=1.0, help="learning rate η (default 1.0)")
    p.add_argument("--seeds", type=int, default=3, help="initialisations per width (default 3)")
    p.add_argument("--seed-offset", type=int, default=0,
                   help="first initialisation seed, >= 0 (default 0)")
    p.add_argument("--data-seed", type=int, default=0,
                   help="seed of the input sample, >= 0 (default 0)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:K (default cpu)")
    p.add_argument("--method", default="auto", choices=["auto", "generic", "mlp"],
                   help="auto (default): mlp when the model is an MLP; generic: any module; "
                        "mlp: exact Taylor-mode path for MLPs")
    p.add_argument("--max-memory-gb", type=float, default=4.0,
                   help="memory budget for gradient blocks (default 4)")
    p.add_argument("--out", default=None, metavar="DIR", help="folder for the JSON records")
    p.add_argument("--no-resume", action="store_true", help="recompute existing records")
    p.add_argument("--json", action="store_true", help="print one JSON object and nothing else")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import _corr_experiment as experiment
    from .. import _factory

    _factory.check_cli_flags(args)
    kwargs = _factory.parse_kwargs(args.model_kwargs)
    config = experiment.CorrelationSweep(
        widths=tuple(args.width), depth=2 if args.depth is None else args.depth,
        activation=args.activation or "gelu", parameterization=args.parameterization or "ntk",
        model=args.model, model_kwargs=tuple(sorted(kwargs.items())), flatten=not args.no_flatten,
        dataset=args.dataset, n_inputs=args.n_inputs,
        orders=tuple(args.orders), lr=args.lr, seeds=args.seeds, seed_offset=args.seed_offset,
        data_seed=args.data_seed, dtype=args.dtype, device=args.device, method=args.method,
        max_memory_gb=args.max_memory_gb, data_dir=args.data_dir,
    )
    config.validate()
    bar = lines = None
    if not args.quiet and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=1, unit="pair", file=sys.stderr, desc="correlations", leave=False)
    elif not (args.quiet or args.json):
        from .sweep import count_progress

        lines = count_progress("correlations", "input pairs")

    def progress(n_done: int, n_total: int) -> None:
        if lines is not None:
            lines(n_done, n_total)
        if bar is not None:
            bar.total = n_total
            bar.n = n_done
            bar.refresh()

    try:
        records = experiment.run_sweep(
            config, args.out, resume=not args.no_resume, progress=progress
        )
    finally:
        if bar is not None:
            bar.close()
    summary = experiment.summarize(records)
    if args.json:
        light = [
            {**r, "metrics": {k: {m: v for m, v in met.items() if m != "values"}
                              for k, met in r["metrics"].items()}}
            for r in records
        ]
        print(json.dumps({"config": config.to_dict(), "out": args.out, "runs": light,
                          "summary": summary}))
    else:
        print(experiment.format_table(records, summary))
        if args.out is not None:
            print(f"records: {args.out}")
    return 0
