"""weakcorr.fits against references computed another way (closed forms, scipy, brute force)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from weakcorr import fits


def test_exact_power_law_gives_exact_slope():
    n = np.array([16.0, 32.0, 64.0, 128.0, 256.0])
    y = 3.0 * n ** -1.75
    f = fits.fit_loglog(n, y, seeds=None, residual_fallback=True)
    assert f.slope == pytest.approx(-1.75, abs=1e-13)
    assert f.intercept == pytest.approx(math.log(3.0), abs=1e-12)
    assert f.r2 == pytest.approx(1.0, abs=1e-14)
    # Zero residuals: the residual interval collapses onto the slope.
    assert f.ci_kind == "residual" and f.ci_high - f.ci_low == pytest.approx(0.0, abs=1e-12)
    assert fits.loglog_slope(n, y) == pytest.approx(-1.75, abs=1e-13)


def test_ols_matches_scipy_linregress_and_residual_t_interval():
    rng = np.random.default_rng(3)
    x = np.log(np.geomspace(8, 1024, 9))
    y = -1.3 * x + 0.4 + 0.2 * rng.normal(size=x.size)
    ref = stats.linregress(x, y)
    slope, intercept, r2 = fits.ols(x, y)
    assert slope == pytest.approx(ref.slope, rel=1e-13)
    assert intercept == pytest.approx(ref.intercept, rel=1e-12)
    assert r2 == pytest.approx(ref.rvalue ** 2, rel=1e-12)
    s, lo, hi = fits.residual_interval(x, y, level=0.9)
    half = stats.t.ppf(0.95, x.size - 2) * ref.stderr
    assert (lo, hi) == pytest.approx((ref.slope - half, ref.slope + half), rel=1e-12)


def test_mean_interval_matches_scipy_t_interval():
    v = [0.3, -0.1, 0.25, 0.05, 0.4]
    m, lo, hi = fits.mean_interval(v, 0.95)
    ref = stats.t.interval(0.95, len(v) - 1, loc=np.mean(v), scale=stats.sem(v))
    assert m == pytest.approx(np.mean(v)) and (lo, hi) == pytest.approx(ref, rel=1e-12)
    assert math.isnan(fits.mean_interval([1.0])[1]) and math.isnan(fits.mean_interval([])[0])


def test_seed_bootstrap_equals_brute_force_refits():
    """Each replicate is the least-squares slope of the drawn seeds' points (brute force)."""
    rng = np.random.default_rng(0)
    widths = np.log([16.0, 32.0, 64.0, 128.0])
    seeds = np.repeat(np.arange(5), 4)
    x = np.tile(widths, 5)
    y = -1.2 * x + 0.3 * rng.normal(size=x.size)
    boots = fits.seed_bootstrap(x, y, seeds, 50, np.random.default_rng(7))
    counts = np.random.default_rng(7).multinomial(5, np.full(5, 0.2), size=50)
    for b, c in zip(boots, counts, strict=True):
        idx = np.concatenate([np.flatnonzero(seeds == s) for s in range(5) for _ in range(c[s])])
        assert b == pytest.approx(np.polyfit(x[idx], y[idx], 1)[0], rel=1e-10)


def test_bootstrap_t_interval_formula():
    boots = np.array([-1.0, -1.2, -0.9, -1.1, np.nan])
    lo, hi = fits.bootstrap_interval(-1.05, boots, n_seeds=4, level=0.95)
    half = stats.t.ppf(0.975, 3) * math.sqrt(4 / 3) * np.std(boots[:4], ddof=1)
    assert (lo, hi) == pytest.approx((-1.05 - half, -1.05 + half), rel=1e-14)
    lo, hi = fits.bootstrap_interval(-1.05, boots, 4, 0.5, method="percentile")
    assert (lo, hi) == pytest.approx(tuple(np.quantile(boots[:4], [0.25, 0.75])))


