"""The Fig. 4 ablation table of docs/fig4.md, from the committed run records in results/.

Each row is one sweep directory (or a derived quantity), each cell the slope of
MSE_test(f, f_lin) against width (paper Eq. 30, 31) for one alpha with its 95 % seed-bootstrap
CI, from :func:`weakcorr.analysis.fit_power_law`; then the differences that say which cause
moves which slope (difference of two independent fits, CI from their half-widths added in
quadrature), and the float32 / float64 ratio run by run (same seeds: the same networks and
batches).

    python scripts/fig4_table.py [--results results] [--figure docs/fig4_precision.png]
"""

from __future__ import annotations

import argparse
import math
import pathlib

import numpy as np
import pandas as pd

from weakcorr import analysis

PAPER = {0.0: -1.14, -0.25: -1.14, -0.5: -1.3, -0.75: -1.73, -1.0: -2.72}
ROWS = [  # (directory[@min_width], what it is)
    ("cpu-widths", "widths 64–1024, MNIST-5k, 250 steps (8 epochs), float32"),
    ("cpu-widths@256", "widths 256–1024 of the row above"),
    ("paper-widths-cpu", "widths 2048–4096, MNIST-5k, 250 steps (8 epochs), float32"),
    ("paper-widths-cpu-float64", "widths 2048–4096, MNIST-5k, 250 steps, float64"),
    ("ablation-one-epoch", "widths 256–1024, MNIST-5k, 31 steps (≤ 1 epoch), float32"),
    ("ablation-teacher-reuse", "widths 256–1024, teacher 784→10, 4,000 points (8 epochs)"),
    ("ablation-teacher-stream", "widths 256–1024, teacher 784→10, 32,000 points (no reuse)"),
    ("paper-widths-all", "the paper's 14 widths 2048–19484, MNIST-5k, 250 steps, float32"),
]
DIFFS = [  # (label, row a, row b): slope(b) - slope(a)
    ("width range: 2048–4096 minus 64–1024", "cpu-widths", "paper-widths-cpu"),
    ("float64 minus float32 (2048–4096)", "paper-widths-cpu", "paper-widths-cpu-float64"),
    ("one epoch minus 8 epochs (MNIST-5k 256–1024; also 8x fewer steps)", "cpu-widths@256",
     "ablation-one-epoch"),
    ("teacher minus MNIST-5k (256–1024, both 8 epochs)", "cpu-widths@256",
     "ablation-teacher-reuse"),
    ("no reuse minus 8 epochs (teacher, same steps)", "ablation-teacher-reuse",
     "ablation-teacher-stream"),
]


def fits_of(root: pathlib.Path, name: str) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """The runs of ``results/DIR`` (``DIR@W``: only widths >= W) and their fits per alpha."""
    directory, _, min_width = name.partition("@")
    if not any((root / directory / "runs").glob("*.json")):
        return None
    table = analysis.load_table(root / directory)
    if min_width:
        table = table[table["width"] >= int(min_width)]
    return table, analysis.fit_power_law(table, x="width", y="mse_test", by="alpha")


def _cell(fit: pd.Series | None) -> str:
    if fit is None or not math.isfinite(fit["slope"]):
        return "—"
    if not math.isfinite(fit["ci_low"]):
        return f"{fit['slope']:.2f}"
    return f"{fit['slope']:.2f} [{fit['ci_low']:.2f}, {fit['ci_high']:.2f}]"


def _by_alpha(fits: pd.DataFrame) -> dict[float, pd.Series]:
    return {round(float(r["alpha"]), 6): r for _, r in fits.iterrows()}


