"""Verdicts say 'consistent' / 'not consistent' only when the interval decides (issue 16).

Each test below printed a vacuous "✓ consistent" before weakcorr.fits.decide: an interval that
holds both a value meeting the claim and one missing it by the distance the check resolves.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from weakcorr import _a1_report, _diagnose
from weakcorr._diagnose import Exponent, Measurement, analyze, bound_verdict, combine_checks

WIDTHS = (16, 32, 64, 128, 256)


def test_bound_with_a_huge_interval_is_inconclusive_not_a_pass():
    # Before: "C^{0,2} ~ n^-0.39 [-4.35, +3.56] vs ≤ -1.00 (loosest -0.50) ✓" and a pass.
    exp = Exponent("c02", "fit", (-0.39, -4.35, 3.56), (-0.39, -4.35, 3.56), "exact")
    ok, text = bound_verdict(exp, 1.0, (1.0, 0.5, 1.5))
    assert ok == "inconclusive" and "✓" not in text
    assert "CI too wide: need more seeds/widths" in text and "[-4.35, +3.56]" in text
    assert combine_checks([True, ok, True]).startswith("inconclusive (CI too wide")
    assert combine_checks([False, ok]) == "not consistent"


def test_bound_with_a_narrow_interval_still_decides():
    at = Exponent("c02", "fit", (-1.0, -1.1, -0.9), (-1.0, -1.1, -0.9), "exact")
    assert bound_verdict(at, 1.0, (1.0, 0.9, 1.1))[0] is True
    above = Exponent("c02", "fit", (-0.2, -0.3, -0.1), (-0.2, -0.3, -0.1), "exact")
    assert bound_verdict(above, 1.0, (1.0, 0.9, 1.1))[0] is False


def _flat(name: str, seeds: int = 6, seed: int = 0, noise: float = 0.6) -> list[Measurement]:
    """``name`` ~ n^0 with large noise; the rest follow clean laws (error ~ 1/n)."""
    rng = np.random.default_rng(seed)
    out = []
    for w in WIDTHS:
        for s in range(seeds):
            vals = {"c02": w ** -1.0, "c03": w ** -1.5, "c11": w ** -0.5, "hg_ratio": w ** -0.5,
                    "error": w ** -1.0}
            vals[name] = math.exp(noise * rng.standard_normal())
            curve = [(k, vals["error"] * math.exp(0.01 * rng.standard_normal()))
                     for k in range(1, 41)]
            out.append(Measurement(width=w, seed=s, lr=0.1, curve=curve, **vals))
    return out


def test_ratio_that_does_not_decay_is_not_consistent_with_going_to_zero():
    # Before: "Hessian/gradient ratio → 0: CONSISTENT" whenever the CI's low end was < 0.
    res = analyze(_flat("hg_ratio"), n_boot=300)
    e, lo, hi = res.exponents["hg_ratio"].upper
    assert lo < 0 < hi  # the precondition: the interval holds 0 (no decay)
    v = next(v for v in res.verdicts if v.claim.startswith("Hessian/gradient"))
    assert v.verdict.startswith("inconclusive (CI too wide: need more seeds/widths")
    assert v.line().startswith("Hessian/gradient ratio → 0 (Liu et al. 2020): INCONCLUSIVE (")


def test_error_that_does_not_decrease_is_inconclusive_linearization():
    # Before: "Linearization: CONSISTENT" as soon as m(n)'s upper end was > 0.
    res = analyze(_flat("error"), n_boot=300)
    e, lo, hi = res.exponents["error"].upper
    assert lo < 0 < hi
    v = res.verdicts[0]
    assert v.claim.startswith("Linearization") and v.verdict.startswith("inconclusive")


def test_a1_verdict_with_a_vacuous_interval_reads_inconclusive():
    """A.1: C^{0,2} noisy over two seeds and four widths; before, 'consistent' (✓)."""
    rng = np.random.default_rng(5)
    rows = []
    for w in (4, 8, 16, 32):
        for s in (0, 1):
            rows.append({"dataset": "d", "depth": 1, "activation": "erf", "width": w, "seed": s,
                         "status": "ok", "c2_exact": float(w ** -1 * math.exp(2 * rng.normal())),
                         "c3_exact": float(w ** -1.5), "c11_same": float(w ** -0.5),
                         "c_test": float(w ** -1.0 * math.exp(0.01 * rng.normal()))})
    table = pd.DataFrame(rows)
    fits = _a1_report.fit_exponents(table, n_boot=300)
    c2 = fits[fits["quantity"] == "c2_exact"].iloc[0]
    assert c2["ci_high"] - c2["ci_low"] > 1.0 and c2["ci_low"] < -1.0 < c2["ci_high"]
    (line,) = _a1_report._verdicts(fits, pd.DataFrame(columns=["dataset", "depth",
                                                                "activation", "width"]))
    assert "Thm 3.1 (Eq. 14) inconclusive (CI too wide" in line
    assert "C^{0,2} ~ n^" in line and "✓" not in line.split("C^{0,2} ~ n^")[1].split(";")[0]


def test_cor41_uses_the_shared_mean_interval():
    res = analyze(_flat("c02", noise=0.01), n_boot=200)
    slopes = [_diagnose.late_slope(m.curve) for m in res.measurements if m.width == 256]
    from weakcorr.fits import mean_interval

    assert res.deviation_slopes[256] == mean_interval(slopes, 0.95)


def test_diagnose_names_diverged_runs(tmp_path, monkeypatch):
    from weakcorr import _a1_plots

    monkeypatch.setattr(_a1_plots, "save_figure", lambda fig, base, **k: [])
    ms = _flat("c02", noise=0.01)
    for m in ms[:2]:
        m.status, m.error, m.curve = "diverged", None, []
    res = analyze(ms, n_boot=100)
    assert res.problem_runs() == ["n = 16, seed 0: diverged (lr 0.1)",
                                  "n = 16, seed 1: diverged (lr 0.1)"]
    assert "2 of 30 runs diverged (n=16/seed 0, n=16/seed 1), left out of the error fit" in \
        res.verdicts[0].detail
    # Their correlations were measured before training: still fitted (all 6 seeds at n = 16).
    assert res.exponents["c02"].status == "fit"
    md = _diagnose.write_report(res, tmp_path)["markdown"].read_text()
    assert "## Diverged or failed runs\n\n- n = 16, seed 0: diverged" in md
    assert "2 of 30 runs are left out of the error and deviation fits" in md


def test_diagnose_of_runs_that_all_diverged_keeps_the_correlations():
    ms = _flat("c02", noise=0.01)
    for m in ms:
        m.status, m.error, m.curve = "diverged", None, []
    res = analyze(ms, n_boot=50)
    assert res.exponents["c02"].status == "fit" and res.exponents["error"].status != "fit"
    assert res.verdicts[0].verdict == "not assessed"
    assert "30 of 30 runs diverged" in res.verdicts[0].detail
