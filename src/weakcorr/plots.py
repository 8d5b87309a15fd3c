"""Figures of a sweep: Fig. 4-style width scaling and training curves.

Every ``plot_*`` function takes a tidy table (:func:`weakcorr.analysis.load_table` or
:func:`weakcorr.analysis.load_logs`) and returns a :class:`matplotlib.figure.Figure`; with
``save_to="dir/name"`` it also writes ``name.png`` and ``name.pdf``. Figures are built without
pyplot (no GUI backend, no global state).
"""

from __future__ import annotations

import math
import os
import pathlib
from collections.abc import Sequence

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .analysis import fit_power_law  # noqa: E402
from .results import atomic_path  # noqa: E402

__all__ = ["plot_training_curves", "plot_width_scaling", "save_figure"]

_LABELS = {
    "mse_test": r"MSE$_{\mathrm{test}}(f, f_{\mathrm{lin}})$ (Eq. 30)",
    "mse_train": r"MSE$_{\mathrm{train}}(f, f_{\mathrm{lin}})$",
    "c_test": r"$C(f, f_{\mathrm{lin}})$ on test (Eq. 24)",
    "c_train": r"$C(f, f_{\mathrm{lin}})$ on train (Eq. 24)",
    "width": "width $n$",
}


def save_figure(fig: Figure, save_to: str | os.PathLike[str], *, tight: bool = True
                ) -> list[pathlib.Path]:
    """Save ``fig`` as PNG (150 dpi) and PDF next to each other; returns the two paths.

    ``save_to`` is a path without suffix (a ``.png``/``.pdf`` suffix is dropped); its parent
    directory is created. ``tight=False`` keeps the figure's own layout (faster to save).
    """
    base = pathlib.Path(save_to)
    if base.suffix.lower() in {".png", ".pdf"}:
        base = base.with_suffix("")
    base.parent.mkdir(parents=True, exist_ok=True)
    paths = [base.with_suffix(".png"), base.with_suffix(".pdf")]
    bbox = "tight" if tight else None
    for path, dpi in zip(paths, (150, "figure"), strict=True):
        # A crash or Ctrl-C while saving leaves the old file or none, never half a PDF.
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=path.suffix[1:], dpi=dpi, bbox_inches=bbox)
    return paths


def _alpha_label(a: float) -> str:
    return f"α = {a:g}".replace("-", "−")


def _num(v: float) -> str:
    return f"{v:.2f}".replace("-", "−")


