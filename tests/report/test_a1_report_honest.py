"""A.1 report: exact C^{0,d} and the paper's estimator on one axis; reports of diverged runs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from weakcorr import _a1_plots, _a1_report


def _table(status="ok"):
    rows = []
    for w in (4, 8, 16):
        for s in (0, 1):
            rows.append({"run_id": f"{w}{s}", "status": status, "dataset": "d", "depth": 1,
                         "activation": "erf", "width": w, "seed": s,
                         "c2_exact": 2.0 * w ** -1.0 * (1 + 0.1 * s),
                         "c2_paper": 5e-6 * w ** -0.5 * (1 + 0.1 * s)})
    return pd.DataFrame(rows)


def test_exact_and_estimator_share_one_axis_normalised_at_the_smallest_width():
    """Before: two y axes of different scales, where slopes -1 and -0.5 looked alike."""
    fig = _a1_plots.plot_correlations_vs_width(_table(), order="c2")
    (ax,) = [a for a in fig.axes if a.get_title()]
    assert len(fig.axes) == 1  # no twin axis
    exact, est = (ln for ln in ax.get_lines() if len(ln.get_xdata()))
    np.testing.assert_allclose(exact.get_ydata(), [1.0, 0.5, 0.25], rtol=1e-12)
    np.testing.assert_allclose(est.get_ydata(), [1.0, 2 ** -0.5, 0.5], rtol=1e-12)
    assert "its value at n = 4" in ax.get_ylabel()


def test_panel_titles_give_both_exponents():
    fits = _a1_report.fit_exponents(_table(), n_boot=50)
    slopes = _a1_report._panel_slopes(fits, "c2")
    assert slopes[(1, "erf")].startswith("exact -1.00 [") and ", est. -0.50 [" in slopes[
        (1, "erf")]


def test_a1_report_of_failed_runs_is_written(tmp_path, monkeypatch):
    from weakcorr.results import RunStore, run_id

    monkeypatch.setattr(_a1_plots, "save_figure", lambda fig, base, **k: [])
    store = RunStore(tmp_path)
    ids = []
    for w in (4, 8):
        cfg = {"model": {"width": w, "depth": 1, "activation": "erf"}, "data": {"name": "d"},
               "seed": 0}
        ids.append(run_id(cfg))
        store.write(ids[-1], {"kind": "a1", "status": "failed", "error": "boom", "seed": 0,
                              "metrics": {}, "logs": [], "run_id": ids[-1], "config": cfg})
    summary = _a1_report.write_report(tmp_path, n_boot=20)
    md = (tmp_path / "report.md").read_text()
    assert "2 of 2 runs present: 0 ok, 0 diverged, 2 failed" in md
    assert f"{ids[0]}: failed d depth 1 erf n=4 seed 0: boom" in md
    assert summary["runs"]["failed"] == 2 and not math.isnan(summary["runs"]["present"])
