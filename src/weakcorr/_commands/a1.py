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

One JSON per (dataset, depth, activation, width, seed) is written atomically to
DIR/runs/<run_id>.json; rerunning skips finished runs. Then DIR/report.md, DIR/summary.json and
DIR/figures/ (Figs. 1-3 style, deviation vs step) are written; --report-only redoes just that
(no CONFIG needed). DIR may grow by datasets, widths, depths, activations and seeds; an --out
holding an A.1 sweep of other settings, or an App. A.2 sweep, is refused.
Datasets: mnist5k (bundled) always; mnist, fashion-mnist, cifar10 (grayscale) when
data.data_dir holds them (subfolders mnist/, fashion-mnist/, cifar10/).

Cost of paper-a1 on 2 CPU cores, one worker (measured): a width-1024, 3-hidden-layer run takes
about 25 s for the correlations at init and about 43 s for 1,000 full-batch steps of f and
f_lin (58 s before training took paired_sgd's hand-written passes); 216 runs (3 activations x
3 depths x 8 widths x 3 seeds, 1 seed trained) took 50 min then, so the preset's 288 runs (with
GELU) at most about 65 min. Runs go in order of width, so an interrupted sweep has every net at
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
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="local worker processes (default 1)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--retry-failed", action="store_true", help="redo runs that failed")
    p.add_argument("--report-only", action="store_true",
                   help="only (re)write the report of DIR's runs (CONFIG is not used)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON object and nothing else")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import _a1, _a1_report
    from .sweep import progress_bar, summary_line

    if args.workers < 1:
        raise ValueError(f"`--workers` must be >= 1, got {args.workers}")
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
        cfg = _a1.load_config(args.config, args.overrides)
        if args.device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise ValueError(f"`--device` is {args.device!r} but CUDA is not available here;"
                                 " use --device cpu")
        _a1_report.check_out_dir(args.out, cfg, name="--out")
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
