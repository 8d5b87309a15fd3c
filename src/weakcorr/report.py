"""A sweep directory → ``report.md``, ``summary.json`` and figures (PNG + PDF).

The report states the sweep config, how many runs finished, the power-law slopes of
MSE_test(f, f_lin) against width per α (paper Eq. 30, 31) with bootstrap CIs over seeds next
to the paper's Fig. 4 slopes, the figures, and every failed or diverged run.
"""

from __future__ import annotations

import math
import os
import pathlib
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import yaml

from . import analysis, plots
from .results import RunStore, atomic_path, atomic_write_json, json_safe

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


def write_report(
    sweep_dir: str | os.PathLike[str],
    *,
    y: str = "mse_test",
    n_boot: int = 2000,
    seed: int = 0,
) -> Report:
    """Write ``report.md``, ``summary.json`` and ``figures/`` into a sweep directory.

    Args:
        sweep_dir: a directory written by :func:`weakcorr.sweep.run_sweep`.
        y: the metric fitted against width (default ``mse_test``, Eq. 30).
        n_boot: bootstrap replicates of the slope CIs.
        seed: seed of the bootstrap.

    Returns:
        A :class:`Report` with the paths and the summary dict.

    Raises:
        FileNotFoundError: if the directory holds no run files.
    """
    root = pathlib.Path(sweep_dir)
    table = analysis.load_table(root)
    logs = analysis.load_logs(root)
    manifest = RunStore(root).read_manifest() or {}
    cfg = manifest.get("config") or {}
    fits = analysis.fit_power_law(table, y=y, n_boot=n_boot, seed=seed)
    fits_c = analysis.fit_power_law(table, y="c_test", n_boot=n_boot, seed=seed)
    comparison = analysis.compare_with_paper(fits)
    counts = {s: int((table["status"] == s).sum()) for s in ("ok", "diverged", "failed")}
    expected = len(manifest.get("run_ids") or []) or len(table)
    problems = table[table["status"] != "ok"]

    fig_dir = root / _FIG_DIR
    figures = plots.save_figure(plots.plot_width_scaling(table, y=y, fits=fits),
                                fig_dir / "width_scaling")
    figures += plots.save_figure(plots.plot_training_curves(logs), fig_dir / "training_curves",
                                 tight=False)
    name = cfg.get("name", root.name)
    lines = [f"# Sweep report: {name}", ""]
    if cfg.get("description"):
        lines += [str(cfg["description"]).strip(), ""]
    lines += [
        "## Runs", "",
        f"{len(table)} of {expected} runs present: {counts['ok']} ok, {counts['diverged']} "
        f"diverged, {counts['failed']} failed. Widths {sorted(table['width'].dropna().unique().tolist())}, "
        f"α {sorted(table['alpha'].dropna().unique().tolist(), reverse=True)}, "
        f"{table['seed'].nunique()} seeds. Total training time "
        f"{_fmt(float(table['wall_time_s'].sum()) / 60, 3)} min.", "",
        f"## Slopes of {y} vs width (Eq. 31) and the paper's Fig. 4", "",
        "Least-squares fit of log y = s·log n + b per α on runs with status ok; 95 % CI from "
        "a bootstrap over seeds (whole seeds resampled; slope ± t·SE). The paper reports "
        "−1.14, −1.14, −1.3, −1.73, −2.72 for α = 0, −0.25, −0.5, −0.75, −1.", "",
        _md_table(comparison[comparison["alpha"].isin(fits["alpha"])].merge(fits[["alpha", "r2", "n_seeds", "n_widths"]], on="alpha",
                                   how="left"),
                  {"alpha": "α", "slope": "slope s(α)", "ci_low": "CI low", "ci_high": "CI high",
                   "r2": "R²", "n_runs": "runs", "n_seeds": "seeds", "n_widths": "widths",
                   "paper_slope": "paper", "difference": "slope − paper",
                   "paper_in_ci": "paper in CI"}), "",
        "The paper's slopes come from widths 2048–19484 on full MNIST with 100 seeds "
        "(preset `paper-a2`); other width ranges or datasets need not reproduce them.", "",
        "Slopes of the Eq. 24 discrepancy C(f, f_lin) on the test set:", "",
        _md_table(fits_c, {"alpha": "α", "slope": "slope", "ci_low": "CI low",
                           "ci_high": "CI high", "r2": "R²", "n_runs": "runs"}), "",
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
    lines += ["## Configuration", "", "```yaml",
              yaml.safe_dump(cfg, sort_keys=False).strip() if cfg else "# (no sweep.json)",
              "```", ""]
    md_path = root / "report.md"
    with atomic_path(md_path) as tmp:
        tmp.write_text("\n".join(lines), encoding="utf-8")

    summary = json_safe({
        "sweep": name,
        "config": cfg,
        "metric": y,
        "runs": {"expected": expected, "present": len(table), **counts},
        "fits": _records(fits),
        "fits_c_test": _records(fits_c),
        "paper_comparison": _records(comparison),
        "problems": _records(problems[["run_id", "status", "width", "alpha", "seed", "lr",
                                       "diverged_step", "error"]]),
        "figures": [str(p.relative_to(root)) for p in figures],
    })
    summary_path = atomic_write_json(root / "summary.json", summary)
    return Report(md_path, summary_path, figures, summary)
