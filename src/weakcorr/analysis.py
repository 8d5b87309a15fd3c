"""Sweep directories → tidy tables → power-law fits (paper Eq. 31) with bootstrap CIs over seeds.

:func:`load_table` reads every run JSON of a sweep directory into one row per run (diverged and
failed runs kept, with their status). :func:`fit_power_law` fits, per group (α by default),

.. math:: \\log y = s \\, \\log x + b

by least squares on runs with status ``ok`` and finite positive ``y``, with a percentile
bootstrap CI of the slope that resamples whole seeds (a seed's runs across widths stay together).
:func:`compare_with_paper` lines the slopes up with the paper's Fig. 4.

>>> import pandas as pd
>>> df = pd.DataFrame({"width": [10, 100, 10, 100], "mse_test": [1.0, 0.01, 2.0, 0.02],
...                    "alpha": 0.0, "seed": [0, 0, 1, 1], "status": "ok"})
>>> round(float(fit_power_law(df)["slope"].iloc[0]), 6)
-2.0
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from .results import RunStore

__all__ = [
    "METRICS", "PAPER_SLOPES", "compare_with_paper", "fit_power_law", "load_logs", "load_table",
    "table_from_records",
]

#: Final metrics of a run (``RunResult.metrics``), in table order.
METRICS = (
    "mse_test", "mse_train", "c_test", "c_train", "loss_f_test", "loss_lin_test", "loss_f_train",
    "loss_lin_train", "acc_f_test", "acc_lin_test", "acc_f_train", "acc_lin_train",
    "param_distance", "param_distance_lin",
)

#: Slopes s(α) of log MSE_test vs log n reported in the paper (Fig. 4, App. A.2).
PAPER_SLOPES: dict[float, float] = {0.0: -1.14, -0.25: -1.14, -0.5: -1.3, -0.75: -1.73, -1.0: -2.72}

_ID_COLUMNS = ("run_id", "status", "width", "alpha", "lr", "seed", "depth", "activation",
               "parameterization", "steps", "batch_size", "dataset", "n_train", "n_test", "dtype")
_TAIL_COLUMNS = ("wall_time_s", "diverged_step", "error")


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, Mapping):
            return None
        d = d.get(k)
    return d


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def table_from_records(records: list[Mapping[str, Any]]) -> pd.DataFrame:
    """A tidy table, one row per run record (see :func:`load_table` for the columns)."""
    rows = []
    extra: list[str] = []
    for rec in records:
        cfg = rec.get("config") or {}
        metrics = rec.get("metrics") or {}
        row: dict[str, Any] = {
            "run_id": rec.get("run_id"),
            "status": rec.get("status"),
            "width": _get(cfg, "model", "width"),
            "alpha": _float(_get(cfg, "training", "alpha")),
            "lr": _float(_get(cfg, "training", "lr")),
            "seed": rec.get("seed", cfg.get("seed")),
            "depth": _get(cfg, "model", "depth"),
            "activation": _get(cfg, "model", "activation"),
            "parameterization": _get(cfg, "model", "parameterization"),
            "steps": _get(cfg, "training", "steps"),
            "batch_size": _get(cfg, "training", "batch_size"),
            "dataset": _get(cfg, "data", "name"),
            "n_train": _get(cfg, "data", "n_train"),
            "n_test": _get(cfg, "data", "n_test"),
            "dtype": _get(cfg, "training", "dtype") or rec.get("dtype"),
        }
        for m in METRICS:
            row[m] = _float(metrics.get(m))
        for m, v in metrics.items():
            if m not in row:
                row[m] = _float(v)
                if m not in extra:
                    extra.append(m)
        row["wall_time_s"] = _float(rec.get("wall_time_s"))
        row["diverged_step"] = rec.get("diverged_step")
        row["error"] = rec.get("error")
        rows.append(row)
    columns = [*_ID_COLUMNS, *METRICS, *extra, *_TAIL_COLUMNS]
    df = pd.DataFrame(rows, columns=columns)
    for col in ("width", "seed", "depth", "steps", "batch_size", "n_train", "n_test"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64")
    df["diverged_step"] = pd.to_numeric(df["diverged_step"], errors="coerce").astype("Int64")
    return df.sort_values(["alpha", "width", "seed", "run_id"], ascending=[False, True, True, True],
                          ignore_index=True)


def load_table(sweep_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """One row per run of a sweep directory, failed and diverged runs included.

    Args:
        sweep_dir: a directory written by :func:`weakcorr.sweep.run_sweep`.

    Returns:
        A DataFrame with columns ``run_id, status, width, alpha, lr, seed, depth, activation,
        parameterization, steps, batch_size, dataset, n_train, n_test, dtype``, every metric of
        :data:`METRICS` (NaN where absent), other metrics found, then ``wall_time_s,
        diverged_step, error``; sorted by α (descending), width, seed.

    Raises:
        FileNotFoundError: if ``sweep_dir`` holds no run files.
    """
    store = RunStore(sweep_dir)
    if not store.run_ids():
        raise FileNotFoundError(f"no run files in {os.fspath(sweep_dir)!r} (expected "
                                f"{os.fspath(store.runs_dir)}/<run_id>.json from `weakcorr sweep`)")
    return table_from_records(list(store.records()))


def load_logs(sweep_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """Step-wise logs of all runs, long format: one row per (run, logged step).

    Returns:
        Columns ``run_id, status, width, alpha, seed, step`` and the logged quantities
        (``loss_f, loss_lin, discrepancy, param_distance``, ... as logged).
    """
    rows = []
    for rec in RunStore(sweep_dir).records():
        cfg = rec.get("config") or {}
        base = {"run_id": rec.get("run_id"), "status": rec.get("status"),
                "width": _get(cfg, "model", "width"), "alpha": _float(_get(cfg, "training", "alpha")),
                "seed": rec.get("seed", cfg.get("seed"))}
        for entry in rec.get("logs") or []:
            rows.append({**base, **{k: (_float(v) if k != "step" else v)
                                    for k, v in entry.items()}})
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=["run_id", "status", "width", "alpha", "seed", "step",
                                     "loss_f", "loss_lin", "discrepancy"])
    return df


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Slope, intercept, R² of y on x."""
    xm, ym = x.mean(), y.mean()
    sxx = float(((x - xm) ** 2).sum())
    if sxx <= 0:
        return math.nan, math.nan, math.nan
    slope = float(((x - xm) * (y - ym)).sum()) / sxx
    intercept = float(ym - slope * xm)
    ss_tot = float(((y - ym) ** 2).sum())
    ss_res = float(((y - intercept - slope * x) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    return slope, intercept, r2


def _bootstrap_slopes(x: np.ndarray, y: np.ndarray, seeds: np.ndarray, n_boot: int,
                      rng: np.random.Generator) -> np.ndarray:
    """Slopes of ``n_boot`` fits on seed-resampled data (whole seeds drawn with replacement)."""
    uniq, inverse = np.unique(seeds, return_inverse=True)
    # Per-seed sufficient statistics of least squares: n, Σx, Σy, Σxx, Σxy.
    stats = np.zeros((len(uniq), 5))
    for col, vals in enumerate((np.ones_like(x), x, y, x * x, x * y)):
        np.add.at(stats[:, col], inverse, vals)
    counts = rng.multinomial(len(uniq), np.full(len(uniq), 1.0 / len(uniq)), size=n_boot)
    n, sx, sy, sxx, sxy = (counts @ stats).T
    denom = n * sxx - sx * sx
    with np.errstate(invalid="ignore", divide="ignore"):
        slopes = (n * sxy - sx * sy) / denom
    slopes[~(np.abs(denom) > 1e-12 * np.maximum(1.0, n * sxx))] = np.nan
    return slopes


def fit_power_law(
    table: pd.DataFrame,
    x: str = "width",
    y: str = "mse_test",
    by: str | None = "alpha",
    *,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
    method: str = "t",
) -> pd.DataFrame:
    """Fit ``log y = slope · log x + intercept`` per group (paper Eq. 31).

    Only rows with status ``ok`` and finite positive ``x`` and ``y`` enter the fit. The CI
    comes from a bootstrap over seeds: each replicate draws the group's S seeds with
    replacement and keeps all runs of a drawn seed (across widths) together. With
    ``method="t"`` (default) the CI is ``slope ± t_{S-1} · sqrt(S / (S-1)) · sd(bootstrap
    slopes)``, which keeps near-nominal coverage with few seeds (a plain percentile interval
    covers ~81 % at S = 5, ~89 % at S = 10 for a nominal 95 %); ``method="percentile"`` gives
    the plain percentile interval. Both agree for many seeds.

    Args:
        table: a tidy table (:func:`load_table`) with columns ``x``, ``y``, ``seed``, ``status``
            and ``by``.
        x: the abscissa column (natural log is taken).
        y: the ordinate column.
        by: the grouping column (None: one group).
        n_boot: bootstrap replicates.
        ci: the confidence level, in (0, 1).
        seed: seeds the bootstrap's random generator.
        method: ``"t"`` or ``"percentile"`` (see above).

    Returns:
        One row per group: ``by`` (if given), ``slope``, ``intercept`` (natural log units),
        ``ci_low``, ``ci_high`` (NaN with fewer than two seeds), ``r2``, ``n_runs``,
        ``n_seeds``, ``n_widths``; groups with no usable run have NaN fits and ``n_runs`` 0.

    Raises:
        ValueError: for a missing column or ``ci``/``n_boot`` out of range.
    """
    need = [c for c in (x, y, "seed", "status", *([by] if by else [])) if c not in table.columns]
    if need:
        raise ValueError(f"`table` lacks column(s) {', '.join(map(repr, need))}; "
                         f"columns: {', '.join(map(str, table.columns))}")
    if not 0 < ci < 1:
        raise ValueError(f"`ci` must be in (0, 1), got {ci}")
    if n_boot < 2:
        raise ValueError(f"`n_boot` must be >= 2, got {n_boot}")
    if method not in ("t", "percentile"):
        raise ValueError(f"`method` must be 't' or 'percentile', got {method!r}")
    rng = np.random.default_rng(seed)
    groups = table.groupby(by, sort=False, dropna=False) if by else [(None, table)]
    rows = []
    for key, grp in groups:
        xs = pd.to_numeric(grp[x], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        ys = pd.to_numeric(grp[y], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        ok = ((grp["status"] == "ok").to_numpy() & np.isfinite(xs) & np.isfinite(ys)
              & (xs > 0) & (ys > 0))
        lx, ly = np.log(xs[ok]), np.log(ys[ok])
        seeds = grp["seed"].to_numpy()[ok]
        row: dict[str, Any] = {by: key} if by else {}
        slope = intercept = r2 = lo = hi = math.nan
        if ok.sum() >= 2:
            slope, intercept, r2 = _ols(lx, ly)
        n_seeds = len(np.unique(seeds)) if ok.any() else 0
        if n_seeds >= 2 and math.isfinite(slope):
            boots = _bootstrap_slopes(lx, ly, seeds, n_boot, rng)
            boots = boots[np.isfinite(boots)]
            if boots.size >= 2 and method == "percentile":
                lo, hi = np.quantile(boots, [(1 - ci) / 2, (1 + ci) / 2])
            elif boots.size >= 2:
                half = (stats.t.ppf((1 + ci) / 2, n_seeds - 1)
                        * math.sqrt(n_seeds / (n_seeds - 1)) * float(np.std(boots, ddof=1)))
                lo, hi = slope - half, slope + half
        row.update(slope=slope, intercept=intercept, ci_low=float(lo), ci_high=float(hi), r2=r2,
                   n_runs=int(ok.sum()), n_seeds=int(n_seeds),
                   n_widths=int(len(np.unique(xs[ok]))))
        rows.append(row)
    out = pd.DataFrame(rows)
    return out.sort_values(by, ascending=False, ignore_index=True) if by else out


def compare_with_paper(fits: pd.DataFrame, by: str = "alpha") -> pd.DataFrame:
    """The fitted slopes next to the paper's (Fig. 4): one row per α of either.

    Args:
        fits: the output of :func:`fit_power_law` grouped by ``by`` (α).

    Returns:
        Columns ``alpha, slope, ci_low, ci_high, paper_slope, difference`` (slope − paper),
        ``paper_in_ci`` (True/False, None when either side is missing), ``n_runs``.
    """
    ours = {round(float(a), 10): r for a, r in fits.set_index(by).iterrows()} if len(fits) else {}
    alphas = sorted(set(ours) | set(PAPER_SLOPES), reverse=True)
    rows = []
    for a in alphas:
        r = ours.get(a)
        slope = float(r["slope"]) if r is not None else math.nan
        lo = float(r["ci_low"]) if r is not None else math.nan
        hi = float(r["ci_high"]) if r is not None else math.nan
        paper = PAPER_SLOPES.get(a, math.nan)
        inside = (bool(lo <= paper <= hi)
                  if all(math.isfinite(v) for v in (lo, hi, paper)) else None)
        rows.append({"alpha": a, "slope": slope, "ci_low": lo, "ci_high": hi,
                     "paper_slope": paper, "difference": slope - paper, "paper_in_ci": inside,
                     "n_runs": int(r["n_runs"]) if r is not None else 0})
    return pd.DataFrame(rows)
