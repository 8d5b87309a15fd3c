"""``weakcorr sweep --dry-run``: what a sweep would cost, before it starts.

Counts the runs (and those a directory already holds), estimates each run's floating-point
work from the MLP's shape, times a few real training steps at the grid's smallest and largest
width (the calibration), and turns both into an expected wall time. Nothing is written.

The FLOP model of one paired run (App. A.2: f and f_lin trained side by side, Eq. 27), with
``P`` the weights of the MLP's matrices (biases and activations are lower order) and ``B`` the
batch:

* each step: f forward ``2BP`` and backward ``4BP``; f_lin's tangent pass ``2BP`` (θ0's
  activations are cached) and its vjp ``4BP``: ``12·B·P``;
* each evaluation on the test set (``logging.eval_every``): ``4·n_test·P``;
* the final metrics (Eq. 24, 30; train and test, f and f_lin): ``4·(n_train + n_test)·P``.

The calibration times runs of ``s`` and ``3s`` steps at each calibration width (their difference
is the steps alone; the rest is per-run work: model, final metrics), fits
``t_step = c0 + flops_step / R`` through the two widths (``c0``: the per-step overhead that
dominates small widths; ``R``: the achieved FLOP rate) and interpolates the per-run work in
width², so the estimate holds over the whole grid. Seed batches (``execution.seed_batch``) train faster than this
one-seed calibration, so their estimate is an upper bound.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["DryRun", "dry_run", "format_dry_run", "run_flops"]


def _weights(run_cfg: Mapping[str, Any], d_in: int, d_out: int) -> int:
    """``P``: the entries of the MLP's weight matrices (biases left out)."""
    m = run_cfg["model"]
    dims = [d_in, *([m["width"]] * m["depth"]), d_out]
    return sum(a * b for a, b in zip(dims[:-1], dims[1:], strict=True))


def _step_flops(run_cfg: Mapping[str, Any], d_in: int, d_out: int) -> float:
    """``12·B·P``: one paired SGD step (f forward and backward, f_lin's tangent pass and vjp)."""
    t, d = run_cfg["training"], run_cfg["data"]
    batch = d["n_train"] if t.get("full_batch") else t["batch_size"]
    return 12.0 * batch * _weights(run_cfg, d_in, d_out)


