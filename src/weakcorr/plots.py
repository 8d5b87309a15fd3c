"""Figures of a sweep: Fig. 4-style width scaling and training curves.

Every ``plot_*`` function takes a tidy table (:func:`weakcorr.analysis.load_table` or
:func:`weakcorr.analysis.load_logs`) and returns a :class:`matplotlib.figure.Figure`; with
``save_to="dir/name"`` it also writes ``name.png`` and ``name.pdf``. Figures are built without
pyplot (no GUI backend, no global state).
"""

from __future__ import annotations

import math
import numbers
import os
import pathlib
from collections.abc import Sequence

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .analysis import fit_power_law, group_keys  # noqa: E402
from ._files import atomic_open  # noqa: E402

__all__ = ["ALPHA_COLORS", "alpha_color", "plot_training_curves", "plot_width_scaling",
           "save_figure"]

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
        with atomic_open(path, "wb") as fh:  # random temp name, never a planted symlink
            fig.savefig(fh, format=path.suffix[1:], dpi=dpi, bbox_inches=bbox)
    return paths


#: Fixed colours of the paper's α (Fig. 4), the same in every figure of every sweep.
ALPHA_COLORS: dict[float, str] = {0.0: "#440154", -0.25: "#3b528b", -0.5: "#21918c",
                                  -0.75: "#5ec962", -1.0: "#e0a100"}


def alpha_color(alpha: float) -> tuple[float, float, float, float] | str:
    """The colour of ``alpha``: :data:`ALPHA_COLORS` for the paper's α (within 1e-8), else a
    fixed function of the value (the ``plasma`` colormap over α ∈ [−2, 1]), so that an α has
    one colour in every figure whatever other α a sweep has."""
    for a, c in ALPHA_COLORS.items():
        if abs(alpha - a) <= 1e-8:
            return c
    t = min(1.0, max(0.0, (1.0 - alpha) / 3.0)) if math.isfinite(alpha) else 0.5
    return matplotlib.colormaps["plasma"](0.9 * t)


def _alpha_label(a: float) -> str:
    return f"α = {a:g}".replace("-", "−")


def _num(v: float) -> str:
    return f"{v:.2f}".replace("-", "−")


