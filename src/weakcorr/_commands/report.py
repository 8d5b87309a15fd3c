"""``weakcorr report DIR``: fits, figures, report.md and summary.json of a sweep directory.

Parses arguments and calls :mod:`weakcorr.report`; nothing else.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "report",
        help="power-law fits, Fig. 4-style figures and a markdown/JSON report of a sweep",
        description="Read DIR/runs/*.json, fit log MSE_test = s log n + b per alpha (Eq. 31) "
        "with bootstrap CIs over seeds, draw the figures and write DIR/report.md and "
        "DIR/summary.json.",
    )
    p.add_argument("dir", metavar="DIR", help="a sweep directory (from `weakcorr sweep`)")
    p.add_argument("--metric", default="mse_test",
                   help="metric fitted against width (default mse_test, Eq. 30)")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap replicates (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    p.add_argument("--json", action="store_true", help="print summary.json to stdout only")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import analysis
    from .. import report as _report

    if args.metric not in analysis.METRICS:
        raise ValueError(f"`--metric` must be one of {', '.join(analysis.METRICS)}, "
                         f"got {args.metric!r}")
    if args.n_boot < 1:
        raise ValueError(f"`--n-boot` must be >= 1, got {args.n_boot}")
    rep = _report.write_report(args.dir, y=args.metric, n_boot=args.n_boot, seed=args.seed)
    if args.json:
        print(json.dumps(rep.summary))
        return 0
    print(f"report: {rep.markdown}")
    print(f"summary: {rep.summary_json}")
    print(f"figure: {rep.width_scaling_png}")
    for row in rep.summary["paper_comparison"]:
        if row["n_runs"]:
            lo, hi = row["ci_low"], row["ci_high"]
            ci = f" [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else ""
            paper = f" (paper {row['paper_slope']})" if row["paper_slope"] is not None else ""
            print(f"  alpha={row['alpha']:g}: slope {row['slope']:.2f}{ci}{paper}")
    return 0