def test_fit_loglog_seed_interval_and_filtering():
    n = np.array([16.0, 32.0, 64.0] * 3 + [0.0])
    seeds = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    y = np.where(n > 0, 1 / np.maximum(n, 1), 1.0) * np.exp(np.array([0.1, -0.1, 0.0, 0.05, 0.0, -0.05, 0.0, 0.1, 0.0, 0.0]))
    f = fits.fit_loglog(n, y, seeds, n_boot=200)
    assert f.ci_kind == "seeds" and f.n_points == 9 and f.n_seeds == 3 and f.n_x == 3
    assert f.ci_low < f.slope < f.ci_high
    one = fits.fit_loglog(n[:3], y[:3], n_boot=200)
    assert one.ci_kind == "" and math.isnan(one.ci_low)


@pytest.mark.parametrize("call, match", [
    (lambda: fits.ols([1, 2], [1]), "`x` and `y` must have the same length"),
    (lambda: fits.ols([[1, 2]], [[1, 2]]), "`x` must be one-dimensional"),
    (lambda: fits.mean_interval([1.0, 2.0], 1.5), "`level` must be a number in"),
    (lambda: fits.fit_loglog([1, 2], [1, 2], n_boot=1), "`n_boot` must be an integer >= 2"),
    (lambda: fits.fit_loglog([1, 2], [1, 2], method="bca"), "`method` must be 't' or"),
    (lambda: fits.fit_loglog([1, 2], [1, 2], seeds=[0]), "`seeds` must give one seed per"),
])
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("value, ci, bound, scale, word", [
    (-0.39, (-4.35, 3.56), -1.0, 1.0, "inconclusive"),   # straddles, 7.9 wide > 1
    (-1.0, (-1.2, -0.8), -1.0, 1.0, "consistent"),        # straddles, 0.4 wide
    (-2.0, (-2.5, -1.5), -1.0, 1.0, "consistent"),        # whole CI below the bound
    (0.5, (0.2, 0.8), -1.0, 1.0, "not consistent"),       # whole CI above
    (0.0, (math.nan, math.nan), -1.0, 1.0, "not assessed"),
])
def test_decide(value, ci, bound, scale, word):
    d = fits.decide(value, ci, bound=bound, scale=scale)
    assert d.word == word
    assert d.ok is {"consistent": True, "not consistent": False}.get(word)


def test_decide_strict_zero_bound_is_inconclusive_when_straddling():
    # "ratio -> 0" from n^+0.01 [-0.14, +0.05]: the interval holds 0, nothing is shown.
    d = fits.decide(0.01, (-0.14, 0.05), bound=0.0, scale=0.0, strict=True)
    assert d.word == "inconclusive" and "[-0.14, +0.05]" in d.text and "need more seeds" in d.text
    assert fits.decide(-0.3, (-0.5, -0.1), bound=0.0, scale=0.0, strict=True).word == "consistent"
    assert fits.decide(0.3, (0.0, 0.5), bound=0.0, scale=0.0, strict=True).word == \
        "not consistent"
    # The loose end of an uncertain bound: beyond the strict bound but within the loose one.
    assert fits.decide(-0.9, (-0.95, -0.85), bound=-1.0, scale=1.0, loose_bound=-0.8).word == \
        "consistent"


def test_fit_power_law_numbers_are_those_before_the_shared_fit():
    """The A.2 slopes and CIs of a fixed fake sweep, to the bit, as computed before
    weakcorr.fits (analysis._ols / _bootstrap_slopes, commit 5ff18b4)."""
    from weakcorr import analysis, config

    from ..sweep._fake import fake_record

    cfg = config.load({"name": "fake", "model": {"widths": [16, 32, 64, 128]},
                       "data": {"name": "teacher", "n_train": 64, "n_test": 32},
                       "training": {"steps": 20, "batch_size": 16, "lr0": 0.1,
                                    "alphas": [0, -0.5, -1]},
                       "seeds": 3, "logging": {"every": 5}})
    recs = [{**fake_record(c), "run_id": str(i), "config": c}
            for i, c in enumerate(config.expand(cfg))]
    f = analysis.fit_power_law(analysis.table_from_records(recs), n_boot=500)
    got = [tuple(float(r[c]) for c in ("slope", "ci_low", "ci_high")) for _, r in f.iterrows()]
    assert got == [(-1.0087211019504008, -1.2044682540898997, -0.812973949810902),
                   (-1.4450759958472157, -1.557169049071088, -1.3329829426233433),
                   (-2.5808595019275993, -2.788811732272556, -2.3729072715826427)]