def _is_number(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


def _same_key(a: object, b: object) -> bool:
    if _is_number(a) and _is_number(b):
        fa, fb = float(a), float(b)  # type: ignore[arg-type]
        if math.isnan(fa) or math.isnan(fb):
            return math.isnan(fa) and math.isnan(fb)
        return abs(fa - fb) <= 1e-8 * max(1.0, abs(fa), abs(fb))
    return a == b


def _ordered(keys: Sequence[object]) -> list[object]:
    """Group keys in display order: numbers descending (as in the paper), others by name."""
    uniq = [k for k in dict.fromkeys(keys) if not (k is None or k is pd.NA
                                                   or (_is_number(k) and math.isnan(float(k))))]
    if all(_is_number(k) for k in uniq):
        return sorted(uniq, key=float, reverse=True)
    return sorted(uniq, key=str)


def _why_empty(rows: pd.DataFrame, y: str) -> str:
    """Why a group has no point to draw, from its runs' statuses."""
    counts = rows["status"].value_counts()
    n = len(rows)
    for status, word in (("diverged", "diverged"), ("failed", "failed")):
        if counts.get(status, 0) == n:
            return f"all {n} runs {word}" if n > 1 else f"its run {word}"
    parts = [f"{counts[s]} {s}" for s in ("diverged", "failed") if counts.get(s, 0)]
    if counts.get("ok", 0):
        parts.append(f"{counts['ok']} ok with {y} ≤ 0 or NaN")
    others = n - sum(int(counts.get(s, 0)) for s in ("ok", "diverged", "failed"))
    if others:
        parts.append(f"{others} with another status")
    return "no usable runs (" + ", ".join(parts) + ")"


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

    Each seed is a small marker, the geometric mean over seeds per width (exp of the mean of
    log y, the average that matches a least-squares fit in log space) a larger one, and the
    dashed line the power-law fit (:func:`weakcorr.analysis.fit_power_law`) with its slope and
    95 % CI in the legend, which sits outside the axes. Only runs with status ``ok`` and
    positive finite ``y`` are drawn. α has a fixed colour (:func:`alpha_color`), the same in
    every sweep; other ``by`` columns are coloured in the order of their values. A group whose
    runs all diverged keeps its colour and gets a legend entry saying so; with no drawable
    run at all the axes are linear and say so.

    Args:
        df: the tidy run table.
        y: the metric (default ``mse_test``, Eq. 30).
        x: the width column.
        by: one curve per value of this column (numbers grouped as in
            :func:`weakcorr.analysis.group_keys`; strings such as ``"activation"`` work too).
        fits: precomputed fits (default: computed here).
        title: the axes title (None: none).
        save_to: if given, save PNG and PDF there (see :func:`save_figure`).

    Returns:
        The figure.
    """
    fits = fit_power_law(df, x=x, y=y, by=by) if fits is None else fits
    fig = Figure(figsize=(9.0, 5.0), layout="constrained")
    ax = fig.add_subplot()
    table = df.assign(_key=group_keys(df[by]))
    keys = _ordered(list(table["_key"]))
    vals = pd.to_numeric(table[y], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    xv = pd.to_numeric(table[x], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    usable = ((table["status"] == "ok").to_numpy(dtype=bool, na_value=False)
              & np.isfinite(vals) & (vals > 0) & np.isfinite(xv) & (xv > 0))
    ok = table[usable].assign(_x=xv[usable], _y=vals[usable])
    cmap = matplotlib.colormaps["viridis"]
    handles, labels = [], []
    for i, key in enumerate(keys):
        color = (alpha_color(float(key)) if by == "alpha" and _is_number(key)  # type: ignore[arg-type]
                 else cmap(0.85 * i / max(1, len(keys) - 1)))
        label = (_alpha_label(float(key)) if by == "alpha" and _is_number(key)  # type: ignore[arg-type]
                 else f"{by} = {key}")
        g = ok[ok["_key"].map(lambda k, key=key: _same_key(k, key))]
        if g.empty:
            rows = table[table["_key"].map(lambda k, key=key: _same_key(k, key))]
            (h,) = ax.plot([], [], "o", color=color, mfc="none")
            handles.append(h)
            labels.append(f"{label}: {_why_empty(rows, y)}")
            continue
        ax.scatter(g["_x"], g["_y"], s=12, color=color, alpha=0.35, linewidths=0)
        gmean = np.exp(np.log(g["_y"]).groupby(g["_x"]).mean())
        ax.plot(gmean.index, gmean.to_numpy(), "o", color=color, ms=6,
                markeredgecolor="black", markeredgewidth=0.5)
        fit = next((r for _, r in fits.iterrows() if _same_key(r[by], key)), None) \
            if len(fits) and by in fits.columns else None
        if fit is not None and math.isfinite(fit["slope"]):
            grid = np.geomspace(g["_x"].min(), g["_x"].max(), 50)
            ax.plot(grid, np.exp(fit["intercept"]) * grid ** fit["slope"], "--", color=color,
                    lw=1.5)
            label += f": slope {_num(fit['slope'])}"
            if math.isfinite(fit["ci_low"]):
                label += f" [{_num(fit['ci_low'])}, {_num(fit['ci_high'])}]"
            else:
                label += " (no CI: 1 seed)" if fit.get("n_seeds", 2) < 2 else " (no CI)"
            (h,) = ax.plot([], [], "o--", color=color, markeredgecolor="black",
                           markeredgewidth=0.5)
        else:
            label += ": no slope (needs ≥ 2 widths)"
            (h,) = ax.plot([], [], "o", color=color, markeredgecolor="black",
                           markeredgewidth=0.5)
        handles.append(h)
        labels.append(label)
    if not ok.empty:  # log axes need a positive value (a sweep whose runs all diverged has none)
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel(_LABELS.get(x, x))
    ax.set_ylabel(_LABELS.get(y, y))
    widths = sorted(ok["_x"].unique())
    if 0 < len(widths) <= 16:
        ax.set_xticks(widths, [f"{w:g}" for w in widths], minor=False)
        ax.tick_params(axis="x", which="minor", bottom=False, labelbottom=False)
        ax.tick_params(axis="x", labelrotation=45 if len(widths) > 6 else 0)
    if title:
        ax.set_title(title, fontsize=11)
    ax.grid(True, which="major", alpha=0.3)
    if handles:
        fig.legend(handles, labels, loc="outside right upper", fontsize=8, title_fontsize=8,
                   title="small markers: seeds\nlarge dots: geometric mean over seeds\n"
                         "dashed: fit of log y on log n,\nslope [95 % CI over seeds]",
                   alignment="left")
    if ok.empty:
        ax.text(0.5, 0.5, "no finished runs with positive values", ha="center",
                transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
    if save_to is not None:
        save_figure(fig, save_to)
    return fig


#: What the training-curve lines are (the figure's legend title says it).
GEOMETRIC_NOTE = "lines: geometric means over seeds (status ok);\ny axes shared across panels"


def _geometric_means(g: pd.DataFrame, cols: Sequence[str]) -> pd.DataFrame:
    """Per step, exp(mean log) over seeds of each column's positive finite values (NaN where a
    step has none): losses and discrepancies spread over decades across seeds, where an
    arithmetic mean follows the largest seed."""
    if not cols:
        return pd.DataFrame(index=pd.Index([], name="step"))
    vals = g[list(cols)].apply(pd.to_numeric, errors="coerce").astype(float)
    logs = np.log(vals.where(vals > 0))
    return np.exp(logs.groupby(g["step"]).mean())


def plot_training_curves(
    logs: pd.DataFrame,
    *,
    alpha: float | Sequence[float] | None = None,
    widths: Sequence[int] | None = None,
    max_widths: int = 4,
    save_to: str | os.PathLike[str] | None = None,
) -> Figure:
    """Training curves: losses of f and f_lin and their discrepancy against step.

    One panel per width (columns) and per α (rows), all panels on the same y scales (left
    and right); each line is the geometric mean over the seeds of runs with status ``ok``
    (exp of the mean log at each step, as the legend says): the training losses of f (solid)
    and f_lin (dashed) on the left
    (linear) axis, the mini-batch discrepancy mean_b ‖f − f_lin‖² (dotted) and, where logged
    (``logging.eval_every``), the test-set MSE(f, f_lin) of Eq. 30 (dash-dotted) on the right
    (log) one. Each curve uses the steps at which it was logged.

    Args:
        logs: the long log table (:func:`weakcorr.analysis.load_logs`).
        alpha: the α (or αs) to show (default: all in the table, one row each).
        widths: the widths to show (default: up to ``max_widths`` spread over the range).
        max_widths: cap on the number of columns when ``widths`` is None.
        save_to: if given, save PNG and PDF there.

    Returns:
        The figure.

    Raises:
        ValueError: for an ``alpha`` or width without finished runs in ``logs``.
    """
    ok = logs[logs["status"] == "ok"] if "status" in logs.columns else logs
    ok = ok.assign(alpha=group_keys(pd.to_numeric(ok["alpha"], errors="coerce").astype(float)))
    all_alphas = _ordered(list(ok["alpha"]))
    if alpha is None:
        alphas = all_alphas
    else:
        wanted = [alpha] if np.ndim(alpha) == 0 else list(alpha)  # type: ignore[arg-type]
        for w in wanted:
            if not _is_number(w) or not math.isfinite(float(w)):
                raise ValueError(f"`alpha` must be a number or a list of numbers, got {alpha!r}")
            if not any(_same_key(float(w), a) for a in all_alphas):
                shown = ", ".join(f"{float(a):g}" for a in all_alphas) or "none"
                raise ValueError(f"`alpha` {float(w):g} has no finished runs in the logs; "
                                 f"α with finished runs: {shown}")
        alphas = [a for a in all_alphas if any(_same_key(float(w), a) for w in wanted)]
    all_widths = sorted(ok["width"].dropna().unique())
    if widths is None:
        idx = np.unique(np.linspace(0, len(all_widths) - 1, min(max_widths, len(all_widths)))
                        .round().astype(int)) if all_widths else []
        widths = [all_widths[i] for i in idx]
    else:
        widths = list(widths)
        for w in widths:
            if w not in all_widths:
                raise ValueError(f"`widths` has {w!r}, which has no finished runs in the logs; "
                                 f"widths with finished runs: {[int(v) for v in all_widths]}")
    rows, cols = max(1, len(alphas)), max(1, len(widths))
    fig = Figure(figsize=(3.3 * cols + 0.9, 2.3 * rows + 0.9), layout="constrained")
    # One y scale per side for every panel, so that panels compare at a glance.
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
    twins: list = []
    right_range = (math.inf, -math.inf)
    styles = (("loss_f", "-", "tab:blue", "training loss of f (left)"),
              ("loss_lin", "--", "tab:orange", "training loss of f_lin (left)"),
              ("discrepancy", ":", "tab:red", "batch discrepancy mean ‖f − f_lin‖² (right)"),
              ("mse_test", "-.", "tab:purple", "test MSE(f, f_lin), Eq. 30 (right)"))
    handles: dict[str, object] = {}
    for i, a in enumerate(alphas):
        sel = ok[ok["alpha"].map(lambda k, a=a: _same_key(k, a))]
        for j, w in enumerate(widths):
            ax = axes[i, j]
            twin = ax.twinx()  # twins share their range below (sharey breaks twinx log axes)
            twins.append(twin)
            g = sel[sel["width"] == w]
            cols_present = [c for c, *_ in styles if c in g.columns]
            mean = _geometric_means(g, cols_present)
            for col, ls, color, label in styles:
                if col not in mean.columns:
                    continue
                right = col in ("discrepancy", "mse_test")
                vals = mean[col].dropna()  # a curve logged at fewer steps has NaN elsewhere
                if right:
                    vals = vals[vals > 0]
                if vals.empty:
                    continue
                if right:
                    right_range = (min(right_range[0], float(vals.min())),
                                   max(right_range[1], float(vals.max())))
                (h,) = (twin if right else ax).plot(
                    vals.index, vals.to_numpy(), ls, color=color, lw=1.4, label=label,
                    marker="o" if len(vals) < 3 else None, ms=3)  # one point: no line
                handles.setdefault(label, h)
            if twin.has_data():
                twin.set_yscale("log")
                # A few decades ticks: minor log ticks over ~10 decades cost seconds to draw.
                twin.yaxis.set_major_locator(matplotlib.ticker.LogLocator(numticks=5))
                twin.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(4))
            ax.ticklabel_format(axis="y", style="plain", useOffset=False)
            for axis in (ax, twin):
                axis.tick_params(labelsize=7)
            twin.tick_params(axis="y", colors="tab:red", labelright=j == cols - 1)
            ax.set_title(f"{_alpha_label(float(a))}, n = {w} ({g['seed'].nunique()} seeds)",  # type: ignore[arg-type]
                         fontsize=8)
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
            if i == rows - 1:
                ax.set_xlabel("step", fontsize=8)
            if j == 0:
                ax.set_ylabel("training loss", fontsize=8)
            if j == cols - 1:
                twin.set_ylabel("‖f − f_lin‖²", fontsize=8, color="tab:red")
    if math.isfinite(right_range[0]):
        lo, hi = right_range
        pad = (hi / lo) ** 0.05 if hi > lo else 2.0
        for twin in twins:
            if twin.has_data():
                twin.set_ylim(lo / pad, hi * pad)
    if handles:
        order = [lab for *_, lab in styles if lab in handles]
        fig.legend([handles[lab] for lab in order], order, loc="outside upper center",
                   ncols=min(cols, 2) if cols <= 2 else min(4, len(order)), fontsize=8,
                   frameon=False, title=GEOMETRIC_NOTE, title_fontsize=8)
    else:
        axes[0, 0].text(0.5, 0.5, "no finished runs", ha="center", transform=axes[0, 0].transAxes)
    if save_to is not None:
        save_figure(fig, save_to)
    return fig