def run_flops(run_cfg: Mapping[str, Any], d_in: int, d_out: int) -> float:
    """Floating-point operations of one paired run of an MLP run config (the model above)."""
    t, lg, d = run_cfg["training"], run_cfg["logging"], run_cfg["data"]
    p = _weights(run_cfg, d_in, d_out)
    flops = _step_flops(run_cfg, d_in, d_out) * t["steps"]
    if lg.get("eval_every"):
        flops += 4.0 * d["n_test"] * p * (t["steps"] // lg["eval_every"])
    return flops + 4.0 * (d["n_train"] + d["n_test"]) * p


@dataclasses.dataclass(frozen=True)
class DryRun:
    """What :func:`dry_run` found: counts, work, the calibration and the expected wall time."""

    name: str
    total: int
    done: int
    to_run: int
    widths: tuple[int, ...]
    n_alphas: int
    n_seeds: int
    flops_to_run: float
    # width, params, gflop_per_run, s_per_run, mib_per_run (the peak of a process training
    # execution.seed_batch seeds together, weakcorr._memory.estimate_run_bytes)
    per_width: tuple[dict[str, Any], ...]
    calibration: tuple[dict[str, Any], ...]  # width, steps, s_per_step, s_per_run_fixed
    overhead_s_per_step: float
    gflops_per_s: float
    workers: int
    device: str
    expected_wall_s: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (``--json``)."""
        return dataclasses.asdict(self)


def _time_run(run_cfg: Mapping[str, Any], steps: int, device: str) -> float:
    from . import experiments

    cfg = {**run_cfg, "training": {**run_cfg["training"], "steps": steps},
           "logging": {**run_cfg["logging"], "every": steps, "eval_every": None}}
    start = time.perf_counter()
    record = experiments.run(cfg, device=device)
    wall = time.perf_counter() - start
    if record["status"] == "failed":
        raise ValueError(f"the calibration run at width {run_cfg['model']['width']} failed: "
                         f"{record.get('error', '?')}")
    return wall


def _time_steps(run_cfg: Mapping[str, Any], steps: int, device: str) -> tuple[float, float]:
    """(seconds per step, seconds per run outside the steps) from runs of ``steps`` and
    ``3·steps`` steps (the faster of two each), after a warm-up run: the difference isolates
    the steps from the per-run work (model, final metrics)."""
    _time_run(run_cfg, 1, device)
    short = min(_time_run(run_cfg, steps, device) for _ in range(2))
    long = min(_time_run(run_cfg, 3 * steps, device) for _ in range(2))
    per_step = max(long - short, 1e-9) / (2 * steps)
    return per_step, max(short - steps * per_step, 0.0)


def _seeds_together(cfg: Any, width: int) -> int:
    """Seeds one process trains at once at ``width`` (``execution.seed_batch``)."""
    ex = cfg.execution
    return min(ex.seed_batch, len(cfg.seeds)) if width <= ex.seed_batch_max_width else 1


def _fixed_s(calib: Sequence[Mapping[str, Any]], width: int) -> float:
    """Per-run time outside the steps, interpolated in width² between the calibration widths."""
    if len(calib) == 1:
        return float(calib[0]["s_per_run_fixed"]) * (width / calib[0]["width"]) ** 2
    (w0, s0), (w1, s1) = ((c["width"], c["s_per_run_fixed"]) for c in calib)
    return max(s0 + (s1 - s0) * (width**2 - w0**2) / (w1**2 - w0**2), 0.0)


def dry_run(cfg: Any, *, out_dir: str | None = None, workers: int = 1, device: str = "cpu",
            calibration_steps: int = 10, calibrate: bool = True) -> DryRun:
    """Estimate a sweep's cost: runs, FLOPs, per-run memory and wall time (nothing written).

    Args:
        cfg: a :class:`weakcorr.config.SweepConfig`.
        out_dir: a sweep directory whose finished runs are not counted again (may not exist).
        workers: the ``--workers`` the sweep would use (runs split among them).
        device: where the calibration steps (and so the sweep) run.
        calibration_steps: training steps timed at each calibration width.
        calibrate: False skips the timing (counts, FLOPs and memory only).
    """
    import pathlib

    from . import config as _config
    from . import experiments
    from ._memory import estimate_run_bytes
    from .results import RunStore, run_id

    runs = _config.expand(cfg)
    if runs[0]["model"].get("factory") is not None:
        raise ValueError("`--dry-run` estimates the built-in MLP from its shape; a model.factory "
                         "sweep has no FLOP model here: time one run instead (--set seeds=1 "
                         "--set model.widths=[W] --set training.steps=10)")
    finished: list[bool] = [False] * len(runs)  # each record read once
    if out_dir is not None and (pathlib.Path(out_dir) / "runs").is_dir():
        store = RunStore(out_dir)
        finished = [store.state(run_id(c)) in ("ok", "diverged") for c in runs]
    done = sum(finished)
    ds = experiments.load_data(runs[0]["data"], runs[0]["training"]["dtype"])
    d_in, d_out = int(ds.X_train[0].numel()), int(ds.Y_train.shape[1])
    first = {r["model"]["width"]: r for r in reversed(runs)}
    widths = tuple(sorted(first))
    steps = runs[0]["training"]["steps"]

    def step_flops(w: int) -> float:
        return _step_flops(first[w], d_in, d_out)

    calib: list[dict[str, Any]] = []
    c0, rate = 0.0, math.inf
    if calibrate:
        # The largest width whose timed steps (8 × calibration_steps) stay within ~4e11 FLOP.
        cal_widths = [widths[0], *[w for w in widths
                                   if 8 * calibration_steps * step_flops(w) <= 4e11][-1:]]
        cal_widths = sorted(set(cal_widths))
        for w in cal_widths:
            per_step, fixed = _time_steps(first[w], calibration_steps, device)
            calib.append({"width": w, "steps": calibration_steps, "s_per_step": per_step,
                          "s_per_run_fixed": fixed})
        if len(calib) == 2 and step_flops(calib[1]["width"]) > step_flops(calib[0]["width"]):
            (f0, t0), (f1, t1) = ((step_flops(c["width"]), c["s_per_step"]) for c in calib)
            slope = (t1 - t0) / (f1 - f0)
            rate = 1.0 / slope if slope > 0 else f1 / t1
            c0 = max(t0 - f0 / rate, 0.0)
        else:
            rate = step_flops(calib[0]["width"]) / calib[0]["s_per_step"]
    per_width = []
    total_s = 0.0
    flops_to_run = 0.0
    todo_by_width: dict[int, int] = dict.fromkeys(widths, 0)
    for r, is_done in zip(runs, finished, strict=True):
        todo_by_width[r["model"]["width"]] += not is_done
    for w in widths:
        f_run = run_flops(first[w], d_in, d_out)
        s_run = (steps * (c0 + step_flops(w) / rate) + _fixed_s(calib, w)) if calibrate \
            else math.nan
        per_width.append({
            "width": w, "params": _weights(first[w], d_in, d_out),
            "gflop_per_run": f_run / 1e9, "s_per_run": s_run,
            "mib_per_run": estimate_run_bytes(first[w], d_in, d_out, seeds=_seeds_together(
                cfg, w)) / 2**20,
        })
        flops_to_run += f_run * todo_by_width[w]
        total_s += s_run * todo_by_width[w]
    n_workers = max(1, min(workers, len(runs) - done))
    return DryRun(
        name=cfg.name, total=len(runs), done=done, to_run=len(runs) - done, widths=widths,
        n_alphas=len(cfg.training.alphas), n_seeds=len(cfg.seeds), flops_to_run=flops_to_run,
        per_width=tuple(per_width), calibration=tuple(calib), overhead_s_per_step=c0,
        gflops_per_s=rate / 1e9 if math.isfinite(rate) else math.nan, workers=n_workers,
        device=device, expected_wall_s=total_s / n_workers if calibrate else math.nan,
    )


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "not calibrated"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def format_dry_run(d: DryRun) -> str:
    """The human summary ``weakcorr sweep --dry-run`` prints."""
    lines = [
        f"dry run of {d.name!r}: nothing started, nothing written",
        f"  runs: {d.total} ({len(d.widths)} widths x {d.n_alphas} alphas x {d.n_seeds} seeds); "
        f"{d.done} already done, {d.to_run} to run",
        f"  work: {d.flops_to_run:.3g} FLOP to run (paired f + f_lin steps, 12·batch·weights each)",
        "  width    weights   GFLOP/run    s/run   MiB/run",
    ]
    for p in d.per_width:
        lines.append(f"  {p['width']:>5} {p['params']:>10,} {p['gflop_per_run']:>11.3g} "
                     f"{p['s_per_run']:>8.3g} {p['mib_per_run']:>9.0f}")
    if d.calibration:
        cal = ", ".join(f"width {c['width']}: {1e3 * c['s_per_step']:.3g} ms/step"
                        for c in d.calibration)
        lines.append(f"  calibration on {d.device} ({d.calibration[0]['steps']} steps each): {cal}"
                     f" -> {d.gflops_per_s:.3g} GFLOP/s, {1e3 * d.overhead_s_per_step:.2g} ms/step "
                     "overhead")
    lines.append(f"  expected wall time: {_duration(d.expected_wall_s)} with {d.workers} "
                 f"worker(s) on {d.device} (seed batches run faster: an upper bound for them)")
    return "\n".join(lines)
