"""Figures of the A.1 sweep (paper Figs. 1–3) and of ``weakcorr diagnose``.

Every function takes a tidy table (pandas DataFrame) and returns a matplotlib Figure, built
without pyplot; ``save_to="dir/name"`` also writes ``name.png`` and ``name.pdf``
(:func:`weakcorr.plots.save_figure`).

Tables: the A.1 run table (:func:`weakcorr._a1_report.load_table`: one row per run with
``dataset, depth, activation, width, seed, status`` and the metrics), the A.1 curve table
(``dataset, depth, activation, width, seed, step, deviation``), and the diagnose table
(one row per (width, seed) with ``c02, c03, c11, hg_ratio, error[, error_r]``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import LogFormatter  # noqa: E402

from .plots import save_figure  # noqa: E402

__all__ = ["plot_correlations_vs_width", "plot_deviation_curves", "plot_diagnose_scaling",
           "plot_linearization_vs_width"]

_ORDER_LABEL = {"c2": r"$\mathfrak{C}^{0,2}$", "c3": r"$\mathfrak{C}^{0,3}$"}


def _positive(df: pd.DataFrame, col: str) -> pd.DataFrame:
    if col not in df.columns:
        return df.iloc[0:0]
    vals = pd.to_numeric(df[col], errors="coerce")
    keep = np.isfinite(vals) & (vals > 0)
    return df[keep].assign(**{col: vals[keep]})


def _grid(df: pd.DataFrame, height: float = 2.3):
    depths = sorted(df["depth"].dropna().unique().tolist()) or [None]
    acts = sorted(df["activation"].dropna().unique().tolist()) or [None]
    fig = Figure(figsize=(3.2 * len(acts) + 0.8, height * len(depths) + 1.0),
                 layout="constrained")
    axes = fig.subplots(len(depths), len(acts), squeeze=False)
    return fig, axes, depths, acts


def _select(table: pd.DataFrame, statuses: Sequence[str], dataset: str | None
            ) -> tuple[pd.DataFrame, str | None]:
    """Rows of ``dataset`` (default: the first in the table) whose status is in ``statuses``."""
    df = table[table["status"].isin(list(statuses))]
    if dataset is None and len(df):
        dataset = str(df["dataset"].iloc[0])
    return (df[df["dataset"] == dataset] if dataset is not None else df), dataset


def _panels(df: pd.DataFrame, axes, depths: Sequence, acts: Sequence):
    """(row, column, axes, depth, activation, that panel's rows) for every panel of the grid."""
    for i, depth in enumerate(depths):
        for j, act in enumerate(acts):
            rows = df[(df["depth"] == depth) & (df["activation"] == act)]
            yield i, j, axes[i, j], depth, act, rows


def _panel_title(act: Any, depth: Any) -> str:
    return f"{act}, {depth} hidden layer{'s' if depth != 1 else ''}"


def _loglog_series(ax, g: pd.DataFrame, x: str, y: str, color: str, ls: str, label: str, *,
                   normalise: bool = False) -> bool:
    """Seeds as dots, geometric mean per width as a line; False (nothing drawn) if no value > 0.

    ``normalise``: divide by the geometric mean at the smallest width drawn, so that series of
    different scales start at 1 and their slopes compare on one axis."""
    g = _positive(g, y)
    if g.empty:
        return False
    if normalise:
        first = g[g[x] == g[x].min()][y]
        g = g.assign(**{y: g[y] / float(np.exp(np.log(first).mean()))})
    ax.scatter(g[x].astype(float), g[y], s=9, color=color, alpha=0.35, linewidths=0)
    mean = g.groupby(x)[y].apply(lambda v: float(np.exp(np.log(v).mean())))
    ax.plot(mean.index.astype(float), mean.to_numpy(), ls, marker="o", ms=3.5, color=color,
            lw=1.4, label=label)
    return True


def _log_y(ax) -> None:
    """Log y axis with plain-text labels (e.g. 3e-05): mathtext tick labels are slow to draw."""
    ax.set_yscale("log")
    fmt = LogFormatter(labelOnlyBase=False, minor_thresholds=(1.5, 0.6))
    ax.yaxis.set_major_formatter(fmt)
    ax.yaxis.set_minor_formatter(fmt)


def _finish(ax, widths: Sequence[float], *, log_y: bool = True) -> None:
    ax.set_xscale("log", base=2)
    if log_y:
        _log_y(ax)
    if widths:
        ax.set_xlim(min(widths) / 1.25, max(widths) * 1.25)
        ax.set_xticks(widths, [f"{w:g}" for w in widths])
        ax.tick_params(axis="x", which="minor", bottom=False)
    ax.tick_params(which="both", labelsize=6)
    ax.grid(True, which="major", alpha=0.3)


def plot_correlations_vs_width(table: pd.DataFrame, *, order: str = "c2",
                               dataset: str | None = None,
                               slopes: Mapping[tuple[int, str], str] | None = None,
                               save_to: str | os.PathLike[str] | None = None) -> Figure:
    """Figs. 1 / 3: the correlation of ``order`` (``"c2"`` or ``"c3"``) against width.

    One panel per depth (rows) × activation (columns), log-log, one axis: the exact value
    (solid; Eq. 11 diagonal, RMS over inputs and outputs as in Eq. 25) and the paper's sampled
    estimator (dashed; Eq. 25, whose scale differs by about N^d: it averages over sampled
    parameter pairs instead of summing), each divided by its geometric mean at the smallest
    width, so both start at 1 and a difference in width exponent is a difference in slope.
    Seeds are dots, the line the geometric mean per width.

    Args:
        table: the A.1 run table.
        order: ``"c2"`` or ``"c3"``.
        dataset: the dataset to draw (default: the first in the table).
        slopes: optional panel annotations keyed by (depth, activation).
        save_to: where to write PNG and PDF.
    """
    if order not in _ORDER_LABEL:
        raise ValueError(f"`order` must be 'c2' or 'c3', got {order!r}")
    df, dataset = _select(table, ("ok", "diverged"), dataset)
    fig, axes, depths, acts = _grid(df)
    widths = sorted(df["width"].dropna().astype(float).unique().tolist())
    for i, j, ax, depth, act, g in _panels(df, axes, depths, acts):
        drawn = _loglog_series(ax, g, "width", f"{order}_exact", "tab:blue", "-",
                               "exact (Eq. 11)", normalise=True)
        drawn |= _loglog_series(ax, g, "width", f"{order}_paper", "tab:orange", "--",
                                "paper estimator (Eq. 25)", normalise=True)
        if not drawn:
            ax.text(0.5, 0.5, "≡ 0 at every width", ha="center", fontsize=8,
                    transform=ax.transAxes)
        _finish(ax, widths, log_y=drawn)
        title = _panel_title(act, depth)
        if slopes and (depth, act) in slopes:
            title += f"\n{slopes[(depth, act)]}"
        ax.set_title(title, fontsize=8)
        if i == len(depths) - 1:
            ax.set_xlabel("width $n$", fontsize=8)
        if j == 0:
            ax.set_ylabel(f"{_ORDER_LABEL[order]} / its value at n = {min(widths):g}"
                          if widths else _ORDER_LABEL[order], fontsize=8)
    handles = [matplotlib.lines.Line2D([], [], color="tab:blue", marker="o", ms=3.5,
                                       label="exact, RMS over inputs and outputs"),
               matplotlib.lines.Line2D([], [], color="tab:orange", ls="--", marker="o", ms=3.5,
                                       label="paper's sampled estimator, |D| = 60 per layer")]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8, frameon=False,
               title="each divided by its geometric mean over seeds at the smallest width",
               title_fontsize=7)
    fig.suptitle(f"{_ORDER_LABEL[order]} at initialisation vs width — {dataset}", fontsize=10)
    if save_to is not None:
        save_figure(fig, save_to)
    return fig


