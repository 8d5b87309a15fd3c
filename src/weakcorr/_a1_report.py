"""Run the A.1 sweep resumably and write its report (paper App. A.1, Figs. 1–3).

:func:`run_a1` expands an :class:`weakcorr._a1.A1Config` into runs, skips those whose JSON is
already in ``out_dir/runs`` (status ``ok``/``diverged``; ``failed`` only with
``retry_failed``), and runs the rest through the sweep machinery of :mod:`weakcorr.sweep`
(claim, run, atomic write per run; in-process or process-pool executors).
:func:`write_report` reads the directory back into tidy tables, fits width exponents per
(dataset, depth, activation) and writes ``report.md``, ``summary.json`` and ``figures/``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from . import _a1, _a1_plots, _diagnose
from ._claims import ClaimingRunStore
from ._files import atomic_write_text, check_writable_dir
from .analysis import fit_power_law
from .fits import INCONCLUSIVE, decide, mean_interval, residual_interval
from .results import (MANIFEST, RunStore, atomic_write_json, claim_protocol, json_safe,
                      protocol_changes, run_id)
from .sweep import (
    InProcessExecutor, PerRun, RunTask, SupervisedPoolExecutor, SweepEvent, SweepSummary,
    execute_all,
)

__all__ = ["QUANTITIES", "check_out_dir", "check_report_dir", "fit_exponents", "load_curves",
           "load_table", "run_a1", "write_report"]

#: Per-run quantities fitted against width: (column, label).
QUANTITIES = (
    ("c2_exact", "C^{0,2} exact"), ("c2_paper", "C^{0,2} paper est."),
    ("c3_exact", "C^{0,3} exact"), ("c3_paper", "C^{0,3} paper est."),
    ("c11_same", "‖C^{1,1}‖ same"), ("c11_distinct", "‖C^{1,1}‖ distinct"),
    ("c02_same", "‖C^{0,2}‖ same"), ("c02_distinct", "‖C^{0,2}‖ distinct"),
    ("hg_ratio", "Hessian/grad"), ("c_test", "C(f,f_lin) test"), ("c_train", "C(f,f_lin) train"),
    ("kernel_distance", "‖Θ_n − Θ∞‖/‖Θ∞‖"),
)
_KEYS = ("dataset", "depth", "activation")
_FIG_DIR = "figures"


@dataclasses.dataclass(frozen=True)
class _Guarded:
    """Runs configs one by one; an exception becomes that run's ``failed`` record."""

    runner: Any

    def __call__(self, configs: Any, *, device: str | None) -> list[dict[str, Any]]:
        out = []
        for c in configs:
            start = time.perf_counter()
            try:
                out.extend(self.runner([c], device=device))
            except Exception as err:  # noqa: BLE001 - a failed run is recorded, not raised
                out.append({"kind": "a1", "status": "failed", "error": f"{type(err).__name__}: "
                            f"{err}", "seed": c.get("seed"), "metrics": {}, "logs": [],
                            "wall_time_s": time.perf_counter() - start, "device": device})
        return out


# ----------------------------------------------------------------------------- directories

# What runs of one A.1 directory may differ in: the grid and the labels. The report fits each
# (dataset, depth, activation) over widths and seeds, so a directory may grow by any of these,
# and by the file datasets that data.data_dir brings (paper-a1 without it runs MNIST-5k only);
# everything else (data sizes, model settings, correlations, training, dtype) is the protocol
# and must match, or runs measured differently would be fitted together.
_GRID_FIELDS = {("name",), ("description",), ("datasets",), ("data", "data_dir"),
                ("model", "widths"), ("model", "depths"), ("model", "activations"), ("seeds",)}
_GRID_TEXT = ("datasets, data.data_dir, model.widths, model.depths, model.activations and "
              "seeds")


def _trained(cfg_dict: Mapping[str, Any]) -> dict[int, bool]:
    """{seed: trained?} of a config (the first ``training.seeds`` seeds are trained)."""
    seeds = list(cfg_dict.get("seeds") or [])
    k = int((cfg_dict.get("training") or {}).get("seeds") or 0)
    return {int(s): i < k for i, s in enumerate(seeds)}


