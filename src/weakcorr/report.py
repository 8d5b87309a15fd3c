"""A sweep directory → ``report.md``, ``summary.json`` and figures (PNG + PDF).

The report states the sweep config, how many runs finished, the power-law slopes of
MSE_test(f, f_lin) against width per α (paper Eq. 30, 31) with bootstrap CIs over seeds
(:mod:`weakcorr.fits`), the figures, and every failed or diverged run. The slopes stand next to
the paper's Fig. 4 slopes, with a verdict that may read "inconclusive (CI too wide ...)", only
when the runs follow the paper's protocol (:func:`weakcorr.analysis.paper_protocol_differences`);
otherwise one line says how they differ. A directory whose runs all diverged is reported too.
It refuses (before writing anything) an App. A.1 directory and one whose runs differ in more
than width, α and seed.
"""

from __future__ import annotations

import math
import os
import pathlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import yaml

from . import analysis, plots
from ._files import atomic_write_text
from .results import RunStore, atomic_write_json, json_safe

__all__ = ["Report", "write_report"]

_FIG_DIR = "figures"


@dataclass(frozen=True)
class Report:
    """Paths written by :func:`write_report` and the summary it wrote."""

    markdown: pathlib.Path
    summary_json: pathlib.Path
    figures: list[pathlib.Path] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def width_scaling_png(self) -> pathlib.Path | None:
        """The Fig. 4-style PNG, if drawn."""
        return next((p for p in self.figures if p.name == "width_scaling.png"), None)


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e-2 or abs(v) >= 1e4 else f"{v:.{digits}f}"
    return str(v)


_INT_COLUMNS = {"n_runs", "n_seeds", "n_widths", "seed", "width", "diverged_step"}


def _cell(column: str, v: Any) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if column in _INT_COLUMNS:
        return str(int(v))
    if column == "alpha":
        return f"{float(v):g}"
    if column == "lr":
        return f"{float(v):.4g}"
    return _fmt(v).replace("|", "/")


def _md_table(df: pd.DataFrame, columns: dict[str, str]) -> str:
    head = "| " + " | ".join(columns.values()) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(_cell(c, r[c]) for c in columns) + " |" for _, r in df.iterrows()]
    return "\n".join([head, rule, *body])


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for rec in df.to_dict(orient="records"):
        out.append({k: (None if v is pd.NA or (isinstance(v, float) and not math.isfinite(v))
                        else v) for k, v in rec.items()})
    return json_safe(out)


def _alphas(values: Any) -> str:
    return "[" + ", ".join(f"{float(a):g}" for a in values) + "]"


def _no_slope_reason(fit: Any, table: pd.DataFrame, y: str) -> str:
    if fit["n_runs"]:
        return "needs ≥ 2 widths"
    keys = analysis.group_keys(table["alpha"])
    rows = table[keys.map(lambda k: plots._same_key(k, fit["alpha"]))]
    return plots._why_empty(rows, y) if len(rows) else f"no ok runs with a finite positive {y}"


_TITLES = {"mse_test": "Linearization error vs width by learning-rate scaling (α)",
           "mse_train": "Linearization error (train) vs width by learning-rate scaling (α)",
           "c_test": "Discrepancy C(f, f_lin) vs width by learning-rate scaling (α)",
           "c_train": "Discrepancy C(f, f_lin) (train) vs width by learning-rate scaling (α)"}


def _refuse_other_kind(root: pathlib.Path, manifest: dict[str, Any]) -> None:
    kind = manifest.get("kind")
    if kind == "a1":
        raise ValueError(analysis.A1_MESSAGE.format(dir=str(root)))
    if kind not in (None, "a2"):
        raise ValueError(f"{str(root)!r} holds a sweep of kind {kind!r}, not an App. A.2 sweep of "
                         "`weakcorr sweep`; pass a directory written by `weakcorr sweep`")