def plot_linearization_vs_width(table: pd.DataFrame, *, dataset: str | None = None,
                                save_to: str | os.PathLike[str] | None = None) -> Figure:
    """Fig. 2: C(f, f_lin) of Eq. 24 after training against width (test solid, train dashed)."""
    df, dataset = _select(table, ("ok",), dataset)
    fig, axes, depths, acts = _grid(df)
    widths = sorted(df["width"].dropna().astype(float).unique().tolist())
    for i, j, ax, depth, act, g in _panels(df, axes, depths, acts):
        drawn = _loglog_series(ax, g, "width", "c_test", "tab:red", "-", "test")
        drawn |= _loglog_series(ax, g, "width", "c_train", "tab:purple", "--", "train")
        _finish(ax, widths, log_y=drawn)
        ax.set_title(_panel_title(act, depth), fontsize=8)
        if i == len(depths) - 1:
            ax.set_xlabel("width $n$", fontsize=8)
        if j == 0:
            ax.set_ylabel(r"$C(f, f_{\mathrm{lin}})$ (Eq. 24)", fontsize=8)
    handles = [matplotlib.lines.Line2D([], [], color="tab:red", marker="o", ms=3.5,
                                       label="test (32 points)"),
               matplotlib.lines.Line2D([], [], color="tab:purple", ls="--", marker="o", ms=3.5,
                                       label="train")]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    fig.suptitle(f"Difference between f and f_lin after training vs width — {dataset}",
                 fontsize=10)
    if save_to is not None:
        save_figure(fig, save_to)
    return fig