def _kind_error(root: pathlib.Path, manifest: Mapping[str, Any], name: str) -> ValueError:
    kind = manifest.get("kind")
    if kind in (None, "a2"):
        return ValueError(f"`{name}` {str(root)!r} is an App. A.2 sweep directory (its "
                          f"sweep.json is from `weakcorr sweep`); use `weakcorr report {root}` "
                          "for its report, and pass a new directory as --out for `weakcorr a1`")
    return ValueError(f"`{name}` {str(root)!r} holds a sweep of kind {kind!r}, not an A.1 sweep "
                      "(`weakcorr a1`); pass a new directory as --out")


def check_report_dir(out_dir: str | os.PathLike[str], *, name: str = "out_dir"
                     ) -> dict[str, Any] | None:
    """Check that ``out_dir`` holds an A.1 sweep (or none yet); returns its manifest (or None).

    Nothing is written. ``out_dir`` must be a directory or creatable
    (:func:`weakcorr._files.check_writable_dir`). A directory whose ``sweep.json`` is of
    another kind (an App. A.2 sweep of ``weakcorr sweep``: ``"kind": "a2"`` or none), or that
    has no ``sweep.json`` and holds run files not from ``weakcorr a1``, is refused.

    Raises:
        ValueError: naming ``out_dir`` (as ``name``, e.g. ``"--out"``), what it holds, and the
            fix.
    """
    store = RunStore(out_dir)
    root = store.root
    check_writable_dir(out_dir, name, subdirs=(store.runs_dir.name, _FIG_DIR))  # '' refused
    manifest = store.read_manifest()
    if manifest is None:
        if (root / MANIFEST).exists():
            raise ValueError(f"`{name}` {str(root)!r}: {MANIFEST} is unreadable; pass a new "
                             "directory as --out (or delete the damaged file)")
        other = [r for r in store.records() if r.get("kind") != "a1"]
        if other:
            raise ValueError(f"`{name}` {str(root)!r} has no {MANIFEST} and holds "
                             f"{len(other)} run files not from `weakcorr a1` (e.g. "
                             f"{other[0].get('run_id')!r}); for an App. A.2 sweep use `weakcorr "
                             f"report {root}`; pass a new directory as --out for `weakcorr a1`")
        return None
    if manifest.get("kind") != "a1" or not isinstance(manifest.get("config"), Mapping):
        raise _kind_error(root, manifest, name)
    return manifest


def check_out_dir(out_dir: str | os.PathLike[str], cfg: _a1.A1Config, *,
                  name: str = "out_dir") -> dict[str, Any] | None:
    """Check that ``cfg``'s sweep may write into ``out_dir``; returns its manifest (or None).

    Nothing is written. Beyond :func:`check_report_dir`, an A.1 sweep already there must have
    the same protocol: only ``datasets``, ``model.widths``, ``model.depths``,
    ``model.activations``, ``seeds`` (and ``name``, ``description``) may change, so that a
    directory grows while its runs stay comparable; and a seed kept from that sweep must keep
    its role (trained or not, the first ``training.seeds`` of ``seeds``), or the report would
    count it twice at every width.

    Raises:
        ValueError: naming ``out_dir``, the differing fields, and the fix.
    """
    old = check_report_dir(out_dir, name=name)
    if old is None:
        return None
    root = pathlib.Path(out_dir)
    new_cfg = _a1.to_dict(cfg)
    shown = protocol_changes(old["config"], new_cfg, _GRID_FIELDS)
    if shown:
        raise ValueError(f"`{name}` {str(root)!r} holds an A.1 sweep of another protocol "
                         f"({shown}); its runs would be fitted together with these. Pass a new "
                         f"directory as --out; into this one, only {_GRID_TEXT} may change")
    was, will = _trained(old["config"]), _trained(new_cfg)
    flipped = sorted(s for s in set(was) & set(will) if was[s] != will[s])
    if flipped:
        s = flipped[0]
        raise ValueError(f"`seeds` / `training.seeds`: seed {s} was "
                         f"{'trained' if was[s] else 'not trained'} in the A.1 sweep already in "
                         f"{str(root)!r} but would {'not ' if was[s] else ''}be now (the first "
                         "training.seeds seeds are trained), so the report would count it twice; "
                         f"keep seeds {list(old['config'].get('seeds') or [])} first and in order "
                         "(append new seeds), or pass a new directory as --out")
    return old