def _manifest_mismatch(table: pd.DataFrame, cfg: dict[str, Any]) -> list[str]:
    """Protocol fields where sweep.json's config disagrees with the (single-protocol) runs."""
    out = []
    for col, v in analysis.config_protocol(cfg).items():
        if col not in table.columns or not len(table):
            continue
        runs = table[col].iloc[0]
        if analysis._value_key(runs) != analysis._value_key(v):
            out.append(f"{col}: sweep.json {v!r}, runs {analysis._value_key(runs)!r}")
    return out


# Below this, a float32 MSE_test(f, f_lin) carries rounding error of several % and more: θ's
# float32 weights lose the low bits of each small update, and f - f_lin is tiny. Measured on the
# cpu preset's α = -1 runs against float64 (same networks and batches, geometric mean over 12
# seeds): within 1 % down to 1e-12 (widths <= 609); 5 %, 19 %, 35 % at 4.6e-13, 2.3e-13, 1.4e-13
# (widths 724, 861, 1024; single runs up to 86 %).
FLOAT32_FLOOR = 1e-12
# From width 2048 on, float32's rounding error in f − f_lin is far larger and grows with width:
# paper-widths-cpu, α = −1, 250 steps, width 2048: float32 3e-12 against float64 1.2e-14
# (244x, geometric mean over 4 seeds; results/paper-widths-cpu*), and float32 rises as n^+7.7
# over 2048-3444 (3e-12 -> 1.7e-10) while float64 falls. So there any float32 MSE below
# FLOAT32_WIDE_FLOOR is suspect.
FLOAT32_WIDE_WIDTH = 2048
FLOAT32_WIDE_FLOOR = 1e-9


def _float32_note(table: pd.DataFrame, y: str) -> str | None:
    """A warning when float32 runs have ``y`` (an MSE) below :data:`FLOAT32_FLOOR`."""
    if not y.startswith("mse_") or "dtype" not in table or y not in table:
        return None
    ok = table[(table["status"] == "ok") & (table["dtype"] == "float32")]
    floor = np.where(ok["width"] >= FLOAT32_WIDE_WIDTH, FLOAT32_WIDE_FLOOR, FLOAT32_FLOOR)
    low = ok[(ok[y] > 0) & (ok[y] < floor)]
    if low.empty:
        return None
    keys = analysis.group_keys(low["alpha"])
    where = ", ".join(f"α = {float(a):g}: {len(g)} (widths {int(g['width'].min())}–"
                      f"{int(g['width'].max())})" for a, g in low.groupby(keys, sort=False))
    return (f"Precision: {len(low)} float32 run(s) have {y} below {FLOAT32_FLOOR:g} (below "
            f"{FLOAT32_WIDE_FLOOR:g} from width {FLOAT32_WIDE_WIDTH}) ({where}). There float32 "
            "rounding of θ's small updates is a sizeable part of f − f_lin, or all of it (α = −1 "
            "against float64: 35 % at width 1024 in the cpu preset; 244× at width 2048 in "
            "paper-widths-cpu, where float32 grows with width), which flattens or reverses the "
            "slope; rerun them with `--set training.dtype=float64` (into a new directory).")


#: Seconds after which :func:`write_report` starts naming its stages on stderr.
PROGRESS_AFTER_S = 3.0


