"""Sweep directories → tidy tables → power-law fits (paper Eq. 31) with bootstrap CIs over seeds.

:func:`load_table` reads every run JSON of a sweep directory into one row per run (diverged and
failed runs kept, with their status). :func:`fit_power_law` fits, per group (α by default),

.. math:: \\log y = s \\, \\log x + b

by least squares on runs with status ``ok`` and finite positive ``y``, with a bootstrap CI of
the slope that resamples whole seeds (a seed's runs across widths stay together): the one fit
of :func:`weakcorr.fits.fit_loglog` that every report uses.
:func:`compare_with_paper` lines the slopes up with the paper's Fig. 4.

>>> import pandas as pd
>>> df = pd.DataFrame({"width": [10, 100, 10, 100], "mse_test": [1.0, 0.01, 2.0, 0.02],
...                    "alpha": 0.0, "seed": [0, 0, 1, 1], "status": "ok"})
>>> round(float(fit_power_law(df)["slope"].iloc[0]), 6)
-2.0
"""

from __future__ import annotations

import hashlib
import math
import numbers
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from . import fits as _fits
from .results import RunStore

__all__ = [
    "A1_MESSAGE", "METRICS", "PAPER_PROTOCOL", "PAPER_SLOPES", "PAPER_WIDTHS", "PROTOCOL_COLUMNS",
    "check_single_protocol", "compare_with_paper", "config_protocol", "fit_power_law",
    "group_keys", "load_logs", "load_table", "paper_protocol_differences", "protocol_differences",
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

#: The paper's App. A.2 protocol (preset ``paper-a2``), as table columns: a report compares its
#: slopes with :data:`PAPER_SLOPES` only when its runs have every one of these values and the
#: paper's widths (:data:`PAPER_WIDTHS`). Data is compared by dataset *and* size: the bundled
#: MNIST-5k is MNIST's images, but 4,000/1,000 examples instead of 60,000/10,000, and the
#: error's level and slope depend on the training set, so ``mnist5k`` differs in data.
PAPER_PROTOCOL: dict[str, Any] = {
    "depth": 2, "activation": "gelu", "parameterization": "standard", "dataset": "mnist",
    "n_train": 60000, "n_test": 10000, "lr0": 0.1, "lr_factor": "1", "steps": 250,
    "batch_size": 128, "full_batch": False, "loss": "mse", "output_scale": 1.0, "bias": True,
}
#: The paper's 14 widths (four per doubling, 2048–19484).
PAPER_WIDTHS = (2048, 2435, 2896, 3444, 4096, 4871, 5793, 6889, 8192, 9741, 11585, 13777, 16384,
                19484)
# Which part of the protocol each column is, for the "differs in ..." line.
_PROTOCOL_PART = {"depth": "model", "activation": "activation",
                  "parameterization": "parameterization", "output_scale": "model",
                  "bias": "model", "dataset": "data", "n_train": "data", "n_test": "data",
                  "lr0": "lr0", "lr_factor": "lr0", "steps": "steps", "batch_size": "batch",
                  "full_batch": "batch", "loss": "loss"}

_ID_COLUMNS = ("run_id", "status", "width", "alpha", "lr", "seed", "depth", "activation",
               "parameterization", "steps", "batch_size", "dataset", "n_train", "n_test", "dtype")
#: Columns of :func:`load_table` after the id columns, with their place in a run's config.
_MORE_PROTOCOL = {
    "lr0": ("training", "lr0"), "lr_factor": ("training", "lr_factor"),
    "full_batch": ("training", "full_batch"), "loss": ("training", "loss"),
    "output_scale": ("model", "output_scale"), "bias": ("model", "bias"),
    "sigma_w": ("model", "sigma_w"), "sigma_b": ("model", "sigma_b"),
    "data_seed": ("data", "seed"),
}
_ID_PATHS = {
    "depth": ("model", "depth"), "activation": ("model", "activation"),
    "parameterization": ("model", "parameterization"), "steps": ("training", "steps"),
    "batch_size": ("training", "batch_size"), "dataset": ("data", "name"),
    "n_train": ("data", "n_train"), "n_test": ("data", "n_test"),
    "dtype": ("training", "dtype"),
}
#: The table columns that describe a run's protocol: runs that differ in any of them (or in a
#: ``config.*`` column) are not comparable and must not be fitted together. Width, α (and the
#: lr it gives) and seed vary within a sweep.
PROTOCOL_COLUMNS = (*_ID_PATHS, *_MORE_PROTOCOL)
# Config entries that vary within one sweep or do not change a run's result.
_NOT_PROTOCOL = {("seed",), ("model", "width"), ("training", "alpha"), ("training", "lr"),
                 ("data", "data_dir"), ("logging",)}
_TAIL_COLUMNS = ("wall_time_s", "diverged_step", "error")
_INT_COLUMNS = ("width", "seed", "depth", "steps", "batch_size", "n_train", "n_test", "data_seed")

#: The error for an App. A.1 directory given to the App. A.2 pipeline (format with ``dir``).
A1_MESSAGE = ("{dir!r} is an App. A.1 directory (written by `weakcorr a1`), not an App. A.2 "
              "sweep; use `weakcorr a1 CONFIG --out {dir} --report-only`")


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


def _flat(d: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out: dict[tuple[str, ...], Any] = {}
    for k, v in d.items():
        key = (*prefix, str(k))
        if isinstance(v, Mapping) and v:
            out.update(_flat(v, key))
        else:
            out[key] = v
    return out


_KNOWN_PATHS = {*_ID_PATHS.values(), *_MORE_PROTOCOL.values()}


def _other_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Config entries outside the known columns that may change a run: ``config.a.b`` → value."""
    out = {}
    for path, v in _flat(cfg).items():
        if path in _KNOWN_PATHS or any(path[:len(p)] == p for p in _NOT_PROTOCOL):
            continue
        out["config." + ".".join(path)] = (v if v is None or isinstance(v, (str, bool, int, float))
                                           else repr(v))
    return out


def table_from_records(records: list[Mapping[str, Any]]) -> pd.DataFrame:
    """A tidy table, one row per run record (see :func:`load_table` for the columns)."""
    rows = []
    extra: list[str] = []
    other: list[str] = []
    for rec in records:
        cfg = rec.get("config") or {}
        if not isinstance(cfg, Mapping):
            cfg = {}
        metrics = rec.get("metrics") or {}
        row: dict[str, Any] = {
            "run_id": rec.get("run_id"),
            "status": rec.get("status"),
            "width": _get(cfg, "model", "width"),
            "alpha": _float(_get(cfg, "training", "alpha")),
            "lr": _float(_get(cfg, "training", "lr")),
            "seed": rec.get("seed", cfg.get("seed")),
        }
        for col, path in _ID_PATHS.items():
            row[col] = _get(cfg, *path)
        row["dtype"] = row["dtype"] or rec.get("dtype")
        for col, path in _MORE_PROTOCOL.items():
            row[col] = _get(cfg, *path)
        for col, v in _other_config(cfg).items():
            row[col] = v
            if col not in other:
                other.append(col)
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
    columns = [*_ID_COLUMNS, *_MORE_PROTOCOL, *sorted(other), *METRICS, *extra, *_TAIL_COLUMNS]
    df = pd.DataFrame(rows, columns=columns)
    for col in _INT_COLUMNS:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64")
    for col in ("lr0", "output_scale", "sigma_w", "sigma_b"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    for col in ("bias", "full_batch"):
        df[col] = df[col].map(lambda v: v if isinstance(v, bool) else pd.NA).astype("boolean")
    df["lr_factor"] = df["lr_factor"].map(lambda v: v if v is None else str(v)).astype(object)
    df["diverged_step"] = pd.to_numeric(df["diverged_step"], errors="coerce").astype("Int64")
    return df.sort_values(["alpha", "width", "seed", "run_id"], ascending=[False, True, True, True],
                          ignore_index=True)


def load_table(sweep_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """One row per run of a sweep directory, failed and diverged runs included.

    Args:
        sweep_dir: a directory written by :func:`weakcorr.sweep.run_sweep`.

    Returns:
        A DataFrame with columns ``run_id, status, width, alpha, lr, seed, depth, activation,
        parameterization, steps, batch_size, dataset, n_train, n_test, dtype``, the rest of the
        protocol (``lr0, lr_factor, full_batch, loss, output_scale, bias, sigma_w, sigma_b,
        data_seed``; see :data:`PROTOCOL_COLUMNS`), a ``config.<section>.<key>`` column for
        any other config entry of the runs (logging and ``data.data_dir`` left out), every
        metric of :data:`METRICS` (NaN where absent), other metrics found, then
        ``wall_time_s, diverged_step, error``; sorted by α (descending), width, seed.
        Corrupt run files (unreadable, not valid records, metrics out of range:
        :meth:`weakcorr.results.RunStore.scan`) are skipped and listed in
        ``table.attrs["corrupt"]`` (file name → reason); :func:`protocol_differences` tells
        whether the runs are comparable.

    Raises:
        FileNotFoundError: if ``sweep_dir`` holds no run files.
        ValueError: if none of its run files is readable, or it is an App. A.1 directory.
    """
    store = RunStore(sweep_dir)
    ids = store.run_ids()
    if not ids:
        raise FileNotFoundError(f"no run files in {os.fspath(sweep_dir)!r} (expected "
                                f"{os.fspath(store.runs_dir)}/<run_id>.json from `weakcorr sweep`)")
    records, corrupt = store.scan()  # corrupt files (any reason) are listed, not raised
    if any(rec.get("kind") == "a1" for rec in records) or any(c.kind == "a1" for c in corrupt):
        raise ValueError(A1_MESSAGE.format(dir=os.fspath(sweep_dir)))
    if not records:
        why = f" (e.g. {corrupt[0].name}: {corrupt[0].reason})" if corrupt else ""
        raise ValueError(f"{len(ids)} run file(s) in {os.fspath(store.runs_dir)!r}, none readable "
                         f"(not valid JSON records{why}); rerun the sweep that wrote them "
                         "(`weakcorr sweep CONFIG --out DIR` redoes corrupt runs) or remove them")
    table = table_from_records(records)
    table.attrs["corrupt"] = {c.name: c.reason for c in corrupt}
    return table


def _value_key(v: Any) -> Any:
    """A hashable, comparable stand-in for a table cell (missing values are one value)."""
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real):
        return float(v)
    return str(v)


def config_protocol(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The protocol columns (:data:`PROTOCOL_COLUMNS`) that a config (a run's, or a sweep's
    ``sweep.json`` config) sets, with their values; missing entries are left out."""
    out = {}
    for col, path in {**_ID_PATHS, **_MORE_PROTOCOL}.items():
        v = _get(cfg, *path)
        if v is not None:
            out[col] = v
    return out


def protocol_differences(table: pd.DataFrame) -> dict[str, dict[Any, int]]:
    """The protocol fields in which the runs of ``table`` differ, with each value's run count.

    A sweep varies width, α and seed; runs that differ in anything else (the columns of
    :data:`PROTOCOL_COLUMNS` and any ``config.*`` column of :func:`load_table`) were trained
    differently and must not be fitted together.

    Returns:
        ``{column: {value: number of runs}}`` for each column with more than one value (a
        missing value counts as the value None); empty if the runs are comparable.
    """
    cols = [c for c in (*PROTOCOL_COLUMNS, *(c for c in table.columns
                                                if str(c).startswith("config.")))
            if c in table.columns]
    out: dict[str, dict[Any, int]] = {}
    for col in cols:
        counts: dict[Any, int] = {}
        for v in table[col]:
            k = _value_key(v)
            counts[k] = counts.get(k, 0) + 1
        if len(counts) > 1:
            out[col] = counts
    return out


def _show(v: Any) -> str:
    return "missing" if v is None else repr(v) if isinstance(v, str) else f"{v}"


def check_single_protocol(table: pd.DataFrame, where: str = "the table") -> None:
    """Raise if the runs of ``table`` differ in more than width, α and seed.

    Raises:
        ValueError: one line naming each differing field with its values and run counts, and
            the fix (one directory per protocol).
    """
    diffs = protocol_differences(table)
    if not diffs:
        return
    parts = []
    for col, counts in diffs.items():
        vals = sorted(counts.items(), key=lambda kv: -kv[1])
        shown = ", ".join(f"{_show(v)} ({n} runs)" for v, n in vals[:4])
        if len(vals) > 4:
            shown += f", and {len(vals) - 4} more values"
        parts.append(f"{col}: {shown}")
    raise ValueError(f"the runs in {where} differ in more than width, α and seed "
                     f"({'; '.join(parts)}), so their fits would pool different protocols; put "
                     "each protocol's runs in a directory of its own (one `weakcorr sweep ... "
                     "--out DIR` per protocol) and report each")


def load_logs(sweep_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """Step-wise logs of all runs, long format: one row per (run, logged step).

    Returns:
        Columns ``run_id, status, width, alpha, seed, step`` and the logged quantities
        (``loss_f, loss_lin, discrepancy, param_distance``, ... as logged).
    """
    rows = []
    for rec in RunStore(sweep_dir).records():  # valid records only (corrupt ones skipped)
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


_KEY_TOL = 1e-8


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= _KEY_TOL * max(1.0, abs(a), abs(b))


def group_keys(values: pd.Series) -> pd.Series:
    """The group of each value, as used by :func:`fit_power_law`, the figures and the report.

    Float values within about 1e-8 (relative, for |v| > 1) of each other form one group, so that
    α = −0.25 and −0.250000001, or −1/3 written with different digits, are one α; the group's
    key is its most frequent value (ties: the shortest written one). Other dtypes (integers,
    strings) are their own keys. -0.0 becomes 0.0.

    Args:
        values: a column of the table.

    Returns:
        A Series aligned with ``values``: each row's group key (NaN stays NaN).
    """
    if not pd.api.types.is_float_dtype(values):
        return values
    v = values.to_numpy(dtype=float, na_value=np.nan) + 0.0
    uniq, counts = np.unique(v[np.isfinite(v)], return_counts=True)
    mapping: dict[float, float] = {}
    cluster: list[int] = []

    def close_cluster() -> None:
        if cluster:
            rep = max(cluster, key=lambda i: (counts[i], -len(repr(float(uniq[i]))),
                                              -abs(float(uniq[i]))))
            for i in cluster:
                mapping[float(uniq[i])] = float(uniq[rep]) + 0.0

    for i in range(len(uniq)):
        if cluster and not _close(float(uniq[cluster[-1]]), float(uniq[i])):
            close_cluster()
            cluster = []
        cluster.append(i)
    close_cluster()
    out = np.array([mapping.get(float(x), x) if np.isfinite(x) else x for x in v], dtype=float)
    return pd.Series(out, index=values.index, name=values.name)


def _key_rng(seed: int, key: Any) -> np.random.Generator:
    """A bootstrap generator that depends only on ``seed`` and the group key."""
    if key is None or key is pd.NA:
        token = "none"
    elif isinstance(key, (bool, np.bool_)):
        token = f"bool:{bool(key)}"
    elif isinstance(key, numbers.Real):
        f = float(key)
        token = "nan" if math.isnan(f) else repr(f + 0.0)
    else:
        token = f"str:{key}"
    h = int.from_bytes(hashlib.sha256(token.encode()).digest()[:8], "big")
    return np.random.default_rng([seed, h])


def _sort_groups(out: pd.DataFrame, by: str) -> pd.DataFrame:
    if pd.api.types.is_numeric_dtype(out[by]) and not pd.api.types.is_bool_dtype(out[by]):
        return out.sort_values(by, ascending=False, na_position="last", ignore_index=True)
    order = sorted(range(len(out)), key=lambda i: (out[by].iloc[i] is None
                                                   or out[by].iloc[i] is pd.NA,
                                                   str(out[by].iloc[i])))
    return out.iloc[order].reset_index(drop=True)


_FIT_COLUMNS = ("slope", "intercept", "ci_low", "ci_high", "r2", "n_runs", "n_seeds", "n_widths",
                "n_excluded")


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

    Only rows with status ``ok`` and finite positive ``x`` and ``y`` enter the fit (``ok``
    rows left out for a non-finite or non-positive value are counted in ``n_excluded``). A
    float ``by`` column is grouped with a tolerance (:func:`group_keys`). The CI
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
        seed: seeds the bootstrap; each group draws from its own generator, derived from
            ``seed`` and the group's key, so a group's CI does not depend on the other groups.
        method: ``"t"`` or ``"percentile"`` (see above).

    Returns:
        One row per group: ``by`` (if given; the group key), ``slope``, ``intercept`` (natural
        log units), ``ci_low``, ``ci_high`` (NaN with fewer than two seeds), ``r2``,
        ``n_runs``, ``n_seeds``, ``n_widths``, ``n_excluded``; groups with no usable run have
        NaN fits and ``n_runs`` 0. Sorted by ``by`` (numbers descending). With ``by`` and an
        empty table: no rows.

    Raises:
        ValueError: for a missing column or ``ci``/``n_boot`` out of range.
    """
    need = [c for c in (x, y, "seed", "status", *([by] if by else [])) if c not in table.columns]
    if need:
        raise ValueError(f"`table` lacks column(s) {', '.join(map(repr, need))}; "
                         f"columns: {', '.join(map(str, table.columns))}")
    if not 0 < ci < 1:
        raise ValueError(f"`ci` must be in (0, 1), got {ci}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, numbers.Integral) or n_boot < 2:
        raise ValueError(f"`n_boot` must be an integer >= 2, got {n_boot!r}")
    if method not in ("t", "percentile"):
        raise ValueError(f"`method` must be 't' or 'percentile', got {method!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative integer, got {seed!r}")
    if by and not len(table):
        return pd.DataFrame({by: pd.Series(dtype=table[by].dtype),
                             **{c: pd.Series(dtype=float) for c in _FIT_COLUMNS}})
    groups = (table.groupby(group_keys(table[by]), sort=False, dropna=False) if by
              else [(None, table)])
    rows = []
    for key, grp in groups:
        rng = _key_rng(int(seed), key)
        xs = pd.to_numeric(grp[x], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        ys = pd.to_numeric(grp[y], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        is_ok = (grp["status"] == "ok").to_numpy(dtype=bool, na_value=False)
        usable = np.isfinite(xs) & np.isfinite(ys) & (xs > 0) & (ys > 0)
        f = _fits.fit_loglog(xs[is_ok], ys[is_ok], grp["seed"].to_numpy()[is_ok], n_boot=n_boot,
                             level=ci, rng=rng, method=method)
        row: dict[str, Any] = {by: key} if by else {}
        row.update(slope=f.slope, intercept=f.intercept, ci_low=f.ci_low, ci_high=f.ci_high,
                   r2=f.r2, n_runs=f.n_points, n_seeds=f.n_seeds, n_widths=f.n_x,
                   n_excluded=int((is_ok & ~usable).sum()))
        rows.append(row)
    out = pd.DataFrame(rows)
    return _sort_groups(out, by) if by else out


def paper_protocol_differences(table: pd.DataFrame) -> dict[str, str]:
    """How the runs of ``table`` differ from the paper's App. A.2 protocol.

    Compares :data:`PAPER_PROTOCOL` (model, parameterization, activation, data, lr0, steps,
    batch, loss) and the widths (:data:`PAPER_WIDTHS`) with the values of the runs (one
    protocol: :func:`check_single_protocol`); a column the table lacks, or a missing value,
    differs. The ``lr_factor`` ``"1"`` and a missing one are the same (no factor).

    Returns:
        ``{part: "what the runs have vs the paper's"}`` in the order model, parameterization,
        activation, data, lr0, steps, batch, loss, widths; empty for the paper's protocol.
    """
    def one(col: str) -> Any:
        if col not in table.columns:
            return None
        vals = [v for v in (_value_key(v) for v in table[col]) if v is not None]
        return vals[0] if vals else None

    diffs: dict[str, list[str]] = {}
    for col, want in PAPER_PROTOCOL.items():
        have = one(col)
        if col == "lr_factor" and have is None:
            have = "1"
        if col == "full_batch" and have is None:
            have = False
        same = (have is not None and (math.isclose(float(have), float(want), rel_tol=1e-9)
                                      if isinstance(want, float) and not isinstance(have, str)
                                      else _value_key(have) == _value_key(want)))
        if not same:
            diffs.setdefault(_PROTOCOL_PART[col], []).append(
                f"{col} {_show(have)} vs {_show(want)}")
    widths = sorted({int(w) for w in table["width"].dropna()}) if "width" in table else []
    if tuple(widths) != PAPER_WIDTHS:
        shown = (f"{widths[0]}–{widths[-1]}, {len(widths)} widths" if widths else "none")
        diffs["widths"] = [f"{shown} vs {PAPER_WIDTHS[0]}–{PAPER_WIDTHS[-1]}, "
                           f"{len(PAPER_WIDTHS)} widths"]
    order = ["model", "parameterization", "activation", "data", "lr0", "steps", "batch", "loss",
             "widths"]
    return {k: ", ".join(diffs[k]) for k in order if k in diffs}


def _paper_slope(alpha: Any) -> tuple[float | None, float]:
    """The paper's α within tolerance of ``alpha`` and its slope, or (None, NaN)."""
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        return None, math.nan
    for pa, ps in PAPER_SLOPES.items():
        if math.isfinite(a) and _close(a, pa):
            return pa, ps
    return None, math.nan


def _paper_resolution(alpha: float) -> float:
    """The distance a comparison with the paper's slope at ``alpha`` must resolve: to the
    nearest other slope the paper reports (at another α), so that "consistent" says which of
    the paper's behaviours the runs reproduce."""
    own = PAPER_SLOPES[alpha]
    return min(abs(own - v) for v in PAPER_SLOPES.values() if abs(own - v) > 1e-12)


def compare_with_paper(fits: pd.DataFrame, by: str = "alpha") -> pd.DataFrame:
    """The fitted slopes next to the paper's (Fig. 4): one row per group of ``fits`` and, when
    ``by`` is ``"alpha"``, one per α of the paper without a fit.

    The paper's slopes are those of MSE_test(f, f_lin) (Eq. 30) against width; compare only
    fits of ``mse_test``. α are matched with the tolerance of :func:`group_keys`; no group of
    ``fits`` is merged or dropped.

    Args:
        fits: the output of :func:`fit_power_law` grouped by ``by`` (α).
        by: the grouping column of ``fits``; other than ``"alpha"`` (e.g. ``"activation"``)
            there is no paper slope to compare with.

    Returns:
        Columns ``by``, ``slope, ci_low, ci_high, paper_slope, difference`` (slope − paper),
        ``paper_in_ci`` (True/False, None when either side is missing), ``verdict``
        (:func:`weakcorr.fits.decide_equal`: "consistent" only when the CI holds the paper's
        slope and is no wider than the distance to the nearest other slope of the paper,
        "not consistent" when it excludes it, otherwise "inconclusive (CI too wide: ...)";
        None without a paper slope or a CI), ``n_runs``, then the
        other fit columns present (``r2, n_seeds, n_widths, n_excluded``; NaN for paper-only
        rows).
    """
    if len(fits) and by not in fits.columns:
        raise ValueError(f"`fits` lacks the grouping column {by!r} (`by`); columns: "
                         f"{', '.join(map(str, fits.columns))}")
    more = [c for c in ("r2", "n_seeds", "n_widths", "n_excluded") if c in fits.columns]
    rows = []
    matched: set[float] = set()
    for _, r in fits.iterrows():
        pa, paper = _paper_slope(r[by]) if by == "alpha" else (None, math.nan)
        if pa is not None:
            matched.add(pa)
        slope, lo, hi = (float(r[c]) for c in ("slope", "ci_low", "ci_high"))
        inside = (bool(lo <= paper <= hi)
                  if all(math.isfinite(v) for v in (lo, hi, paper)) else None)
        verdict = (_fits.decide_equal(slope, (lo, hi), target=paper,
                                      scale=_paper_resolution(pa)).label()
                   if pa is not None else None)
        rows.append({by: r[by], "slope": slope, "ci_low": lo, "ci_high": hi,
                     "paper_slope": paper, "difference": slope - paper, "paper_in_ci": inside,
                     "verdict": verdict, "n_runs": int(r["n_runs"]),
                     **{c: r[c] for c in more}})
    if by == "alpha":
        for pa, paper in PAPER_SLOPES.items():
            if pa not in matched:
                rows.append({by: pa, "slope": math.nan, "ci_low": math.nan, "ci_high": math.nan,
                             "paper_slope": paper, "difference": math.nan, "paper_in_ci": None,
                             "verdict": None, "n_runs": 0, **{c: math.nan for c in more}})
    columns = [by, "slope", "ci_low", "ci_high", "paper_slope", "difference", "paper_in_ci",
               "verdict", "n_runs", *more]
    out = pd.DataFrame(rows, columns=columns)
    return _sort_groups(out, by) if len(out) else out