def _no_dataset_error(cfg: _a1.A1Config, skipped: Mapping[str, str]) -> ValueError:
    why = []
    for name, reason in skipped.items():
        if cfg.data.data_dir is None:
            why.append(f"{name}: `data.data_dir` is not set ({name} needs its files: set "
                       f"data.data_dir to a folder holding {name}/, e.g. --set "
                       "data.data_dir=~/data)")
        else:
            why.append(f"{name}: {reason}")
    return ValueError(f"`datasets` {list(cfg.datasets)}: none can be loaded, so nothing would "
                      f"run — {'; '.join(why)}. Fix `data.data_dir`, or add a bundled dataset "
                      "(mnist5k, digits, teacher) to `datasets`")


def run_a1(cfg: _a1.A1Config, out_dir: str | os.PathLike[str], *, workers: int = 1,
           executor: Any = None, device: str | None = None, retry_failed: bool = False,
           runner: Any = None, progress: Callable[[SweepEvent], None] | None = None
           ) -> SweepSummary:
    """Run every unfinished run of ``cfg``; one JSON per run in ``out_dir/runs``.

    Args:
        cfg: the validated config.
        out_dir: the sweep directory (``sweep.json`` + ``runs/<run_id>.json``).
        workers: processes when no ``executor`` is given (1: in this process); more run in a
            :class:`weakcorr.sweep.SupervisedPoolExecutor`, as ``weakcorr sweep`` does: a
            worker that dies (out-of-memory killer, segfault) is replaced, its run retried
            once and then recorded ``failed``, and the other runs go on.
        executor: anything with ``map_unordered(fn, tasks)`` and ``shutdown()``.
        device: ``"cpu"`` or ``"cuda"``.
        retry_failed: redo runs whose status is ``failed``.
        runner: the per-run work (default :func:`weakcorr._a1.run`; a :class:`weakcorr.sweep.Runner`).
        progress: called with a :class:`weakcorr.sweep.SweepEvent` at the start and after each run.

    Returns:
        A :class:`weakcorr.sweep.SweepSummary`.

    Raises:
        ValueError: bad ``workers``; an ``out_dir`` that is a file, holds another kind of
            sweep or an A.1 sweep of another protocol (:func:`check_out_dir`); no dataset of
            ``cfg`` can be loaded. All before anything is written.
    """
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"`workers` must be an integer >= 1, got {workers!r}")
    check_writable_dir(out_dir, "out_dir")  # '' would be the current directory
    old = check_out_dir(out_dir, cfg) or {}
    datasets, skipped = _a1.resolve_datasets(cfg)
    if not datasets:
        raise _no_dataset_error(cfg, skipped)
    configs = {run_id(c): c for c in _a1.expand(cfg, datasets)}
    # Claims, as `weakcorr sweep`: two `weakcorr a1` into one directory split the runs. The
    # protocol is fixed atomically by the first sweep (a racing one of another protocol is
    # refused here, before it writes anything else).
    store = ClaimingRunStore(out_dir)
    claim_protocol(store.root, "a1", _a1.to_dict(cfg), _GRID_FIELDS, label="`out_dir`",
                   allowed=_GRID_TEXT)
    states = {rid: store.state(rid) for rid in configs}
    redo = {"missing", "corrupt"} | ({"failed"} if retry_failed else set())
    todo = [rid for rid in configs if states[rid] in redo]
    from . import __version__

    # Every sweep into this directory (one protocol: check_out_dir), in order, merged under
    # sweep.json's lock with those of sweeps running now.
    def merged(now: dict[str, Any] | None) -> dict[str, Any]:
        now = now or {}
        run_ids = list(dict.fromkeys([*(old.get("run_ids") or []),
                                      *(now.get("run_ids") or []), *configs]))
        ran = list(dict.fromkeys([*(old.get("datasets") or []), *(now.get("datasets") or []),
                                  *datasets]))
        return {"kind": "a1", "config": _a1.to_dict(cfg), "datasets": ran,
                "skipped_datasets": {k: v for k, v in skipped.items() if k not in ran},
                "run_ids": run_ids, "weakcorr_version": __version__}

    store.update_manifest(merged)
    store.remove_stale_temp()
    runner = _Guarded(runner or PerRun(_a1.run))
    tasks = [RunTask(store, (rid,), (configs[rid],), runner, device) for rid in todo]
    own = executor is None
    executor = executor or (InProcessExecutor() if workers == 1
                            else SupervisedPoolExecutor(workers))
    start = time.perf_counter()
    skipped_runs = len(configs) - len(todo)
    counts = execute_all(tasks, executor, total=len(configs), skipped=skipped_runs, start=start,
                         progress=progress, shutdown=own)
    return SweepSummary(str(out_dir), len(configs), skipped_runs, len(todo), counts,
                        time.perf_counter() - start)