class _Stages:
    """Names a report's stages on stderr once it has run :data:`PROGRESS_AFTER_S` seconds."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.shown = False
        self.tty = sys.stderr.isatty()

    def __call__(self, msg: str, *, last: bool = False) -> None:
        elapsed = time.perf_counter() - self.start
        if elapsed < PROGRESS_AFTER_S and not self.shown:
            return
        self.shown = True
        text = f"report: {msg} ({elapsed:.0f} s)"
        if self.tty:
            sys.stderr.write("\r\033[K" + text + ("\n" if last else ""))
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()


def _progress(progress: bool | Callable[[str], None]) -> Callable[..., None]:
    if progress is True:
        return _Stages()
    if progress is False or progress is None:
        return lambda msg, **_: None
    if not callable(progress):
        raise TypeError(f"`progress` must be True, False or a callable taking a message, got "
                        f"{type(progress).__name__}")
    return lambda msg, **_: progress(msg)


def _drop_repeats(table: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """One run per (width, α, seed): runs of one protocol that repeat a grid point differ only
    in what the protocol check leaves out (logging, data.data_dir), so the later ones would
    count one seed twice in the fits and the bootstrap. Keeps the first by status (ok, then
    diverged, then failed) and run id; returns the table and how many runs it left out."""
    if table.empty:
        return table, 0
    rank = table["status"].map({"ok": 0, "diverged": 1}).fillna(2)
    ordered = table.assign(_rank=rank).sort_values(["_rank", "run_id"], kind="stable")
    repeat = ordered.duplicated(["width", "alpha", "seed"], keep="first")
    kept = ordered[~repeat].drop(columns="_rank").sort_index()
    return kept, int(repeat.sum())


def write_report(
    sweep_dir: str | os.PathLike[str],
    *,
    y: str = "mse_test",
    n_boot: int = 2000,
    seed: int = 0,
    progress: bool | Callable[[str], None] = True,
) -> Report:
    """Write ``report.md``, ``summary.json`` and ``figures/`` into a sweep directory.

    The paper's Fig. 4 slopes are compared only for ``y = "mse_test"`` (they are slopes of
    MSE_test(f, f_lin)); other metrics get their fits alone.

    Args:
        sweep_dir: a directory written by :func:`weakcorr.sweep.run_sweep`.
        y: the metric fitted against width (default ``mse_test``, Eq. 30).
        n_boot: bootstrap replicates of the slope CIs.
        seed: seed of the bootstrap.
        progress: True: once the report has taken more than
            :data:`PROGRESS_AFTER_S` seconds, name each further stage on stderr (one line per
            stage; on a terminal, one line rewritten); False: silent; a callable gets every
            stage's message.

    Returns:
        A :class:`Report` with the paths and the summary dict.

    Raises:
        FileNotFoundError: if the directory holds no run files.
        ValueError: before anything is written, if the directory is an App. A.1 one, none of
            its run files is readable, or its runs differ in more than width, α and seed
            (:func:`weakcorr.analysis.check_single_protocol`).
    """
    say = _progress(progress)
    root = pathlib.Path(sweep_dir)
    store = RunStore(root)
    manifest = store.read_manifest() or {}
    _refuse_other_kind(root, manifest)
    say("reading the run files")
    table = analysis.load_table(root)
    analysis.check_single_protocol(table, where=repr(str(root)))
    counts = {s: int((table["status"] == s).sum()) for s in ("ok", "diverged", "failed")}
    n_present = len(table)
    present_ids = set(table["run_id"].dropna())
    manifest_ids = {str(r) for r in (manifest.get("run_ids") or [])}
    missing = len(manifest_ids - present_ids)
    not_listed = len(present_ids - manifest_ids) if manifest_ids else 0
    unreadable = len(store.run_ids()) - n_present
    corrupt = table.attrs.get("corrupt") or {}  # file name -> why (results.RunStore.scan)
    expected = len(manifest_ids | present_ids)
    table, n_repeats = _drop_repeats(table)  # from here on, one run per grid point
    logs = analysis.load_logs(root)
    logs = logs[logs["run_id"].isin(set(table["run_id"]))] if "run_id" in logs else logs
    cfg = manifest.get("config") or {}
    say(f"fitting slopes of {y} ({len(table)} runs, {n_boot} bootstrap replicates)")
    fits = analysis.fit_power_law(table, y=y, n_boot=n_boot, seed=seed)
    fits_c = analysis.fit_power_law(table, y="c_test", n_boot=n_boot, seed=seed)
    paper_diffs = analysis.paper_protocol_differences(table) if y == "mse_test" else {}
    paper = y == "mse_test" and not paper_diffs
    comparison = analysis.compare_with_paper(fits) if paper else None
    problems = table[table["status"] != "ok"]

    fig_dir = root / _FIG_DIR
    # Both figures use constrained layout, which keeps legends and labels inside the figure.
    title = _TITLES.get(y, f"{y} vs width by learning-rate scaling (α)")
    say("drawing figures/width_scaling (PNG, PDF)")
    figures = plots.save_figure(plots.plot_width_scaling(table, y=y, fits=fits, title=title),
                                fig_dir / "width_scaling", tight=False)
    say("drawing figures/training_curves (PNG, PDF)")
    figures += plots.save_figure(plots.plot_training_curves(logs), fig_dir / "training_curves",
                                 tight=False)
    say("writing report.md and summary.json")
    name = cfg.get("name", root.name)
    lines = [f"# Sweep report: {name}", ""]
    if cfg.get("description"):
        lines += [str(cfg["description"]).strip(), ""]
    runs_line = (f"{n_present} runs present: {counts['ok']} ok, {counts['diverged']} diverged, "
                 f"{counts['failed']} failed")
    if manifest_ids:
        runs_line += (f"; sweep.json lists {len(manifest_ids)} runs, "
                      + ("all present" if not missing else f"{missing} of them not present")
                      + (f", and {not_listed} present runs are not among them" if not_listed
                         else ""))
    runs_line += "."
    if unreadable:
        runs_line += (f" {unreadable} corrupt run file(s) skipped (`weakcorr sweep` redoes them): "
                      + "; ".join(f"{n}: {why}" for n, why in sorted(corrupt.items())[:20]) + ".")
    fit_cols = {"alpha": "α", "slope": "slope s(α)", "ci_low": "CI low", "ci_high": "CI high",
                "r2": "R²", "n_runs": "runs", "n_seeds": "seeds", "n_widths": "widths"}
    if paper:
        assert comparison is not None
        heading = f"## Slopes of {y} vs width (Eq. 31) and the paper's Fig. 4"
        intro = ("Least-squares fit of log y = s·log n + b per α on runs with status ok; 95 % CI "
                 "from a bootstrap over seeds (whole seeds resampled; slope ± t·SE). The paper "
                 "reports −1.14, −1.14, −1.3, −1.73, −2.72 for α = 0, −0.25, −0.5, −0.75, −1.")
        main = _md_table(comparison[comparison["alpha"].isin(fits["alpha"])],
                         {**fit_cols, "paper_slope": "paper", "difference": "slope − paper",
                          "paper_in_ci": "paper in CI", "verdict": "verdict"})
        after = [("These runs follow the paper's protocol (preset `paper-a2`: widths "
                  "2048–19484, full MNIST; the paper used 100 seeds). A verdict is 'consistent' "
                  "only when the CI holds the paper's slope and is no wider than the distance "
                  "to the nearest other slope the paper reports (0.16 at α = 0, −0.25, −0.5; "
                  "0.43 at −0.75; 0.99 at −1), 'inconclusive (CI too wide: need more "
                  "seeds/widths)' when it holds it but is wider.")]
    elif y == "mse_test":
        heading = f"## Slopes of {y} vs width (Eq. 31)"
        intro = ("Least-squares fit of log y = s·log n + b per α on runs with status ok; 95 % CI "
                 "from a bootstrap over seeds (whole seeds resampled; slope ± t·SE).")
        main = _md_table(fits, fit_cols)
        after = [("Not the paper's protocol: differs in "
                  + "; ".join(f"{k} ({v})" for k, v in paper_diffs.items())
                  + ". The paper's Fig. 4 slopes (−1.14, −1.14, −1.3, −1.73, −2.72 for α = 0, "
                  "−0.25, −0.5, −0.75, −1) are therefore not compared.")]
    else:
        heading = f"## Slopes of {y} vs width (Eq. 31)"
        intro = ("Least-squares fit of log y = s·log n + b per α on runs with status ok; 95 % CI "
                 "from a bootstrap over seeds (whole seeds resampled; slope ± t·SE). The paper's "
                 f"Fig. 4 slopes are those of MSE_test(f, f_lin) (`--metric mse_test`); they are "
                 f"not compared with {y}.")
        main = _md_table(fits, fit_cols)
        after = []
    no_slope = [f"α = {float(r['alpha']):g}: {_no_slope_reason(r, table, y)}"
                for _, r in fits.iterrows()
                if not math.isfinite(r["slope"])]
    if no_slope:
        after.append("No slope for " + "; ".join(no_slope) + ".")
    excluded = [(float(r["alpha"]), int(r["n_excluded"])) for _, r in fits.iterrows()
                if r["n_excluded"]]
    if excluded:
        after.append(f"{sum(n for _, n in excluded)} ok run(s) left out of the fits because "
                     f"their {y} is ≤ 0 or not finite (log undefined): "
                     + ", ".join(f"α = {a:g}: {n}" for a, n in excluded) + ".")
    precision = _float32_note(table, y)
    if precision:
        after.append(precision)
    if n_repeats:
        after.append(f"{n_repeats} run(s) repeat a (width, α, seed) already present, differing "
                     "only in logging or data.data_dir; each grid point counts once (the "
                     "first ok run by run id).")
    if not counts["ok"]:
        after.insert(0, f"No run finished with status ok ({counts['diverged']} diverged, "
                        f"{counts['failed']} failed), so no slope can be fitted; see the "
                        "failed or diverged runs below.")
    lines += [
        "## Runs", "",
        (f"{runs_line} Widths {sorted(int(w) for w in table['width'].dropna().unique())}, "
         f"α {_alphas(sorted(fits['alpha'].dropna(), reverse=True))}, "
         f"{table['seed'].nunique()} seeds. Total training time "
         f"{_fmt(float(table['wall_time_s'].sum()) / 60, 3)} min."), "",
        heading, "", intro, "", main, "",
    ]
    for a in after:
        lines += [a, ""]
    if y != "c_test":
        lines += [
            f"Slopes of the Eq. 24 discrepancy C(f, f_lin) on the test set, from the same runs "
            f"and the same f − f_lin as the {y} table above (not a separate measurement, and "
            "not compared with the paper):", "",
            _md_table(fits_c, {"alpha": "α", "slope": "slope", "ci_low": "CI low",
                               "ci_high": "CI high", "r2": "R²", "n_runs": "runs"}), "",
        ]
    lines += [
        "## Figures", "",
        f"![{y} vs width]({_FIG_DIR}/width_scaling.png)", "",
        f"PDF: [{_FIG_DIR}/width_scaling.pdf]({_FIG_DIR}/width_scaling.pdf)", "",
    ]
    lines += [f"![training curves of f and f_lin]({_FIG_DIR}/training_curves.png)", ""]
    lines += ["## Failed or diverged runs", ""]
    if len(problems):
        lines += [_md_table(problems.assign(error=problems["error"].fillna("").str.slice(0, 120)),
                            {"run_id": "run", "status": "status", "width": "width",
                             "alpha": "α", "seed": "seed", "lr": "lr",
                             "diverged_step": "diverged at", "error": "error"}), ""]
    else:
        lines += ["None.", ""]
    lines += ["## Configuration", ""]
    mismatch = _manifest_mismatch(table, cfg) if cfg else []
    if mismatch:
        lines += ["sweep.json (below) does not describe these runs: " + "; ".join(mismatch)
                  + ". It holds the config of the latest sweep into this directory.", ""]
    lines += ["```yaml",
              yaml.safe_dump(cfg, sort_keys=False).strip() if cfg else "# (no sweep.json)",
              "```", ""]
    md_path = root / "report.md"
    atomic_write_text(md_path, "\n".join(lines))

    summary = json_safe({
        "sweep": name,
        "config": cfg,
        "metric": y,
        "runs": {"expected": expected, "present": n_present, "in_manifest": len(manifest_ids),
                 "missing": missing, "not_in_manifest": not_listed, "unreadable": unreadable,
                 "repeats_left_out": n_repeats,
                 **counts},
        "fits": _records(fits),
        "fits_c_test": _records(fits_c),
        "paper_comparison": _records(comparison) if comparison is not None else [],
        "paper_protocol_differences": paper_diffs,
        "precision_note": precision,
        "corrupt_runs": corrupt,
        "problems": _records(problems[["run_id", "status", "width", "alpha", "seed", "lr",
                                       "diverged_step", "error"]]),
        "figures": [str(p.relative_to(root)) for p in figures],
    })
    summary_path = atomic_write_json(root / "summary.json", summary)
    say("done", last=True)
    return Report(md_path, summary_path, figures, summary)
