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
        "DIR/summary.json. The slopes are compared with the paper's Fig. 4 only when the runs "
        "follow its protocol (preset paper-a2: data, model, training and widths); otherwise "
        "the report says how they differ. Verdicts read 'inconclusive' when a CI is too wide "
        "to decide. After a few seconds, each stage is named on stderr.",
    )
    p.add_argument("dir", metavar="DIR", help="a sweep directory (from `weakcorr sweep`)")
    p.add_argument("--metric", default="mse_test",
                   help="metric fitted against width (default mse_test, Eq. 30)")
    p.add_argument("--n-boot", type=int, default=2000,
                   help="bootstrap replicates, >= 2 (default 2000)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the bootstrap, >= 0 (default 0)")
    p.add_argument("--json", action="store_true", help="print summary.json to stdout only")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import analysis
    from .. import report as _report

    if args.metric not in analysis.METRICS:
        raise ValueError(f"`--metric` must be one of {', '.join(analysis.METRICS)}, "
                         f"got {args.metric!r}")
    if args.n_boot < 2:
        raise ValueError(f"`--n-boot` must be >= 2 (bootstrap replicates), got {args.n_boot}; "
                         "pass e.g. --n-boot 2000")
    if args.seed < 0:
        raise ValueError(f"`--seed` must be >= 0, got {args.seed}; pass e.g. --seed 0")
    rep = _report.write_report(args.dir, y=args.metric, n_boot=args.n_boot, seed=args.seed)
    if args.json:
        print(json.dumps(rep.summary))
        return 0
    print(f"report: {rep.markdown}")
    print(f"summary: {rep.summary_json}")
    print(f"figure: {rep.width_scaling_png}")
    differs = rep.summary.get("paper_protocol_differences") or {}
    print(f"{args.metric} ~ width^slope per alpha"
          + (" (paper: Fig. 4, widths 2048-19484)" if rep.summary["paper_comparison"] else
             f" (not the paper's protocol: differs in {', '.join(differs)}; not compared with "
             "Fig. 4)" if differs else "") + ":")
    paper = {row["alpha"]: row["paper_slope"] for row in rep.summary["paper_comparison"]}
    verdicts = {row["alpha"]: row.get("verdict") for row in rep.summary["paper_comparison"]}
    for row in rep.summary["fits"]:
        alpha = f"{row['alpha']:g}" if row["alpha"] is not None else "?"
        if row["slope"] is None:
            why = ("needs ≥ 2 widths" if row["n_runs"]
                   else f"no ok runs with a finite positive {args.metric}")
            print(f"  alpha={alpha}: slope – ({why})")
            continue
        lo, hi = row["ci_low"], row["ci_high"]
        ci = (f" [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None
              else " (no CI: 1 seed)" if row["n_seeds"] < 2 else " (no CI)")
        ref = paper.get(row["alpha"])
        verdict = verdicts.get(row["alpha"])
        ref_s = (f" (paper {ref}: {verdict})" if ref is not None and verdict else
                 f" (paper {ref})" if ref is not None else "")
        print(f"  alpha={alpha}: slope {row['slope']:.2f}{ci}{ref_s}")
    return 0