def plot_width_scaling(
    df: pd.DataFrame,
    *,
    y: str = "mse_test",
    x: str = "width",
    by: str = "alpha",
    fits: pd.DataFrame | None = None,
    title: str | None = "Linearization error vs width by learning-rate scaling (α)",
    save_to: str | os.PathLike[str] | None = None,
) -> Figure:
    """Fig. 4: ``y`` against width on log-log axes, one colour per α.

    Each seed is a small marker, the mean per width a larger one, and the dashed line the
    power-law fit (:func:`weakcorr.analysis.fit_power_law`) with its slope and 95 % CI in the
    legend. Only runs with status ``ok`` and positive finite ``y`` are drawn.

    Args:
        df: the tidy run table.
        y: the metric (default ``mse_test``, Eq. 30).
        x: the width column.
        by: one curve per value of this column.
        fits: precomputed fits (default: computed here).
        title: the axes title (None: none).
        save_to: if given, save PNG and PDF there (see :func:`save_figure`).

    Returns:
        The figure.
    """
    fits = fit_power_law(df, x=x, y=y, by=by) if fits is None else fits
    fig = Figure(figsize=(7.5, 5.2), layout="constrained")
    ax = fig.add_subplot()
    ok = df[(df["status"] == "ok")].copy()
    ok[y] = pd.to_numeric(ok[y], errors="coerce")
    ok = ok[np.isfinite(ok[y]) & (ok[y] > 0)]
    groups = sorted(ok[by].dropna().unique(), reverse=True)
    cmap = matplotlib.colormaps["viridis"]
    fit_by = {round(float(r[by]), 10): r for _, r in fits.iterrows()} if len(fits) else {}
    for i, key in enumerate(groups):
        color = cmap(0.9 * i / max(1, len(groups) - 1))
        g = ok[ok[by] == key]
        xs = g[x].astype(float).to_numpy()
        ax.scatter(xs, g[y], s=12, color=color, alpha=0.35, linewidths=0)
        mean = g.groupby(x)[y].mean()
        ax.plot(mean.index.astype(float), mean.to_numpy(), "o", color=color, ms=6,
                markeredgecolor="black", markeredgewidth=0.5)
        label = _alpha_label(float(key)) if by == "alpha" else f"{by} = {key}"
        fit = fit_by.get(round(float(key), 10))
        if fit is not None and math.isfinite(fit["slope"]):
            grid = np.geomspace(xs.min(), xs.max(), 50)
            ax.plot(grid, np.exp(fit["intercept"]) * grid ** fit["slope"], "--", color=color,
                    lw=1.5)
            label += f": slope {_num(fit['slope'])}"
            if math.isfinite(fit["ci_low"]):
                label += f" [{_num(fit['ci_low'])}, {_num(fit['ci_high'])}]"
        ax.plot([], [], "o--", color=color, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(_LABELS.get(x, x))
    ax.set_ylabel(_LABELS.get(y, y))
    widths = sorted(ok[x].astype(float).unique())
    if 0 < len(widths) <= 16:
        ax.set_xticks(widths, [f"{w:g}" for w in widths], minor=False)
        ax.tick_params(axis="x", which="minor", bottom=False, labelbottom=False)
        ax.tick_params(axis="x", labelrotation=45 if len(widths) > 6 else 0)
    if title:
        ax.set_title(title, fontsize=11)
    ax.grid(True, which="major", alpha=0.3)
    if groups:
        ax.legend(title="markers: seeds, dots: mean, dashed: fit (95 % CI)", fontsize=8,
                  title_fontsize=8, loc="best")
    else:
        ax.text(0.5, 0.5, "no finished runs with positive values", ha="center",
                transform=ax.transAxes)
    if save_to is not None:
        save_figure(fig, save_to)
    return fig


def plot_training_curves(
    logs: pd.DataFrame,
    *,
    alpha: float | Sequence[float] | None = None,
    widths: Sequence[int] | None = None,
    max_widths: int = 4,
    save_to: str | os.PathLike[str] | None = None,
) -> Figure:
    """Training curves: losses of f and f_lin and their batch discrepancy against step.

    One panel per width (columns) and per α (rows); each line is the mean over the seeds of
    runs with status ``ok``: the training losses of f (solid) and f_lin (dashed) on the left
    (linear) axis, the mini-batch discrepancy mean_b ‖f − f_lin‖² (dotted) on the right one.

    Args:
        logs: the long log table (:func:`weakcorr.analysis.load_logs`).
        alpha: the α (or αs) to show (default: all in the table, one row each).
        widths: the widths to show (default: up to ``max_widths`` spread over the range).
        max_widths: cap on the number of columns when ``widths`` is None.
        save_to: if given, save PNG and PDF there.

    Returns:
        The figure.
    """
    ok = logs[logs["status"] == "ok"] if "status" in logs.columns else logs
    all_alphas = sorted(ok["alpha"].dropna().unique(), reverse=True)
    if alpha is None:
        alphas = all_alphas
    else:
        wanted = [alpha] if isinstance(alpha, (int, float)) else list(alpha)
        alphas = [a for a in all_alphas if any(np.isclose(a, w) for w in wanted)]
    if widths is None:
        all_widths = sorted(ok["width"].dropna().unique())
        idx = np.unique(np.linspace(0, len(all_widths) - 1, min(max_widths, len(all_widths)))
                        .round().astype(int)) if all_widths else []
        widths = [all_widths[i] for i in idx]
    rows, cols = max(1, len(alphas)), max(1, len(widths))
    height = 2.3 * rows + 0.9
    fig = Figure(figsize=(3.2 * cols + 0.6, height))
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True)
    fig.subplots_adjust(left=0.06 if cols > 2 else 0.15, right=0.95, bottom=0.45 / height,
                        top=1 - 0.55 / height, wspace=0.45, hspace=0.35)
    styles = (("loss_f", "-", "tab:blue", "training loss of f (left)"),
              ("loss_lin", "--", "tab:orange", "training loss of f_lin (left)"),
              ("discrepancy", ":", "tab:red", "batch discrepancy mean ‖f − f_lin‖² (right)"))
    handles = []
    for i, a in enumerate(alphas):
        sel = ok[np.isclose(ok["alpha"].astype(float), a)]
        for j, w in enumerate(widths):
            ax = axes[i, j]
            twin = ax.twinx()
            g = sel[sel["width"] == w]
            cols_present = [c for c, *_ in styles if c in g.columns]
            mean = g.groupby("step")[cols_present].mean()
            handles = []
            for col, ls, color, label in styles:
                if col in mean.columns:
                    target = twin if col == "discrepancy" else ax
                    vals = mean[col].where(mean[col] > 0)
                    handles += target.plot(mean.index, vals, ls, color=color, lw=1.4, label=label)
            if twin.has_data():
                twin.set_yscale("log")
                twin.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(4))
            ax.ticklabel_format(axis="y", style="plain", useOffset=False)
            for axis in (ax, twin):
                axis.tick_params(labelsize=7)
            twin.tick_params(axis="y", colors="tab:red")
            ax.set_title(f"{_alpha_label(float(a))}, n = {w} ({g['seed'].nunique()} seeds)",
                         fontsize=8)
            if i == rows - 1:
                ax.set_xlabel("step", fontsize=8)
    if handles:
        fig.legend(handles, [h.get_label() for h in handles], loc="upper center", ncols=3,
                   fontsize=8, frameon=False)
    else:
        axes[0, 0].text(0.5, 0.5, "no finished runs", ha="center", transform=axes[0, 0].transAxes)
    if save_to is not None:
        save_figure(fig, save_to, tight=False)
    return fig
