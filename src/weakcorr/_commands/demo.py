"""``weakcorr demo [--out DIR]``: the `demo` preset sweep, then its report.

Parses arguments and calls :mod:`weakcorr.sweep` and :mod:`weakcorr.report`; nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from .sweep import add_sweep_arguments, execute, summary_line

# Many small runs: two single-threaded worker processes use two cores best. Only executors
# that start local workers take this default; inprocess and dask (a cluster) get 1.
LOCAL_EXECUTORS = ("auto", "local", "dask-local")


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo",
        help="a small App. A.2 sweep on bundled MNIST-5k plus its report (under a minute on "
             "2 CPU cores: benchmarks/RESULTS.md)",
        description="Run the `demo` preset (linearization error vs width for three lr "
        "exponents on MNIST-5k), then write its report and Fig. 4-style figure.",
    )
    p.add_argument("--out", default="runs/demo", metavar="DIR",
                   help="the sweep directory (default runs/demo)")
    add_sweep_arguments(p, workers_default="2 (1 on a one-core machine) with --executor auto, "
                        "local or dask-local; 1 with inprocess or dask")
    p.set_defaults(func=run)


def default_workers(executor: str) -> int:
    """The worker count of `demo` without --workers."""
    return min(2, os.cpu_count() or 1) if executor in LOCAL_EXECUTORS else 1


def run(args: argparse.Namespace) -> int:
    from .. import report as _report

    if args.workers is None:
        args.workers = default_workers(args.executor)
    summary = execute(args, "demo", args.out)
    rep = _report.write_report(args.out)
    if args.json:
        print(json.dumps({"sweep": summary.to_dict(),
                          "report": str(rep.markdown), "figure": str(rep.width_scaling_png),
                          "summary": rep.summary}))
        return 0
    print(f"demo sweep: {summary_line(summary)}")
    # The paper's slopes are compared only for its protocol (the demo's differs: report.md).
    for row in rep.summary["paper_comparison"] or rep.summary["fits"]:
        if row["n_runs"] and row["slope"] is not None:
            lo, hi = row["ci_low"], row["ci_high"]
            ci = f" [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else ""
            ref = (f" (paper, widths 2048-19484: {row['paper_slope']})"
                   if row.get("paper_slope") is not None else "")
            print(f"  alpha={row['alpha']:g}: MSE_test ~ n^{row['slope']:.2f}{ci}{ref}")
    if rep.summary.get("paper_protocol_differences"):
        print("  not the paper's protocol (differs in "
              + ", ".join(rep.summary["paper_protocol_differences"])
              + "): the paper's Fig. 4 slopes are not compared")
    print(f"report:  {rep.markdown}")
    print(f"figures: {rep.markdown.parent / 'figures'}")
    print(f"Fig. 4-style figure: {rep.width_scaling_png}")
    return 0