def precision_figure(root: pathlib.Path, save_to: str) -> None:
    """α = −1 (and α = 0) MSE_test against width over both width ranges, float32 and float64:
    geometric means over seeds, every seed as a small marker."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from weakcorr import plots

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    series = [("cpu-widths", "float32", -1.0, "o"), ("paper-widths-cpu", "float32", -1.0, "o"),
              ("paper-widths-cpu-float64", "float64", -1.0, "s"),
              ("cpu-widths", "float32", 0.0, "o"), ("paper-widths-cpu", "float32", 0.0, "o")]
    labelled = set()
    for name, dtype, alpha, marker in series:
        got = fits_of(root, name)
        if got is None:
            continue
        t = got[0]
        t = t[(t["status"] == "ok") & ((t["alpha"] - alpha).abs() < 1e-8)]
        if t.empty:
            continue
        colour = plots.alpha_color(alpha)
        face = colour if dtype == "float32" else "white"
        g = t.groupby("width")["mse_test"].apply(lambda v: float(np.exp(np.log(v).mean())))
        label = f"α = {alpha:g}, {dtype}"
        ax.scatter(t["width"], t["mse_test"], s=8, color=colour, alpha=0.35)
        ax.plot(g.index, g.values, marker=marker, color=colour, mfc=face, ls="-" if
                dtype == "float32" else "--", label=None if label in labelled else label)
        labelled.add(label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("width n")
    ax.set_ylabel("MSE_test(f, f_lin) (Eq. 30)")
    ax.set_title("float32 against float64 on MNIST-5k (250 steps, lr = 0.1·n^α)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(save_to, dpi=130)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results")
    ap.add_argument("--figure", default=None, metavar="PNG",
                    help="also draw the float32/float64 figure of docs/fig4.md to PNG")
    args = ap.parse_args()
    root = pathlib.Path(args.results)
    if args.figure:
        precision_figure(root, args.figure)
    alphas = sorted(PAPER, reverse=True)
    header = "| sweep | runs (diverged) | " + " | ".join(f"α = {a:g}" for a in alphas) + " |"
    lines = [header, "|" + "---|" * (len(alphas) + 2)]
    lines.append("| paper (App. A.2): widths 2048–19484, full MNIST (0.53 epochs) | 7,000 | "
                 + " | ".join(f"{PAPER[a]:.2f}" for a in alphas) + " |")
    found: dict[str, dict[float, pd.Series]] = {}
    tables: dict[str, pd.DataFrame] = {}
    for name, what in ROWS:
        got = fits_of(root, name)
        if got is None:
            lines.append(f"| {what} (`results/{name.split('@')[0]}`) | not run | " + " | ".join(
                "—" for _ in alphas) + " |")
            continue
        table, fits = got
        tables[name], found[name] = table, _by_alpha(fits)
        n_div = int((table["status"] == "diverged").sum())
        lines.append(f"| {what} (`results/{name.split('@')[0]}`) | {len(table)} ({n_div}) | " + " | ".join(
            _cell(found[name].get(a)) for a in alphas) + " |")
    if "paper-widths-cpu" in found:
        half = {a: f.copy() for a, f in found["paper-widths-cpu"].items()}
        for f in half.values():
            for k in ("slope", "ci_low", "ci_high"):
                f[k] = f[k] / 2
        lines.append("| √MSE_test (a root quantity) of widths 2048–4096, float32: exactly half | "
                     "same | " + " | ".join(_cell(half.get(a)) for a in alphas) + " |")
    print("\n".join(lines))
    print()
    print("| difference of slopes | " + " | ".join(f"α = {a:g}" for a in alphas) + " |")
    print("|" + "---|" * (len(alphas) + 1))
    for label, a_name, b_name in DIFFS:
        if a_name not in found or b_name not in found:
            continue
        cells = []
        for a in alphas:
            fa, fb = found[a_name].get(a), found[b_name].get(a)
            if fa is None or fb is None or not all(
                    math.isfinite(v) for v in (fa["ci_low"], fb["ci_low"])):
                cells.append("—")
                continue
            d = fb["slope"] - fa["slope"]
            hw = math.hypot((fa["ci_high"] - fa["ci_low"]) / 2, (fb["ci_high"] - fb["ci_low"]) / 2)
            cells.append(f"{d:+.2f} ± {hw:.2f}")
        print(f"| {label} | " + " | ".join(cells) + " |")
    if "paper-widths-cpu" in tables and "paper-widths-cpu-float64" in tables:
        print()
        print("float32 / float64 MSE_test run by run (geometric mean over seeds; same networks "
              "and batches):")
        keys = ["width", "alpha", "seed"]
        t32 = tables["paper-widths-cpu"].query("status == 'ok'").set_index(keys)["mse_test"]
        t64 = tables["paper-widths-cpu-float64"].query("status == 'ok'").set_index(keys)[
            "mse_test"]
        both = pd.concat({"f32": t32, "f64": t64}, axis=1).dropna()
        both["log_ratio"] = np.log(both["f32"] / both["f64"])
        for (w, a), g in both.groupby(level=["width", "alpha"]):
            print(f"  alpha {a:+.2f} width {w:5d}: x{math.exp(g['log_ratio'].mean()):.3f} "
                  f"(runs {math.exp(g['log_ratio'].min()):.3f}–{math.exp(g['log_ratio'].max()):.3f}"
                  f"), MSE_test float64 {math.exp(np.log(g['f64']).mean()):.3g}")


if __name__ == "__main__":
    main()
