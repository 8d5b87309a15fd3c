"""``weakcorr a1 CONFIG|PRESET --out DIR``: the paper's App. A.1 sweep (Figs. 1–3), then its report.

Parses arguments and calls :mod:`weakcorr._a1` and :mod:`weakcorr._a1_report`; nothing else.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

EPILOG = """\
examples:
  weakcorr a1 a1-demo --out runs/a1-demo
  weakcorr a1 paper-a1 --out out/a1
  weakcorr a1 paper-a1 --out out/a1 --set data.data_dir=~/data --set training.steps=200
  weakcorr a1 a1-demo --out runs/a1-cnn --model my_models:cnn --no-flatten --set datasets=[digits]

--model MODULE:FUNCTION (or path/to/file.py:FUNCTION) replaces the config's MLPs (depths x
activations) by your family make_model(width, seed) at the config's widths, with
--model-kwargs KEY=VALUE ...; the same as model: {factory: ..., kwargs: {...}} in CONFIG. Its
runs hash the factory's source sha256 (an edited factory is a new protocol, refused in DIR).
--no-flatten keeps images as [N, C, H, W] (data.flatten: false).

One JSON per (dataset, depth, activation, width, seed) is written atomically to
DIR/runs/<run_id>.json; rerunning skips finished runs. Then DIR/report.md, DIR/summary.json and
DIR/figures/ (Figs. 1-3 style, deviation vs step) are written; --report-only redoes just that
(no CONFIG needed). DIR may grow by datasets, widths, depths, activations and seeds; an --out
holding an A.1 sweep of other settings, or an App. A.2 sweep, is refused.
Datasets: mnist5k (bundled) always; mnist, fashion-mnist, cifar10 (grayscale) when
data.data_dir holds them (subfolders mnist/, fashion-mnist/, cifar10/).

Cost of paper-a1 on 2 CPU cores (measured): about an hour; per run and per stage in
benchmarks/RESULTS.md. Runs go in order of width, so an interrupted sweep has every net at
the smaller widths; rerun to resume.
"""


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "a1",
        help="correlations vs width and f vs f_lin after training (App. A.1, Figs. 1-3)",
        description="Run the paper's App. A.1 experiment from a YAML config or a preset "
        "(paper-a1, a1-demo), resumably, then write its report.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", metavar="CONFIG|PRESET", nargs="?", default=None,
                   help="a YAML file or a preset name (not needed with --report-only)")
    p.add_argument("--out", required=True, metavar="DIR", help="the sweep directory")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. training.steps=50 (repeatable)")
    p.add_argument("--model", default=None, metavar="MODULE:FUNCTION",
                   help="your model family make_model(width, seed) (or path/to/file.py:FUNCTION) "
                        "instead of the config's MLPs")
    p.add_argument("--model-kwargs", nargs="+", default=[], metavar="KEY=VALUE",
                   help="keyword arguments for --model (YAML values: 2, 0.5, true, [1, 2], text)")
    p.add_argument("--no-flatten", action="store_true",
                   help="keep images as [N, C, H, W] (for --model CNNs; data.flatten: false)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="local worker processes (default 1; at most the CPU count unless "
                   "--force-workers)")
    p.add_argument("--force-workers", action="store_true",
                   help="allow --workers above this machine's CPU count")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--retry-failed", action="store_true", help="redo runs that failed")
    p.add_argument("--report-only", action="store_true",
                   help="only (re)write the report of DIR's runs (CONFIG is not used)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON object and nothing else")
    p.set_defaults(func=run)


def _check_family(cfg: Any, name: str) -> None:
    from .. import _a1, _factory

    family = _factory.load(cfg.model.factory, dict(cfg.model.kwargs), name=name,
                           kwargs_name="--model-kwargs" if name == "--model" else "model.kwargs")
    ok, _ = _a1.resolve_datasets(cfg)
    for dataset in ok:
        x = _a1._load(dataset, cfg.data.n_train, cfg.data.n_test, cfg.data.seed,
                      cfg.data.data_dir, cfg.dtype, flatten=cfg.data.flatten).X_train
        _factory.check_member(family, min(cfg.model.widths), cfg.seeds[0], x,
                              name=f"`{name}` {cfg.model.factory!r} on dataset {dataset!r}")


def run(args: argparse.Namespace) -> int:
    from .. import _a1, _a1_report, _factory
    from .sweep import check_workers, progress_bar, summary_line

    check_workers(args.workers, force=args.force_workers)
    if args.device not in ("cpu", "cuda") and not args.device.startswith("cuda:"):
        raise ValueError(f"`--device` must be cpu or cuda, got {args.device!r}")
    summary = None
    if args.report_only:
        _a1_report.check_report_dir(args.out, name="--out")
    else:
        if args.config is None:
            raise ValueError("`CONFIG|PRESET` is missing: pass a YAML file or a preset "
                             f"({', '.join(_a1.presets())}), e.g. `weakcorr a1 a1-demo --out "
                             f"{args.out}`; or add --report-only to rewrite DIR's report")
        if args.model is None and args.model_kwargs:
            raise ValueError("`--model-kwargs` needs `--model` (they are passed to your "
                             "factory); add --model MODULE:FUNCTION or drop --model-kwargs")
        kwargs = _factory.parse_kwargs(args.model_kwargs)
        cfg = _a1.load_config(args.config, args.overrides, model=args.model, model_kwargs=kwargs,
                              flatten=False if args.no_flatten else None)
        if args.device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise ValueError(f"`--device` is {args.device!r} but CUDA is not available here;"
                                 " use --device cpu")
        _a1_report.check_out_dir(args.out, cfg, name="--out")
        if cfg.model.factory is not None:  # import, signature, return type, data: before any run
            _check_family(cfg, "--model" if args.model else "model.factory")
        if cfg.training.seeds > len(cfg.seeds):
            n = len(cfg.seeds)
            print(f"weakcorr a1: note: `training.seeds` ({cfg.training.seeds}) is more than the "
                  f"{n} seed{'s' * (n != 1)} of `seeds`, so only {n} "
                  f"seed{'s are' if n != 1 else ' is'} trained; lower training.seeds or add seeds",
                  file=sys.stderr)
        update, close = progress_bar(args, cfg.name)
        try:
            summary = _a1_report.run_a1(cfg, args.out, workers=args.workers, device=args.device,
                                        retry_failed=args.retry_failed, progress=update)
        finally:
            close()
    report = _a1_report.write_report(args.out)
    if args.json:
        print(json.dumps({"sweep": summary.to_dict() if summary else None,
                          "report": report["report"], "runs": report["runs"],
                          "verdicts": report["verdicts"]}))
        return 0
    if summary is not None:
        print(f"a1: {summary_line(summary)}")
    print(f"report: {report['report']}")
    for line in report["verdicts"]:
        print(f"  {line}")
    return 0