# ----------------------------------------------------------------------------- tables


def _row(rec: Mapping[str, Any]) -> dict[str, Any]:
    cfg = rec.get("config") or {}
    model, data_ = cfg.get("model") or {}, cfg.get("data") or {}
    row: dict[str, Any] = {
        "run_id": rec.get("run_id"), "status": rec.get("status"), "dataset": data_.get("name"),
        # a family of your own (model.factory) is one group per dataset: depth 0, its spec
        "depth": model.get("depth", 0 if model.get("factory") else None),
        "activation": model.get("activation", model.get("factory")),
        "width": model.get("width"), "seed": rec.get("seed", cfg.get("seed")),
        "trained": bool(cfg.get("training")), "n_params": rec.get("n_params"),
        "wall_time_s": rec.get("wall_time_s"), "error": rec.get("error"),
    }
    for k, v in (rec.get("timings") or {}).items():
        row[k] = v
    for k, v in (rec.get("metrics") or {}).items():
        row[k] = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
    return row


def _records(root: str | os.PathLike[str], *, unlisted: bool = False) -> list[dict[str, Any]]:
    """The A.1 records of ``root``, all of them, as the A.2 report takes every run present;
    ``unlisted=True``: only those not in its ``sweep.json`` (a directory of a version before
    sweep.json kept every sweep's run ids lists only its latest sweep's)."""
    return _scan(root, unlisted=unlisted)[0]


def _scan(root: str | os.PathLike[str], *, unlisted: bool = False
          ) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """:func:`_records` and the corrupt run files (name -> why) that are not of another kind."""
    store = RunStore(root)
    if not store.run_ids():
        raise FileNotFoundError(f"no run files in {os.fspath(root)!r} (expected "
                                f"{os.fspath(store.runs_dir)}/<run_id>.json from `weakcorr a1`)")
    good, bad = store.scan()
    corrupt = {c.name: c.reason for c in bad if c.kind in (None, "a1")}
    recs = [r for r in good if r.get("kind") == "a1"]
    if not unlisted:
        return recs, corrupt
    listed = set((store.read_manifest() or {}).get("run_ids") or [])
    return [r for r in recs if listed and r.get("run_id") not in listed], corrupt


def load_table(root: str | os.PathLike[str]) -> pd.DataFrame:
    """One row per A.1 run: ids, status, ``n_params``, timings and every metric.

    Raises:
        FileNotFoundError: no run files in ``root``.
    """
    recs, corrupt = _scan(root)
    df = pd.DataFrame([_row(r) for r in recs])
    if df.empty:
        df = pd.DataFrame(columns=["run_id", "status", *_KEYS, "width", "seed"])
    else:
        df = df.sort_values([*_KEYS, "width", "seed"], ignore_index=True)
    df.attrs["corrupt"] = corrupt  # file name -> why (results.RunStore.scan), listed in reports
    return df


def load_curves(root: str | os.PathLike[str]) -> pd.DataFrame:
    """The test deviation RMS(f − f_lin) = √MSE_test against the step s (updates done)."""
    rows = []
    for rec in _records(root):
        r = _row(rec)
        for e in rec.get("logs") or []:
            if e.get("mse_test") is not None:
                rows.append({**{k: r[k] for k in (*_KEYS, "width", "seed")},
                             "step": int(e["step"]) + 1, "deviation": math.sqrt(e["mse_test"])})
    return pd.DataFrame(rows, columns=[*_KEYS, "width", "seed", "step", "deviation"])


# ----------------------------------------------------------------------------- fits