def plot_deviation_curves(curves: pd.DataFrame, *, panels: Sequence[str] = ("depth", "activation"),
                          title: str | None = None,
                          save_to: str | os.PathLike[str] | None = None) -> Figure:
    """Cor. 4.1: the test deviation RMS(f − f_lin) against the step, one line per width.

    Args:
        curves: columns ``width, seed, step, deviation`` and the ``panels`` columns (rows ×
            columns of the grid; ``()`` for a single panel). Lines are geometric means over seeds.
        panels: the two grid columns, or ``()``.
        title: the figure title.
        save_to: where to write PNG and PDF.
    """
    df = _positive(curves, "deviation")
    if panels:
        rows = sorted(df[panels[0]].dropna().unique().tolist()) or [None]
        cols = sorted(df[panels[1]].dropna().unique().tolist()) or [None]  # as in _grid
    else:
        rows, cols = [None], [None]
    fig = Figure(figsize=(3.2 * len(cols) + 0.8, 2.4 * len(rows) + 1.0), layout="constrained")
    axes = fig.subplots(len(rows), len(cols), squeeze=False)
    widths = sorted(df["width"].dropna().unique().tolist())
    cmap = matplotlib.colormaps["viridis"]
    colors = {w: cmap(0.9 * k / max(1, len(widths) - 1)) for k, w in enumerate(widths)}
    for i, rv in enumerate(rows):
        for j, cv in enumerate(cols):
            ax = axes[i, j]
            g = df if not panels else df[(df[panels[0]] == rv) & (df[panels[1]] == cv)]
            for w in widths:
                gw = g[g["width"] == w]
                if gw.empty:
                    continue
                mean = gw.groupby("step")["deviation"].apply(
                    lambda v: float(np.exp(np.log(v).mean())))
                ax.plot(mean.index, mean.to_numpy(), color=colors[w], lw=1.3, label=f"n = {w}")
            if len(g):
                ax.set_xscale("log")
                _log_y(ax)
            ax.tick_params(labelsize=7)
            ax.grid(True, alpha=0.3)
            if panels:
                ax.set_title(_panel_title(cv, rv), fontsize=8)
            if i == len(rows) - 1:
                ax.set_xlabel("step $s$", fontsize=8)
            if j == 0:
                ax.set_ylabel(r"RMS$(f - f_{\mathrm{lin}})$ on test", fontsize=8)
    if widths:
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right center", fontsize=7, frameon=False)
    else:
        axes[0, 0].text(0.5, 0.5, "no deviation curves", ha="center",
                        transform=axes[0, 0].transAxes)
    fig.suptitle(title or "Deviation from the linearization during training (Cor. 4.1)",
                 fontsize=10)
    if save_to is not None:
        save_figure(fig, save_to)
    return fig


_DIAG_PANELS = (("error", "RMS$(F - F_{lin})$ after $S$ steps"), ("c02", r"$\mathfrak{C}^{0,2}$"),
                ("c03", r"$\mathfrak{C}^{0,3}$"), ("c11", r"$\|\mathfrak{C}^{1,1}\|$"),
                ("hg_ratio", r"$\|\nabla^2 f\| / \|\nabla f\|$"),
                ("error_r", r"RMS$(F - F_{lin})$, lr$\cdot r(n)$"))


def plot_diagnose_scaling(table: pd.DataFrame, *, fits: Mapping[str, tuple[float, str]] | None = None,
                          save_to: str | os.PathLike[str] | None = None) -> Figure:
    """The diagnose quantities against width (log-log), one panel each, seeds as dots.

    Args:
        table: one row per (width, seed) with the columns of the panels present.
        fits: ``{column: (exponent, label)}`` drawn as a dashed power law through the
            geometric mean at the middle width.
        save_to: where to write PNG and PDF.
    """
    panels = [(c, lab) for c, lab in _DIAG_PANELS if c in table.columns]
    fig = Figure(figsize=(3.3 * 3, 2.7 * ((len(panels) + 2) // 3) + 0.5), layout="constrained")
    axes = fig.subplots((len(panels) + 2) // 3, 3, squeeze=False).ravel()
    widths = sorted(table["width"].dropna().astype(float).unique().tolist())
    for ax, (col, label) in zip(axes, panels):
        g = _positive(table, col)
        ax.set_title(label, fontsize=9)
        if g.empty:
            ax.text(0.5, 0.5, "identically 0 / not measured", ha="center", fontsize=8,
                    transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        _loglog_series(ax, g, "width", col, "tab:blue", "-", "geometric mean over seeds")
        if fits and col in fits and np.isfinite(fits[col][0]):
            mean = g.groupby("width")[col].apply(lambda v: float(np.exp(np.log(v).mean())))
            w0 = float(mean.index[len(mean) // 2])
            grid = np.geomspace(min(widths), max(widths), 30)
            ax.plot(grid, mean.iloc[len(mean) // 2] * (grid / w0) ** fits[col][0], "--",
                    color="black", lw=1, label=fits[col][1])
            ax.legend(fontsize=7, loc="best")
        _finish(ax, widths)
        ax.set_xlabel("width $n$", fontsize=8)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    if save_to is not None:
        save_figure(fig, save_to)
    return fig
