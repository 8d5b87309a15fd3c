"""``weakcorr sweep CONFIG|PRESET --out DIR``: run a width × α × seed grid, resumably.

Parses arguments and calls :mod:`weakcorr.config` and :mod:`weakcorr.sweep`; nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

EPILOG = """\
examples:
  weakcorr sweep demo --out runs/demo
  weakcorr sweep cpu --out runs/cpu --workers 2
  weakcorr sweep paper-a2 --out runs/a2 --device cuda --set data.data_dir=/data/mnist
  weakcorr sweep my.yaml --out runs/x --set training.alphas=[0,-1] --set seeds=3
  weakcorr sweep demo --out runs/demo --executor dask-local --workers 2
  weakcorr sweep paper-a2 --out /shared/a2 --executor dask --scheduler tcp://10.0.0.5:8786

One JSON per run is written atomically to DIR/runs/<run_id>.json (run_id: a hash of the run's
config). Rerunning the same command skips finished runs; failed runs are redone only with
--retry-failed. Presets: paper-a2 (the paper's App. A.2, for GPUs), cpu, demo.
Each run is claimed before it starts, so sweeps sharing DIR never run a run twice. Dask
executors need `pip install weakcorr[dask]`; see docs/scaling.md.
"""


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "sweep",
        help="train f beside f_lin over a width x lr-exponent x seed grid (App. A.2), resumably",
        description="Run the linearization-error sweep of the paper's App. A.2 / Fig. 4 from a "
        "YAML config or a preset.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_sweep_arguments(p)
    p.add_argument("config", metavar="CONFIG|PRESET", help="a YAML file or a preset name")
    p.add_argument("--out", required=True, metavar="DIR", help="the sweep directory")
    p.add_argument("--dry-run", action="store_true",
                   help="print the run count, FLOPs, memory per process and the expected wall time "
                   "(from a few timed steps at the smallest and largest width); run nothing")
    p.set_defaults(func=run)


def add_sweep_arguments(p: argparse.ArgumentParser, *, workers_default: str = "1") -> None:
    """Options shared by `sweep` and `demo`; ``workers_default`` is what --help says."""
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="local worker processes (torch threads are divided among them; "
                   f"default {workers_default}; at most the CPU count unless --force-workers)")
    p.add_argument("--force-workers", action="store_true",
                   help="allow --workers above this machine's CPU count")
    p.add_argument("--executor", default="auto", metavar="KIND",
                   help="auto (in-process, or local processes with --workers > 1), inprocess, "
                   "local, dask (a cluster: --scheduler) or dask-local (a LocalCluster of "
                   "--workers processes on 127.0.0.1)")
    p.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                   help="the Dask scheduler of --executor dask")
    p.add_argument("--dashboard", action="store_true",
                   help="serve the Dask dashboard on 127.0.0.1 (--executor dask-local; off by "
                   "default: plain HTTP that any local user can read)")
    p.add_argument("--collect", action="store_true",
                   help="Dask workers send records back and this process writes them (for "
                   "workers that cannot see DIR)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. training.steps=50 (repeatable)")
    p.add_argument("--retry-failed", action="store_true", help="redo runs that failed")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON object and nothing else")


def progress_bar(args: argparse.Namespace, desc: str) -> tuple[Callable[[Any], None] | None,
                                                                 Callable[[], None]]:
    """A progress callback on stderr and its closer: tqdm on a TTY, otherwise (logs, CI) a line
    every 30 s and at the end with runs done / total and the ETA; none with --quiet or --json."""
    if args.quiet or args.json:
        return None, lambda: None
    if not sys.stderr.isatty():
        return progress_lines(desc), lambda: None
    from tqdm import tqdm

    bar: list[Any] = []

    def update(event: Any) -> None:
        if not bar:
            bar.append(tqdm(total=event.total, initial=event.done, unit="run", desc=desc,
                            file=sys.stderr, dynamic_ncols=True))
        elif event.outcome is not None:
            bar[0].update(1)
            bar[0].set_postfix_str(f"{event.outcome.status} {event.outcome.run_id[:8]}")

    return update, lambda: bar[0].close() if bar else None


def progress_lines(desc: str, *, every_s: float = 30.0,
                   clock: Callable[[], float] = time.monotonic) -> Callable[[Any], None]:
    """A progress callback for a non-TTY stderr: one line per ``every_s`` seconds and one when
    the last run is in, ``sweep NAME: 40/84 runs (38 ok, 2 failed), 12 s, ETA 14 s``."""
    state: dict[str, Any] = {"start": clock(), "last": clock(), "first": None, "counts": {}}

    def update(event: Any) -> None:
        if state["first"] is None:  # the sweep's own start event, or its first run
            state["first"] = event.done - (event.outcome is not None)
            state["start"] = state["last"] = clock() - event.elapsed_s
        if event.outcome is None:
            return
        status = event.outcome.status
        state["counts"][status] = state["counts"].get(status, 0) + 1
        now = clock()
        if now - state["last"] < every_s and event.done < event.total:
            return
        state["last"] = now
        elapsed = now - state["start"]
        ran = max(event.done - state["first"], 1)
        eta = elapsed / ran * (event.total - event.done)
        counts = ", ".join(f"{v} {k}" for k, v in sorted(state["counts"].items()))
        print(f"sweep {desc}: {event.done}/{event.total} runs ({counts}), {elapsed:.0f} s, "
              f"ETA {eta:.0f} s", file=sys.stderr, flush=True)

    return update


def count_progress(desc: str, unit: str, *, every_s: float = 30.0,
                   clock: Callable[[], float] = time.monotonic) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback for a non-TTY stderr (``diagnose``, ``correlations``):
    a line every ``every_s`` seconds and one at the end, ``diagnose: 3/12 networks, 40 s, ETA
    120 s``."""
    state = {"start": clock(), "last": clock(), "ended": False}

    def update(done: int, total: int) -> None:
        now = clock()
        if done <= 0 or state["ended"] or (now - state["last"] < every_s and done < total):
            return
        state["last"], state["ended"] = now, done >= total
        elapsed = now - state["start"]
        print(f"{desc}: {done}/{total} {unit}, {elapsed:.0f} s, "
              f"ETA {elapsed / done * (total - done):.0f} s", file=sys.stderr, flush=True)

    return update


def execute(args: argparse.Namespace, source: str, out: str) -> Any:
    """Load the config and run the sweep; returns the summary."""
    from .. import _executors, config, sweep

    workers = 1 if args.workers is None else args.workers
    check_workers(workers, force=getattr(args, "force_workers", False),
                  remote=args.executor == "dask")
    try:
        executor = _executors.make_executor(args.executor, workers=workers,
                                            scheduler=args.scheduler, collect=args.collect,
                                            dashboard=getattr(args, "dashboard", False))
    except ImportError as err:
        raise ValueError(str(err)) from None
    try:
        cfg = config.load(source, args.overrides)
        update, close = progress_bar(args, cfg.name)
        try:
            summary = sweep.run_sweep(cfg, out, executor=executor, workers=workers,
                                      device=args.device, retry_failed=args.retry_failed,
                                      progress=update)
        finally:
            close()
    finally:
        if executor is not None:
            executor.shutdown()
            log = getattr(executor, "log_path", None)
            if log and not args.json:
                print(f"Dask's messages (connections, lost workers): {log}", file=sys.stderr)
    return summary


def cpu_count() -> int:
    """This machine's CPU count (``os.cpu_count()``, as demo's default worker count uses)."""
    return os.cpu_count() or 1


def check_workers(workers: int, *, force: bool = False, remote: bool = False) -> None:
    """Refuse ``--workers`` below 1, or above the CPU count unless ``force`` (64 workers on 2
    cores only thrash); ``remote``: the workers are a cluster's, not counted here."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"`--workers` must be >= 1, got {workers!r}")
    n = cpu_count()
    if not remote and not force and workers > n:
        raise ValueError(f"`--workers` {workers} is more than this machine's {n} CPU(s); "
                         f"each worker trains on its own CPU, so pass --workers {n} or fewer "
                         "(or add --force-workers)")


def summary_line(summary: Any) -> str:
    """One human line about a finished sweep; its counts add up to the number of runs.

    ``summary.skipped`` holds the finished runs and the ``skipped_failed`` failed ones that
    were not retried; ``summary.ran`` the runs this sweep ran and those another sweep
    sharing the directory had claimed (``counts["claimed-elsewhere"]``).
    """
    c = summary.counts
    skipped_failed = summary.skipped_failed
    claimed = c.get("claimed-elsewhere", 0)
    parts = [f"{summary.skipped - skipped_failed} already done"]
    if skipped_failed:
        parts.append(f"{skipped_failed} failed before and skipped (--retry-failed redoes them)")
    if claimed:
        parts.append(f"{claimed} claimed by another sweep")
    parts.append(f"{summary.ran - claimed} run now: {c.get('ok', 0)} ok, "
                 f"{c.get('diverged', 0)} diverged, {c.get('failed', 0)} failed")
    return (f"{summary.total} runs ({', '.join(parts)}) in {summary.wall_time_s:.0f} s "
            f"-> {summary.out_dir}")


def dry_run(args: argparse.Namespace) -> int:
    """``--dry-run``: the cost of the sweep, nothing run or written."""
    from .. import _dryrun, config, sweep

    cfg = config.load(args.config, args.overrides)
    sweep._check_device(args.device)
    result = _dryrun.dry_run(cfg, out_dir=args.out, workers=args.workers or 1, device=args.device)
    print(json.dumps(result.to_dict()) if args.json else _dryrun.format_dry_run(result))
    return 0


def run(args: argparse.Namespace) -> int:
    if getattr(args, "dry_run", False):
        return dry_run(args)
    summary = execute(args, args.config, args.out)
    if args.json:
        print(json.dumps(summary.to_dict()))
    else:
        print(f"sweep: {summary_line(summary)}")
        print(f"next: weakcorr report {args.out}")
    return 0