def fit_exponents(table: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Width exponents of every quantity per (dataset, depth, activation).

    ``log y = slope · log n + b`` by least squares; the 95 % CI is the seed bootstrap of
    :func:`weakcorr.analysis.fit_power_law` (t interval) with 2+ seeds, else the regression's
    own t interval (:func:`weakcorr.fits.residual_interval`, ``ci_kind = "residual"``). Values
    that are 0 (e.g. a ReLU quantity that vanishes) are excluded.

    Returns:
        One row per (dataset, depth, activation, quantity): ``slope, ci_low, ci_high, ci_kind,
        n_widths, n_seeds, all_zero`` (``all_zero``: every finite value is exactly 0, shown
        as "≡ 0" in the report).
    """
    rows = []
    ok = table[table["status"].isin(["ok", "diverged"])]
    for key, grp in ok.groupby(list(_KEYS), sort=True):
        for col, _ in QUANTITIES:
            if col not in grp.columns:
                continue
            g = grp if not col.startswith("c_t") else grp[grp["status"] == "ok"]
            g = g.assign(status="ok", y=pd.to_numeric(g[col], errors="coerce"))
            finite = g[np.isfinite(g["y"])]
            g = finite[finite["y"] > 0]
            row = dict(zip(_KEYS, key), quantity=col, slope=math.nan, ci_low=math.nan,
                       ci_high=math.nan, ci_kind="", n_widths=int(g["width"].nunique()),
                       n_seeds=int(g["seed"].nunique()),
                       all_zero=bool(len(finite) and (finite["y"] == 0).all()))
            if row["n_widths"] >= 2:
                fit = fit_power_law(g, y="y", by=None, n_boot=n_boot, seed=seed).iloc[0]
                row.update(slope=float(fit["slope"]), ci_low=float(fit["ci_low"]),
                           ci_high=float(fit["ci_high"]), ci_kind="seeds")
                if not math.isfinite(row["ci_low"]):
                    s, lo, hi = residual_interval(
                        np.log(g["width"].astype(float).to_numpy()), np.log(g["y"].to_numpy()))
                    row.update(slope=s, ci_low=lo, ci_high=hi, ci_kind="residual")
            rows.append(row)
    # With no ok or diverged run (all failed): no rows, but the columns the report reads.
    return pd.DataFrame(rows, columns=[*_KEYS, "quantity", "slope", "ci_low", "ci_high",
                                       "ci_kind", "n_widths", "n_seeds", "all_zero"])


def _entry_orders(root: pathlib.Path, n_boot: int, seed: int) -> list[dict[str, Any]]:
    """Sec. 2: quantile exponents of the |diagonal entries| (inputs × outputs × seeds)."""
    pooled: dict[tuple[Any, ...], dict[int, list[float]]] = {}
    for rec in _records(root):
        if rec.get("status") not in ("ok", "diverged"):
            continue
        r = _row(rec)
        for order in ("c2", "c3"):
            vals = (rec.get("samples") or {}).get(f"{order}_abs")
            if vals:
                key = (r["dataset"], r["depth"], r["activation"], order)
                pooled.setdefault(key, {}).setdefault(int(r["width"]), []).extend(vals)
    out = []
    for key, by_w in sorted(pooled.items()):
        row = dict(zip((*_KEYS, "order"), key))
        exp = _diagnose.fit_exponent(key[3], by_w, n_boot=n_boot, seed=seed)
        row.update(status=exp.status, text=exp.text(), central=exp.central, upper=exp.upper,
                   shape=exp.shape)
        out.append(row)
    return out


def _exponent(col: str, r: Mapping[str, Any] | None) -> _diagnose.Exponent:
    """A fit row of :func:`fit_exponents` as an exponent with a CI, or why there is none."""
    if r is None:
        return _diagnose.Exponent(col, "missing")
    if r["all_zero"]:
        return _diagnose.Exponent(col, "zero", note="every value is exactly 0")
    n_w, n_s = int(r["n_widths"]), int(r["n_seeds"])
    if n_w < 2 or not math.isfinite(r["slope"]):
        return _diagnose.Exponent(col, "insufficient",
                                  note=f"positive values at {n_w} width{'s' * (n_w != 1)}; "
                                       "a slope needs >= 2 widths")
    if not (math.isfinite(r["ci_low"]) and math.isfinite(r["ci_high"])):
        return _diagnose.Exponent(col, "no_ci",
                                  note=f"slope {float(r['slope']):+.2f} from {n_s} seed"
                                       f"{'s' * (n_s != 1)} at {n_w} widths; a CI needs >= 2 "
                                       "seeds or >= 3 widths")
    t = (float(r["slope"]), float(r["ci_low"]), float(r["ci_high"]))
    return _diagnose.Exponent(col, "fit", t, t, r["ci_kind"])


def _verdicts(fits: pd.DataFrame, curves: pd.DataFrame) -> list[str]:
    """Per (dataset, depth, activation): Theorems 3.1/3.2 with m(n) from C(f, f_lin) on test.

    A quantity without a CI (one seed at two widths, one width, ...) is "not assessed", never a
    pass or a failure (:func:`weakcorr._diagnose.combine_checks`).
    """
    lines = []
    for key, grp in fits.groupby(list(_KEYS), sort=True):
        q = {r["quantity"]: r for _, r in grp.iterrows()}
        name = f"{key[0]}, depth {key[1]}, {key[2]}"
        err = _exponent("c_test", q.get("c_test"))
        if err.status != "fit":
            if err.status == "zero":
                why = "C(f, f_lin) ≡ 0 (f = f_lin exactly), m(n) not measurable"
            elif err.status == "missing" or int(q["c_test"]["n_widths"]) == 0:
                why = "no trained run with a positive C(f, f_lin) to estimate m(n) from"
            else:
                why = f"m(n) not estimated from C(f, f_lin) ({err.note})"
            lines.append(f"{name}: {why}; Theorems 3.1/3.2 not assessed.")
            continue
        mu = (-err.upper[0], -err.upper[2], -err.upper[1])
        if mu[2] <= 0:
            lines.append(f"{name}: C(f, f_lin) ~ n^{err.upper[0]:+.2f} does not decrease with "
                         "width; m(n) not measurable, Theorems 3.1/3.2 not assessed.")
            continue
        parts = [f"C(f, f_lin) ~ n^{err.upper[0]:+.2f} [{err.upper[1]:+.2f}, "
                 f"{err.upper[2]:+.2f}] → m(n) ~ n^{mu[0]:.2f}"]
        dec = decide(err.upper[0], err.upper[1:], bound=0.0, scale=0.0, strict=True)
        if dec.word == INCONCLUSIVE:
            parts[0] += f" (whether it decreases with width is {dec.label()})"
        for claim, ks in (("Thm 3.1 (Eq. 14)", (1.0, 1.0, 0.5)), ("Thm 3.2 (Eq. 17)",
                                                                   (1.0, 1.5, 0.5))):
            checks = [_diagnose.bound_verdict(_exponent(c, q.get(c)), k, mu)
                      for c, k in zip(("c2_exact", "c3_exact", "c11_same"), ks)]
            verdict = _diagnose.combine_checks([ok for ok, _ in checks],
                                               negative="NOT consistent")
            parts.append(f"{claim} {verdict} ({'; '.join(t for _, t in checks)})")
        sub = curves[(curves["dataset"] == key[0]) & (curves["depth"] == key[1])
                     & (curves["activation"] == key[2])]
        if len(sub):
            w = sub["width"].max()
            slopes = [_diagnose.late_slope(list(zip(g["step"], g["deviation"])))
                      for _, g in sub[sub["width"] == w].groupby("seed")]
            slopes = [v for v in slopes if math.isfinite(v)]
            if slopes:
                s, lo, hi = mean_interval(slopes)
                if math.isfinite(lo):
                    dec = decide(s, (lo, hi), bound=0.0, scale=_diagnose.COR41_SCALE)
                    parts.append(f"Cor. 4.1 {dec.label()}: late-training slope of the deviation "
                                 f"at n = {w}: {s:+.2f} [{lo:+.2f}, {hi:+.2f}] over "
                                 f"{len(slopes)} seeds")
                else:
                    parts.append(f"Cor. 4.1 not assessed: late-training slope of the deviation "
                                 f"at n = {w}: {s:+.2f} from one seed (no CI)")
            else:
                parts.append("Cor. 4.1: too few logged steps in the later half to assess")
        lines.append(f"{name}: " + "; ".join(parts) + ".")
    return lines


# ----------------------------------------------------------------------------- report


def _f(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:+.{digits}f}" if isinstance(v, float) else str(v)


def _slope_cell(r: Mapping[str, Any] | None) -> str:
    if r is not None and r.get("all_zero"):
        return "≡ 0"
    if r is None or not math.isfinite(r["slope"]):
        return "–"
    ci = (f" [{_f(r['ci_low'])}, {_f(r['ci_high'])}]" if math.isfinite(r["ci_low"]) else "")
    return f"{_f(r['slope'])}{ci}"


def _panel_slopes(fits: pd.DataFrame, order: str) -> dict[tuple[int, Any], str]:
    """Per (depth, activation): "exact n^a, est. n^b" for the figure's panel titles."""
    out: dict[tuple[int, Any], list[str]] = {}
    for col, name in ((f"{order}_exact", "exact"), (f"{order}_paper", "est.")):
        for _, r in fits[fits["quantity"] == col].iterrows():
            out.setdefault((int(r["depth"]), r["activation"]), []).append(
                f"{name} {_slope_cell(r)}")
    return {k: ", ".join(v) for k, v in out.items()}


def write_report(root: str | os.PathLike[str], *, n_boot: int = 2000,
                 seed: int = 0) -> dict[str, Any]:
    """Write ``report.md``, ``summary.json`` and ``figures/`` (PNG + PDF) into ``root``.

    Returns:
        The summary dict (also in ``summary.json``), with ``"report"`` the markdown path.

    Raises:
        FileNotFoundError: no run files in ``root``.
        ValueError: ``root`` holds another kind of sweep (:func:`check_report_dir`); checked
            before anything is written.
    """
    root = pathlib.Path(root)
    check_report_dir(root)
    table = load_table(root)
    curves = load_curves(root)
    manifest = RunStore(root).read_manifest() or {}
    n_unlisted = len(_records(root, unlisted=True))
    fits = fit_exponents(table, n_boot=n_boot, seed=seed)
    entries = _entry_orders(root, n_boot=max(200, n_boot // 10), seed=seed)
    verdicts = _verdicts(fits, curves) if len(fits) else []
    expected = len(set(manifest.get("run_ids") or []) | set(table["run_id"]))
    counts = {s: int((table["status"] == s).sum()) for s in ("ok", "diverged", "failed")}
    cfg = manifest.get("config") or {}
    lines = [f"# A.1 report: {cfg.get('name', root.name)}", ""]
    if cfg.get("description"):
        lines += [str(cfg["description"]).strip(), ""]
    wall = pd.to_numeric(table.get("wall_time_s"), errors="coerce")
    lines += ["## Runs", "",
              f"{len(table)} of {expected} runs present: {counts['ok']} ok, "
              f"{counts['diverged']} diverged, {counts['failed']} failed; total compute "
              f"{float(wall.sum()) / 60:.1f} min (sum of per-run wall times).", ""]
    if n_unlisted:
        lines += [f"- {n_unlisted} A.1 runs are not listed in {MANIFEST} (from an earlier "
                  "sweep into this directory by a version that kept only the latest sweep's run "
                  "ids); they are included"]
    for name, why in (manifest.get("skipped_datasets") or {}).items():
        lines += [f"- dataset `{name}` skipped: {why}"]
    corrupt = table.attrs.get("corrupt") or {}
    if corrupt:
        lines += [f"- {len(corrupt)} corrupt run file(s) skipped (`weakcorr a1` redoes them): "
                  + "; ".join(f"{n}: {why}" for n, why in sorted(corrupt.items())[:20])]
    if len(table) and "n_params" in table.columns:
        big = table[table["width"] == table["width"].max()]
        cols = [c for c in ("exact_s", "paper_s", "norms_s", "hessian_s", "training_s",
                            "wall_time_s") if c in big.columns]
        per = {c: float(pd.to_numeric(big[c], errors="coerce").mean()) for c in cols}
        lines += ["", f"Mean seconds per run at width {int(big['width'].max())}: "
                  + ", ".join(f"{c.removesuffix('_s')} {v:.1f}" for c, v in per.items()
                              if math.isfinite(v)), ""]
    figures: list[str] = []
    for ds in sorted(table["dataset"].dropna().unique()):
        sub_fits = fits[fits["dataset"] == ds]
        lines += [f"## {ds}: width exponents (slope of log quantity vs log n, 95 % CI)", "",
                  "| depth | activation | " + " | ".join(lab for _, lab in QUANTITIES) + " |",
                  "|---|---|" + "---|" * len(QUANTITIES)]
        for (depth, act), grp in sub_fits.groupby(["depth", "activation"], sort=True):
            q = {r["quantity"]: r for _, r in grp.iterrows()}
            lines.append(f"| {depth} | {act} | "
                         + " | ".join(_slope_cell(q.get(c)) for c, _ in QUANTITIES) + " |")
        lines += ["", "CIs: seed bootstrap (t) with 2+ seeds, else the regression's residual "
                  "t interval (one seed; it ignores seed-to-seed variation).", ""]
        for order, fig_name in (("c2", "fig1"), ("c3", "fig3")):
            slopes = _panel_slopes(sub_fits, order)
            base = root / _FIG_DIR / f"{fig_name}_{order}_{ds}"
            _a1_plots.plot_correlations_vs_width(table, order=order, dataset=ds, slopes=slopes,
                                                 save_to=base)
            figures.append(f"{_FIG_DIR}/{base.name}.png")
        if "c_test" in table.columns:
            base = root / _FIG_DIR / f"fig2_linearization_{ds}"
            _a1_plots.plot_linearization_vs_width(table, dataset=ds, save_to=base)
            figures.append(f"{_FIG_DIR}/{base.name}.png")
        sub_curves = curves[curves["dataset"] == ds]
        if len(sub_curves):
            base = root / _FIG_DIR / f"deviation_vs_step_{ds}"
            _a1_plots.plot_deviation_curves(sub_curves, save_to=base,
                                            title=f"Deviation from f_lin during training — {ds}")
            figures.append(f"{_FIG_DIR}/{base.name}.png")
    lines += ["## Random-tensor asymptotics of the diagonal entries (Sec. 2)", "",
              "Quantile exponents (q = 0.05, 0.5, 0.95) of |C^{0,d}(x; x..x)_{i; i..i}| pooled "
              "over inputs, outputs and seeds at each width (`asymptotics.fit_order`); "
              "'exact' when the q05 and q95 intervals overlap. The bootstrap resamples entries, "
              "which share an initialisation within a seed, so these CIs are optimistic.", "",
              "| dataset | depth | activation | order | q95 exponent (median) | shape |",
              "|---|---|---|---|---|---|"]
    for e in entries:
        lines.append(f"| {e['dataset']} | {e['depth']} | {e['activation']} | "
                     f"C^{{0,{e['order'][1]}}} | {e['text']} | {e['shape'] or e['status']} |")
    lines += ["", "## Verdicts (at the measured widths)", "",
              "m(n) is read off the Eq. 24 difference after training (C(f, f_lin) ~ 1/m); a "
              "bound holds 'consistently' when the exponent's CI lies within it, or straddles "
              "it while no wider than |bound| (the distance to a width-independent quantity); "
              "a wider straddling CI is 'inconclusive (CI too wide: need more seeds/widths)' "
              "and never counts as a pass. Cor. 4.1: the mean over seeds of the late-half "
              "slope of log deviation on log step, t interval, flat (0) against growing like "
              "s (1). A "
              "quantity without a CI (one seed at two widths, one width, not measured) is 'not "
              "assessed' and never counts as a pass. Finite widths can only fail to contradict "
              "an asymptotic statement.", ""]
    lines += [f"- {v}" for v in verdicts] or ["- no fits"]
    lines += ["", "## Figures", ""] + [f"![{f}]({f})" for f in figures] + [""]
    problems = table[table["status"] != "ok"]
    lines += ["## Failed or diverged runs", ""]
    lines += [f"- {r['run_id']}: {r['status']} {r['dataset']} depth {r['depth']} "
              f"{r['activation']} n={r['width']} seed {r['seed']}: {r.get('error') or ''}"
              for _, r in problems.iterrows()] or ["None."]
    md = root / "report.md"
    atomic_write_text(md, "\n".join(lines) + "\n")
    summary = json_safe({
        "kind": "a1", "config": cfg, "runs": {"expected": expected, "present": len(table),
                                              **counts},
        "fits": fits.to_dict(orient="records"), "entry_quantile_exponents": entries,
        "verdicts": verdicts, "figures": figures, "report": str(md),
        "skipped_datasets": manifest.get("skipped_datasets") or {},
    })
    atomic_write_json(root / "summary.json", summary)
    return summary
